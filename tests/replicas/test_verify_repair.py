"""`verify --repair` on a PostgreSQL state shared by replicas, through the real CLI: refused
while a replica runs, and holding the pass leases of what it repairs while it works."""

from __future__ import annotations

import json
import time

import pytest

from agent.state.replica import ReplicaId
from agent.state.store import Store
from tests.e2e.cli import CliResult, run_cli
from tests.transfer.transfer_kit import SOURCE, World

pytestmark = pytest.mark.e2e


async def cli(world: World, *args: str) -> CliResult:
    result = await run_cli("--config", str(world.write_config()), *args)
    assert "Traceback" not in result.stderr
    return result


async def missing(world: World) -> list[str]:
    checked = await cli(world, "verify", "--json")
    (report,) = json.loads(checked.stdout)["sources"]
    return report["missing"]  # type: ignore[no-any-return]


async def test_repair_is_refused_while_a_replica_runs_and_excludes_passes_after(
    world: World, pg_migrated_url: str
) -> None:
    """With a live replica registered, `verify --repair` exits 75 naming it and changes
    nothing; with a pass lease held elsewhere it names that holder; once alone it repairs,
    and lets the pass leases it held go."""
    world.agent_options["state_url"] = pg_migrated_url
    world.add("a.pdf", b"a" * 100)
    assert (await cli(world, "sync")).code == 0
    (gone,) = list(world.mirror.rglob("a.pdf"))
    gone.unlink()
    state_dir = world.state_dir
    other = ReplicaId(host="node-b", pid=4242)
    async with Store.open(pg_migrated_url, state_dir) as store:
        await store.replicas.register(other, time.time())

    refused = await cli(world, "verify", "--repair")
    assert refused.code == 75, refused.stderr
    assert "node-b pid 4242" in refused.stderr
    assert await missing(world) == [str(gone.relative_to(world.mirror))]  # not repaired

    async with Store.open(pg_migrated_url, state_dir) as store:
        await store.replicas.leave(str(other))
        assert await store.leases.take(SOURCE, str(other), 60) is None  # it lists a pass
    listing = await cli(world, "verify", "--repair")
    assert listing.code == 75, listing.stderr
    assert f"replica {other}" in listing.stderr

    async with Store.open(pg_migrated_url, state_dir) as store:
        await store.leases.release(SOURCE, str(other))
    repaired = await cli(world, "verify", "--repair", "--json")
    assert repaired.code == 1, repaired.stderr  # it was not clean
    assert json.loads(repaired.stdout)["repairs"]["scheduled"] == [
        str(gone.relative_to(world.mirror))
    ]
    async with Store.open(pg_migrated_url, state_dir) as store:
        assert await store.leases.take(SOURCE, "someone", 60) is None  # let go
