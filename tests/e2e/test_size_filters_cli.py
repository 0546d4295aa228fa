"""Size filters on a source whose listing gives no sizes (Standard Metrics), through the real
CLI: the size the download announces, or the body once received, decides; the job ends
skipped by the rule, and later passes do not ask again."""

from __future__ import annotations

import json

import pytest

from tests.e2e.cli import CliResult, run_cli
from tests.engine.conftest import world
from tests.transfer.transfer_kit import World

pytestmark = pytest.mark.e2e
__all__ = ["world"]  # the engine tests' fixture: the Standard Metrics sandbox pair

SIZES = {"tiny.pdf": 20, "fits.pdf": 300, "huge.pdf": 5000}  # min 50 bytes, max 1000


@pytest.fixture
def sized(world: World) -> None:
    """The source of the Standard Metrics sandbox pair gets `min_size` and `max_size`."""
    world.source_options.update(min_size="50", max_size="1000")


def mirrored(world: World) -> set[str]:
    files = world.mirror.rglob("*") if world.mirror.exists() else ()
    return {p.name for p in files if p.is_file() and ".sync-agent" not in p.parts}


def summary(downloaded: int, skipped: int) -> str:
    """What `sync` prints for the source: nothing failed."""
    line = f"sm: 3 listed, {downloaded} downloaded, 0 moved, {skipped} skipped, 0 removed"
    return line + ", 0 failed\n"


async def cli(world: World, *args: str) -> CliResult:
    result = await run_cli("--config", str(world.write_config()), *args)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.mark.usefixtures("sized")
async def test_sizes_unknown_to_the_listing_are_checked_on_download_and_remembered(
    world: World,
) -> None:
    """A dry run says which sizes are unknown; the pass downloads only what fits, records
    the others skipped by their rule (not failed), leaves nothing in staging, and the next
    pass asks the storage host for none of them again."""
    for name, size in SIZES.items():
        world.add(name, bytes(size))
    preview = await cli(world, "sync", "--dry-run")
    assert preview.stdout.count("size unknown") == 3, preview.stdout
    (planned,) = json.loads((await cli(world, "sync", "--dry-run", "--json")).stdout)["sources"]
    assert all("size unknown" in a["why"] for a in planned["actions"])

    first = await cli(world, "sync")
    assert first.stdout == summary(downloaded=1, skipped=2)
    assert mirrored(world) == {"fits.pdf"}
    assert list(world.staging.iterdir()) == []
    (status,) = json.loads((await cli(world, "status", "--json")).stdout)["sources"]
    reasons = {d["name"]: d["reason"] for d in status["skipped_documents"]}
    assert reasons == {
        "tiny.pdf": "filter: min_size 50 bytes",
        "huge.pdf": "filter: max_size 1000 bytes",
    }

    world.storage.log.clear()
    second = await cli(world, "sync")
    assert second.stdout == summary(downloaded=0, skipped=0)
    assert world.storage.log.records == []
    again = await cli(world, "sync", "--dry-run")
    assert "size unknown" not in again.stdout


@pytest.mark.usefixtures("sized")
async def test_a_body_that_announces_no_size_is_measured_before_it_is_placed(
    world: World,
) -> None:
    """Chunked bodies (no Content-Length): too large or too small, they are dropped after
    the download instead of placed, and recorded skipped by the rule; `get` of one is
    refused naming the rule, with nothing placed."""
    world.storage.faults.no_length = True
    ids = {name: world.add(name, bytes(size)) for name, size in SIZES.items()}
    result = await cli(world, "sync")
    assert result.stdout == summary(downloaded=1, skipped=2)
    assert mirrored(world) == {"fits.pdf"}
    assert list(world.staging.iterdir()) == []
    config = str(world.write_config())
    got = await run_cli("--config", config, "get", "sm", ids["huge.pdf"])
    assert got.code == 1, got.stderr
    assert "max_size 1000 bytes" in got.stderr
    assert "Traceback" not in got.stderr
    assert mirrored(world) == {"fits.pdf"}
