"""End to end through the CLI: Standard Metrics as strict as its documentation allows, and rich.

The minimal sandbox (its defaults) enforces all three documented rate limits at once (120
requests a minute, which also keeps under 500, and 30 requests in 10 seconds per bearer
token), sends 429 without `Retry-After`, and leaves empty fields out instead of null. The
rich one (`RICH`) does not throttle, says `Retry-After` and writes nulls.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsKnobs
from tests.e2e.test_standard_metrics_cli import mirror_digests, open_world, sync

pytestmark = pytest.mark.e2e

MINIMAL: StandardMetricsKnobs = {}
MODES = {"minimal": MINIMAL, "rich": RICH}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_both_readings_mirror_every_document_byte_for_byte(tmp_path: Path, mode: str) -> None:
    """30 documents and their listing and token calls: the same mirror whatever the limits."""
    async for world in open_world(tmp_path, MODES[mode]):
        result = await sync(world)
        assert result.code == 0, result.stderr
        expected = sorted(
            hashlib.sha256(world.api.content(i)).hexdigest() for i in world.api.document_ids()
        )
        assert sorted(mirror_digests(world.mirror).values()) == expected
        assert world.storage.authorization_seen == []


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_a_token_the_api_stops_honouring_is_renewed_whatever_the_refusal_status(
    tmp_path: Path, mode: str
) -> None:
    """A stored token refused with 403 (minimal) or 401 (rich) is renewed: exit 0, not 77."""
    async for world in open_world(tmp_path, MODES[mode]):
        assert (await sync(world)).code == 0
        world.api.expire_all_tokens()  # the server forgets it long before its expires_in
        late = world.api.add_document("late.pdf", b"%PDF-1.4 late\n")
        result = await sync(world)
        assert result.code == 0, result.stderr
        assert hashlib.sha256(world.api.content(late)).hexdigest() in set(
            mirror_digests(world.mirror).values()
        )
        assert world.api.tokens_issued == 2


async def test_a_forbidden_document_fails_alone_and_every_other_one_is_mirrored(
    tmp_path: Path,
) -> None:
    """A download refused with 403 by a good token fails that document, not the credentials."""
    async for world in open_world(tmp_path, MINIMAL):
        forbidden = world.api.document_ids()[0]
        world.api.forbid_document(forbidden)
        result = await sync(world)
        assert result.code == 1, result.stderr
        assert "authentication failed" not in result.stderr
        expected = sorted(
            hashlib.sha256(world.api.content(i)).hexdigest()
            for i in world.api.document_ids()
            if i != forbidden
        )
        assert sorted(mirror_digests(world.mirror).values()) == expected
