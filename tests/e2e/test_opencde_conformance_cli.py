"""End to end through the CLI: an OpenCDE server as minimal as the spec allows, and as rich.

The minimal sandbox (its defaults) answers the token request 201 with `expires_in` as a
string, reads only `redirect_url`, calls back with the seed's `selected_url`, redirects
downloads with 303, omits the optional `document_details` link, writes dates at +01:00
and adds properties nobody knows to every JSON object. The rich one (`RICH`) does the
friendliest of each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sandbox.opencde import RICH, OpenCdeKnobs
from tests.e2e.test_opencde_cli import mirror_files, open_world, signed_in_with

pytestmark = pytest.mark.e2e

MINIMAL: OpenCdeKnobs = {}
MODES = {"minimal": MINIMAL, "rich": RICH}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_both_readings_sign_in_select_and_mirror_every_selected_version(
    tmp_path: Path, mode: str
) -> None:
    """Login, select and sync work the same against both; the second pass downloads nothing."""
    async for world in open_world(tmp_path, MODES[mode]):
        ids = [
            world.api.add_document(f"Doc {i}", f"doc-{i}.ifc", f"IFC {i}".encode())
            for i in range(3)
        ]
        world.api.publish_version(ids[0], b"IFC 0 v2")
        await signed_in_with(world, ids)
        result = await world.cli("sync")
        assert result.code == 0, result.stderr
        assert sorted(mirror_files(world.mirror).values()) == [b"IFC 0 v2", b"IFC 1", b"IFC 2"]
        assert world.storage.authorization_seen == []
        again = await world.cli("sync")
        assert again.code == 0, again.stderr
        assert "0 downloaded" in again.stdout
