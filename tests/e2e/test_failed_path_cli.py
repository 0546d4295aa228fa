"""A failed download never moves the document's recorded path, through the real CLI against
the Standard Metrics sandbox: the file of its previous version stays known where it is."""

from __future__ import annotations

import json

import pytest

from tests.e2e.cli import CliResult, run_cli
from tests.engine.conftest import world
from tests.transfer.transfer_kit import World, payload

pytestmark = pytest.mark.e2e
__all__ = ["world"]  # the engine tests' fixture: the Standard Metrics sandbox pair


def files(world: World) -> dict[str, bytes]:
    return {
        str(p.relative_to(world.mirror)): p.read_bytes()
        for p in world.mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts
    }


async def cli(world: World, *args: str) -> CliResult:
    result = await run_cli("--config", str(world.write_config()), *args)
    assert "Traceback" not in result.stderr
    return result


async def test_a_failed_download_of_a_renamed_version_leaves_the_old_file_recorded(
    world: World,
) -> None:
    """A document renamed with a new version whose download fails keeps its recorded path
    at its mirrored file (verify finds nothing unknown or missing); once fetched, the new
    version replaces it at the new path: one file, never two."""
    doc_id = world.add("plan.pdf", payload(3000, seed=1))
    assert (await cli(world, "sync")).code == 0
    (old_path,) = files(world)
    world.sandbox.update_document(doc_id, payload(3100, seed=2))
    world.sandbox.rename_document(doc_id, "plan-v2.pdf")
    world.storage.plan.add("/b/", 404)  # the new version's download fails for good

    failed = await cli(world, "sync")
    assert failed.code == 1, failed.stdout
    assert files(world) == {old_path: payload(3000, seed=1)}
    assert await world.mirrored_path(doc_id) == world.mirror / old_path
    checked = await cli(world, "verify", "--json")
    (report,) = json.loads(checked.stdout)["sources"]
    assert report["unknown"] == []
    assert report["missing"] == []

    got = await cli(world, "get", "sm", doc_id)
    assert got.code == 0, got.stderr
    (new_path,) = files(world)
    assert new_path.endswith("plan-v2.pdf")
    assert files(world)[new_path] == payload(3100, seed=2)
    assert (await cli(world, "verify")).code == 0
