"""Replicas register, heartbeat, leave and age out; passes asked of any replica wait in state."""

from __future__ import annotations

from agent.state.replicas import FORGET_AFTER, STALE_AFTER, ReplicaInfo, this_replica
from agent.state.store import Store
from tests.state.conftest import ManualClock


def replica(name: str, clock: ManualClock) -> ReplicaInfo:
    return ReplicaInfo(name, f"host-{name}", 100, clock.now)


async def test_a_registered_replica_is_listed_until_it_leaves(
    store: Store, clock: ManualClock
) -> None:
    async with store.replicas.registered(replica("a", clock)):
        clock.now += 5
        async with store.replicas.registered(replica("b", clock)):
            (a, b) = await store.replicas.views()
            assert (a.id, a.host, a.pid, a.started_at) == ("a", "host-a", 100, clock.now - 5)
            assert (b.id, a.stale, b.stale) == ("b", False, False)
        assert [r.id for r in await store.replicas.views()] == ["a"]
    assert await store.replicas.views() == []


async def test_a_silent_replica_turns_stale_then_is_forgotten(
    store: Store, clock: ManualClock
) -> None:
    await store.replicas.register(replica("gone", clock))
    await store.replicas.register(replica("alive", clock))
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
    me = replica("slow", clock)
    await store.replicas.register(me)
    await store.replicas.leave("slow")
    assert not await store.replicas.heartbeat("slow")
    await store.replicas.register(me)
    assert [r.id for r in await store.replicas.views()] == ["slow"]


def test_replica_ids_differ_between_processes_of_one_host_and_pid() -> None:
    """Pods reuse pids (every main process is pid 1): the id adds a random part."""
    first, second = this_replica(0.0), this_replica(0.0)
    assert first.id != second.id
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
