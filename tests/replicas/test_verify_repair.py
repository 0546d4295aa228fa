"""`verify --repair` on a PostgreSQL state shared by replicas: refused while a replica runs
(through the real CLI), holding the pass leases of what it repairs while it works, and no
replica that starts meanwhile works the sources it repairs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.engine.verify import repairing
from agent.models import RemoteDocument
from agent.state.replica import ReplicaId
from agent.state.store import Store
from tests.e2e.cli import CliResult, run_cli
from tests.state.conftest import ManualClock
from tests.state.kit import LEASE, claimed
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


async def test_no_replica_works_a_source_under_repair_meanwhile(
    pg_migrated_url: str, tmp_path: Path
) -> None:
    """A replica that starts while `verify --repair` holds a source's pass lease claims none
    of its queued jobs (in a batch or on demand), finds none outstanding and adopts none of
    its verified files at start-up: the repair's view of that source's rows stays true.
    Other sources are worked meanwhile, and the repaired one once the repair lets go."""
    clock = ManualClock()
    repaired, other = RemoteDocument(remote_id="a", version="1", name="a.pdf"), "other"
    async with Store.open(pg_migrated_url, tmp_path / "state", clock=clock) as store:
        gone = await claimed(store, SOURCE, repaired, f"{SOURCE}/a.pdf", owner="stopped")
        await store.jobs.mark_verified([(gone.lease, 1, "sha256:" + "0" * 64, "a.part")])
        clock.now += 2 * LEASE  # the replica that verified it stopped: its lease ran out
        await store.jobs.enqueue(other, [(repaired, f"{other}/a.pdf")])
        async with repairing(store, [SOURCE], "verify-host"):
            assert await store.jobs.verified() == []
            batch = await store.jobs.claim("replica-b", [SOURCE, other], 10, LEASE)
            assert [c.spec.source for c in batch] == [other]
            on_demand = await store.jobs.claim_document(
                "replica-b", SOURCE, repaired, f"{SOURCE}/a.pdf", LEASE
            )
            assert on_demand is None
            assert await store.leases.repairing(SOURCE)  # what `get` tells its user
            assert not await store.jobs.outstanding(SOURCE, "replica-b")
        assert not await store.leases.repairing(SOURCE)
        assert [job.source for job, *_ in await store.jobs.verified()] == [SOURCE]
        assert await store.jobs.outstanding(SOURCE, "replica-b")
        (after,) = await store.jobs.claim("replica-b", [SOURCE], 10, LEASE)
        assert after.lease.job_id == gone.lease.job_id
