"""End to end through the CLI: Index Health as minimal as its documentation allows, and rich.

The minimal sandbox (its defaults) issues tokens that die after five calls or ten seconds,
answers every error as HTTP 200 with the status in the body, uses the token page's
`{"status", "data": {"auth_token"}}` shape and leaves out every optional field (so no
`collection_name`). The rich one (`RICH`) does the friendliest of each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sandbox.index_health import RICH, IndexHealthKnobs
from tests.e2e.test_index_health_cli import World, mirror_files, open_world, status, sync

pytestmark = pytest.mark.e2e

MINIMAL: IndexHealthKnobs = {}
MODES = {"minimal": MINIMAL, "rich": RICH, "nulls": {**RICH, "optional_fields": "null"}}


def fill(world: World, n: int) -> tuple[dict[str, bytes], str]:
    """`n` files in the world's collection and one URL-only document; their contents and id."""
    contents = {f"Note {i}.txt": f"note {i}\n".encode() * (i + 1) for i in range(n)}
    for name, data in contents.items():
        world.api.add_document(world.collection, name, data)
    link = world.api.add_document(world.collection, "Portal", None, url="https://x.test/p")
    return contents, link


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_both_readings_mirror_the_whole_collection(tmp_path: Path, mode: str) -> None:
    """Minimal, rich and null-filled answers give the same files; the URL-only one is skipped."""
    async with open_world(tmp_path, MODES[mode]) as world:
        contents, link = fill(world, n=3)
        result = await sync(world)
        assert result.code == 0, result.stderr
        files = mirror_files(world.mirror)
        assert sorted(files.values()) == sorted(contents.values())
        folder = world.collection if mode == "minimal" else "Cardiology"  # no collection_name
        assert {Path(p).parent for p in files} == {Path("ih") / folder}
        skipped = (await status(world))["skipped_documents"]
        assert [s["remote_id"] for s in skipped] == [link]


@pytest.mark.parametrize("method", ["presigned", "direct"])
async def test_tokens_dying_under_eight_downloads_never_stop_the_pass(
    tmp_path: Path, method: str
) -> None:
    """Tokens live three calls: the pass still mirrors all, exits 0, and renews in between."""
    async with open_world(tmp_path, MINIMAL, token_uses=3) as world:
        contents, _ = fill(world, n=16)
        result = await sync(world, download_method=method)
        assert result.code == 0, result.stderr
        assert sorted(mirror_files(world.mirror).values()) == sorted(contents.values())
        ledger = world.api.token_ledger
        assert ledger.refusals > 0  # tokens did die while in use
        assert ledger.refused_twice_without_renewal() == []


async def test_a_direct_download_failing_in_its_body_is_retried_and_never_mirrored(
    tmp_path: Path,
) -> None:
    """A "Failed to download document" envelope typed as the file is not taken for its bytes."""
    async with open_world(tmp_path, MINIMAL) as world:
        contents, _ = fill(world, n=3)
        failing = world.api.document_ids(world.collection)[0]
        world.api.fail_document(failing, 500, times=1)
        result = await sync(world, download_method="direct")
        assert result.code == 0, result.stderr
        assert sorted(mirror_files(world.mirror).values()) == sorted(contents.values())
        assert world.api.download_calls[failing] == 2


async def test_revoked_client_credentials_still_exit_77(tmp_path: Path) -> None:
    """A client revoked between passes is a fatal credentials error, named without a trace."""
    async with open_world(tmp_path, MINIMAL) as world:
        fill(world, n=2)
        assert (await sync(world)).code == 0
        world.api.revoke_client_credentials()
        world.api.add_document(world.collection, "late.txt", b"late")
        result = await sync(world)
        assert result.code == 77, result.stderr
        assert "client credentials" in result.stderr
        assert "Traceback" not in result.stderr
