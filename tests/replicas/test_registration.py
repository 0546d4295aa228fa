"""Replicas register, heartbeat, leave and age out, and are listed with the leases they hold;
passes asked of any replica wait in the state."""

from __future__ import annotations

import asyncio

from agent.models import RemoteDocument
from agent.state.replica import ReplicaId
from agent.state.replicas import FORGET_AFTER, STALE_AFTER
from agent.state.store import Store
from tests.state.conftest import ManualClock
from tests.state.kit import LEASE, claimed


def replica(name: str) -> ReplicaId:
    return ReplicaId(name, f"host-{name}", 100)


async def test_a_registered_replica_is_listed_until_it_leaves(
    store: Store, clock: ManualClock
) -> None:
    async with store.replicas.registered(replica("a"), clock.now):
        clock.now += 5
        async with store.replicas.registered(replica("b"), clock.now):
            (a, b) = await store.replicas.views()
            assert (a.id, a.host, a.pid, a.started_at) == ("a", "host-a", 100, clock.now - 5)
            assert (b.id, a.stale, b.stale) == ("b", False, False)
        assert [r.id for r in await store.replicas.views()] == ["a"]
    assert await store.replicas.views() == []


async def test_a_silent_replica_turns_stale_then_is_forgotten(
    store: Store, clock: ManualClock
) -> None:
    await store.replicas.register(replica("gone"), clock.now)
    await store.replicas.register(replica("alive"), clock.now)
    clock.now += STALE_AFTER + 1
    assert await store.replicas.heartbeat("alive")
    stale = {r.id: r.stale for r in await store.replicas.views()}
    assert stale == {"gone": True, "alive": False}
    assert await store.replicas.forget_stale() == 0
    clock.now += FORGET_AFTER
    assert await store.replicas.heartbeat("alive")
    assert await store.replicas.forget_stale() == 1
    assert [r.id for r in await store.replicas.views()] == ["alive"]


async def test_a_forgotten_replica_learns_it_from_its_heartbeat(
    store: Store, clock: ManualClock
) -> None:
    """A replica that stalled past FORGET_AFTER sees its heartbeat fail and registers again."""
    me = replica("slow")
    await store.replicas.register(me, clock.now)
    await store.replicas.leave("slow")
    assert not await store.replicas.heartbeat("slow")
    await store.replicas.register(me, clock.now)
    assert [r.id for r in await store.replicas.views()] == ["slow"]


async def test_a_forgotten_replica_registers_again_at_its_next_heartbeat(
    store: Store, clock: ManualClock
) -> None:
    async with store.replicas.registered(replica("r"), clock.now, every=0.01):
        await store.replicas.leave("r")  # as another replica's forget_stale would
        for _ in range(500):
            if await store.replicas.views():
                break
            await asyncio.sleep(0.01)
        assert [r.id for r in await store.replicas.views()] == ["r"]
    assert await store.replicas.views() == []


async def test_a_replica_is_listed_with_the_passes_it_lists_and_the_jobs_it_works(
    store: Store, clock: ManualClock
) -> None:
    await store.replicas.register(replica("a"), clock.now)
    await store.replicas.register(replica("b"), clock.now)
    assert await store.leases.take("sm", "a", LEASE) is None
    for n in range(3):
        doc = RemoteDocument(remote_id=f"d{n}", version="v1", name=f"d{n}.pdf")
        await claimed(store, "sm", doc, f"sm/d{n}.pdf", owner="b")
    held = {r.id: (r.passes, r.jobs) for r in await store.replicas.views()}
    assert held == {"a": (("sm",), 0), "b": ((), 3)}
    clock.now += LEASE + 1  # leases that ran out are nobody's until taken again
    assert [(r.passes, r.jobs) for r in await store.replicas.views()] == [((), 0), ((), 0)]


def test_replica_ids_differ_between_processes_of_one_host_and_pid() -> None:
    """Pods reuse pids (every main process is pid 1): the id is random, not host and pid."""
    first, second = ReplicaId(), ReplicaId()
    assert str(first) != str(second)
    assert (first.host, first.pid) == (second.host, second.pid)


async def test_a_pass_request_waits_until_a_pass_that_started_after_it_ends(
    store: Store, clock: ManualClock
) -> None:
    await store.requests.ask(["sm", "hd"])
    asked = clock.now
    assert await store.requests.pending() == {"sm": asked, "hd": asked}
    await store.requests.answered("sm", asked - 1)  # a pass that began before the request
    assert set(await store.requests.pending()) == {"sm", "hd"}
    clock.now += 1
    await store.requests.answered("sm", clock.now)
    assert await store.requests.pending() == {"hd": asked}


async def test_a_newer_request_outlives_a_pass_that_answered_an_older_one(
    store: Store, clock: ManualClock
) -> None:
    await store.requests.ask(["sm"])
    started = clock.now + 1
    clock.now += 2
    await store.requests.ask(["sm"])  # asked again while the pass ran
    await store.requests.answered("sm", started)
    assert await store.requests.pending() == {"sm": clock.now}
