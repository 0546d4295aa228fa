"""Replicas' engines share hints and pass requests: jobs one replica queues wake another's
workers at once, and a listing answers the passes asked (`POST /sync`) before it began,
wherever the pass lease landed."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from agent.agent import Agent
from agent.state.wakeup import PgWakeup
from tests.engine.test_pipeline import GHOST, ok, running
from tests.transfer.transfer_kit import SOURCE, World, payload


async def test_jobs_queued_by_one_replica_wake_the_workers_of_another(
    world: World, pg_migrated_url: str
) -> None:
    """The lister's NOTIFY reaches the other replica's engine, which claims at once
    instead of at its next poll."""
    world.agent_options["state_url"] = pg_migrated_url
    world.add("a.pdf", payload(300, seed=1))
    async with AsyncExitStack() as stack:
        lister, other = [
            await stack.enter_async_context(Agent.open(world.config(), sleep=world.sleeps))
            for _ in range(2)
        ]
        listening = other.wakeup
        assert isinstance(listening, PgWakeup)
        await asyncio.wait_for(listening.listening.wait(), 10)
        woken = asyncio.Event()
        other.engine.workers.wake = woken.set  # type: ignore[method-assign]

        ok(await lister.run_pass(SOURCE))

        await asyncio.wait_for(woken.wait(), 10)


async def test_a_listing_answers_the_passes_asked_before_it(world: World, state_url: str) -> None:
    world.agent_options["state_url"] = state_url
    world.add("a.pdf", payload(300, seed=2))
    async with running(world) as agent:
        await agent.store.requests.ask([SOURCE])
        ok(await agent.run_pass(SOURCE))
        assert await agent.store.requests.pending() == {}


async def test_a_pass_listed_elsewhere_answers_only_what_that_listing_covers(
    world: World, state_url: str
) -> None:
    """Another replica's listing answers the requests older than it; a newer request waits
    for a listing that starts after it."""
    world.agent_options["state_url"] = state_url
    async with running(world) as agent:
        requests = agent.store.requests
        await requests.ask([SOURCE])
        await asyncio.sleep(0.01)
        assert await agent.store.leases.take(SOURCE, GHOST, 60) is None
        ok(await agent.run_pass(SOURCE))
        assert await requests.pending() == {}

        await asyncio.sleep(0.01)
        await requests.ask([SOURCE])
        ok(await agent.run_pass(SOURCE))
        assert set(await requests.pending()) == {SOURCE}
