"""The request budget every replica shares: never more requests in a window than configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.http import ApiClient
from agent.state.budget import BudgetShape, MemoryBudget, SharedBudget
from agent.state.store import Store
from agent.transfer.pacing import RateLimiter, SharedRateLimiter, request_limiter, shared_shape

WINDOW = 1.0  # seconds: the per-minute budget scaled down so the tests take seconds
PER_WINDOW = 8
REPLICAS = 3
REQUESTS_EACH = 12


@dataclass
class Clock:
    """A monotonic clock moved by the injected sleep."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def shape(capacity: int, burst: int | None = None, span: float = 60.0) -> BudgetShape:
    """A budget of `capacity` in `span` seconds (and `burst` in a sixth of it)."""
    return BudgetShape(capacity, span, burst or capacity, span / 6, 0.25, 1.0, 16)


def limited(counted: BudgetShape) -> tuple[Clock, MemoryBudget, SharedRateLimiter]:
    """A replica's limiter over an in-memory budget, on a clock its sleeps move."""
    clock = Clock()
    budget = MemoryBudget(counted, clock)
    return clock, budget, SharedRateLimiter(budget, counted, clock=clock, sleep=clock.sleep)


def test_the_shape_spans_each_window_plus_what_a_permit_may_travel() -> None:
    counted = shared_shape(120.0)
    assert (counted.capacity, counted.burst, counted.batch) == (120, 20, 15)
    assert (counted.hold, counted.resolution) == (0.5, 0.25)
    assert counted.span == 60.0 + 0.5 + counted.hold + counted.resolution
    assert counted.burst_span == 10.0 + 0.5 + counted.hold + counted.resolution


async def test_waiting_requests_ask_for_their_permits_together() -> None:
    """Eight requests waiting at once cost one grant, not eight."""
    _clock, budget, limiter = limited(shape(100))
    await asyncio.gather(*(limiter.acquire() for _ in range(8)))
    assert budget.statements == 1
    assert sum(n for _, n in budget.grants) == 8


async def test_a_permit_not_used_within_its_hold_is_thrown_away() -> None:
    clock, budget, limiter = limited(shape(100))
    limiter._permits.append(clock.now + 1.0)  # a permit left over from a cancelled request
    clock.now += 1.5
    await limiter.acquire()
    assert budget.statements == 1  # the stale permit was not used


async def test_an_exhausted_budget_waits_until_the_oldest_grant_leaves_the_span() -> None:
    clock, _budget, limiter = limited(shape(2, span=10.0))
    for _ in range(3):
        await limiter.acquire()
    assert clock.now == pytest.approx(110.0)
    assert limiter.waited == pytest.approx(10.0)


async def test_a_burst_waits_for_the_sixth_of_the_window_it_fills() -> None:
    """120 a minute is at most 20 in any tenth of it: the 21st waits for the first to leave."""
    clock, _budget, limiter = limited(shape(120, burst=20))
    for _ in range(21):
        await limiter.acquire()
    assert clock.now == pytest.approx(110.0)


async def test_a_429_pauses_this_replica_and_every_other_through_the_budget() -> None:
    clock = Clock()
    budget = MemoryBudget(shape(100), clock)
    mine = SharedRateLimiter(budget, budget.shape, clock=clock, sleep=clock.sleep)
    other = SharedRateLimiter(budget, budget.shape, clock=clock, sleep=clock.sleep)
    await mine.acquire()
    await mine.pause(30.0)
    await other.acquire()
    assert clock.now >= 130.0


async def test_sqlite_keeps_the_budget_in_memory(tmp_path: Path) -> None:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", tmp_path) as store:
        assert isinstance(request_limiter(60.0, store, "sm"), RateLimiter)


# ---------------------------------------------------------------- on PostgreSQL


@pytest.fixture
async def stores(pg_migrated_url: str, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Three stores on one database, as three replicas have (each its own pool)."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(Store.open(pg_migrated_url, tmp_path / f"r{i}"))
            for i in range(REPLICAS)
        ]


async def test_postgresql_shares_the_budget_between_replicas(stores: list[Store]) -> None:
    assert isinstance(request_limiter(60.0, stores[0], "sm"), SharedRateLimiter)
    assert isinstance(request_limiter(None, stores[0], "sm"), RateLimiter)


async def hammer(stores: list[Store], counted: BudgetShape) -> int:
    """Two tasks per replica ask for 3 permits 20 times each, all at once: the permits got."""

    async def ask(store: Store) -> int:
        budget = SharedBudget(store.db, "sm", counted)
        return sum([(await budget.grant(3)).permits for _ in range(20)])

    return sum(await asyncio.gather(*(ask(s) for s in stores for _ in range(2))))


async def test_concurrent_grants_never_hand_out_more_than_the_capacity(
    stores: list[Store],
) -> None:
    """Replicas asking at once, many times, within one span, get exactly the capacity."""
    counted = shape(30, span=30.0)
    started = time.monotonic()
    assert await hammer(stores, counted) == counted.capacity
    refused = await SharedBudget(stores[0].db, "sm", counted).grant(1)
    assert refused.permits == 0
    # the oldest grant is at most as old as the hammering: its span ends within that much
    elapsed = time.monotonic() - started
    assert counted.span - elapsed - 0.5 < refused.retry_in <= counted.span + 0.5


async def test_concurrent_grants_never_hand_out_more_than_the_burst(
    stores: list[Store],
) -> None:
    counted = shape(60, burst=10, span=60.0)
    started = time.monotonic()
    assert await hammer(stores, counted) == 10
    refused = await SharedBudget(stores[0].db, "sm", counted).grant(1)
    assert refused.permits == 0
    elapsed = time.monotonic() - started
    assert counted.burst_span - elapsed - 0.5 < refused.retry_in <= counted.burst_span + 0.5


async def test_a_pause_on_one_replica_holds_the_grants_of_another(stores: list[Store]) -> None:
    counted = shared_shape(600.0, window=60.0)
    await SharedBudget(stores[0].db, "sm", counted).pause(20.0)
    refused = await SharedBudget(stores[1].db, "sm", counted).grant(1)
    assert refused.permits == 0
    assert 18.0 < refused.retry_in <= 20.5  # half a second of clock skew, as above
    assert (await SharedBudget(stores[1].db, "other", counted).grant(1)).permits == 1


async def test_three_replicas_never_exceed_the_budget_in_any_window(
    stores: list[Store],
) -> None:
    """Three replicas' clients, eight requests in flight each: the API never sees more than
    the budget in any window, and never throttles."""
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **{**RICH, "requests_per_minute": PER_WINDOW})
    api.rate_window = WINDOW
    per_minute = PER_WINDOW * 60 / WINDOW
    async with storage.running(), api.running() as base, aiohttp.ClientSession() as session:
        clients = [
            ApiClient(session, request_limiter(per_minute, s, "sm", window=WINDOW), source="sm")
            for s in stores
        ]

        async def requests(client: ApiClient, count: int) -> None:
            for _ in range(count):
                await client.request("GET", f"{base}/v1/documents/")

        started = time.monotonic()
        await asyncio.gather(*(requests(c, REQUESTS_EACH // 4) for c in clients for _ in range(4)))
        elapsed = time.monotonic() - started
    total = REPLICAS * REQUESTS_EACH
    assert len(api.request_times) == total
    assert api.throttled == 0
    assert api.max_requests_in_window(WINDOW) <= PER_WINDOW
    # the budget, not luck, kept the pace: the requests needed several windows
    assert elapsed >= ((total - 1) // PER_WINDOW) * WINDOW
