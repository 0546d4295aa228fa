"""Shared budgets: requests per minute per source, bytes per second overall, retry waits.

A source's requests go through a `Pacer`: `RateLimiter` counts them in memory (one process:
SQLite, or no budget configured); `SharedRateLimiter` takes permits from the budget that
every replica on one PostgreSQL database shares (`agent.state.budget`). `request_limiter`
chooses by the state database.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.state.budget import Budget, BudgetShape, SharedBudget
from agent.state.replicas import shared
from agent.state.store import Store
from agent.transfer.retry import Decision

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
MAX_BATCH = 32  # permits one replica asks for at once
BURST_PARTS = 6  # the budget holds over every sixth of its window too


class Pacer(Protocol):
    """A source's request budget, as the API client and the downloader use it."""

    @property
    def waited(self) -> float:
        """Total seconds requests spent waiting for the budget (for metrics)."""
        ...

    async def acquire(self) -> None:
        """Wait until one more request fits the budget."""
        ...

    async def pause(self, seconds: float) -> None:
        """Hold every request of this source for `seconds` (after a 429)."""
        ...


def request_limiter(
    per_minute: float | None, store: Store, source: str, *, window: float = 60.0
) -> Pacer:
    """The budget shared through the state database when several replicas can share it
    (PostgreSQL) and one is configured; else one in memory."""
    if per_minute is None or not shared(store.db):
        return RateLimiter(per_minute, window=window)
    shape = shared_shape(per_minute, window)
    return SharedRateLimiter(SharedBudget(store.db, source, shape), shape)


def shared_shape(per_minute: float, window: float = 60.0) -> BudgetShape:
    """How a shared budget counts `per_minute` requests so that no window ever holds more,
    over the whole window and over every sixth of it (as `RateLimiter` does).

    Permits are sent within `hold` of being asked for and grant times are rounded up to
    `resolution`, so the requests of a window lie within a span of grants `hold +
    resolution` longer than the window plus `RateLimiter`'s margin for requests in flight.
    """
    capacity = _capacity(per_minute, window)
    hold, resolution = min(0.5, window / 40), min(0.25, window / 240)
    short = window / BURST_PARTS
    return BudgetShape(
        capacity=capacity,
        span=window + _margin(window) + hold + resolution,
        burst=_burst(capacity),
        burst_span=short + _margin(short) + hold + resolution,
        resolution=resolution,
        hold=hold,
        batch=max(1, min(MAX_BATCH, capacity // 8)),
    )


def _capacity(per_minute: float, window: float) -> int:
    return max(1, int(per_minute * window / 60.0))


def _burst(capacity: int) -> int:
    """The requests allowed in a sixth of the window: a sixth of them, rounded up."""
    return -(-capacity // BURST_PARTS)


def _margin(window: float) -> float:
    return min(0.5, window / 10)


class RateLimiter:
    """At most `per_minute` requests in any sliding window of `window` seconds, spread out.

    One limiter is shared by every task of a source (token, listing and download calls), so
    the budget holds whatever the concurrency. A 429 pauses the whole source (`pause`).

    The budget is also held over every sixth of the window (20 requests in any 10 seconds
    for 120 a minute): APIs state their limits over short windows too (Standard Metrics
    documents "30 requests in 10 seconds per bearer token" beside 120 a minute), and a
    burst of a minute's budget in one second is what such a limit refuses. `margin` widens
    each window a little so that requests that travel at different speeds still never land
    closer together at the server than the budget allows; by default it is half a second,
    or a tenth of the window for short windows (tests).
    """

    def __init__(
        self,
        per_minute: float | None,
        *,
        window: float = 60.0,
        margin: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.windows: tuple[_Window, ...] = ()
        if per_minute is not None:
            capacity = _capacity(per_minute, window)
            self.windows = (
                _Window.of(window, capacity, margin),
                _Window.of(window / BURST_PARTS, _burst(capacity), margin),
            )
        self.clock = clock
        self.sleep = sleep
        self.paused_until = 0.0
        self.waited = 0.0  # total seconds spent waiting, for metrics
        self._lock = asyncio.Lock()

    def delay(self, now: float) -> float:
        """Seconds until one more request fits (forgetting requests that left the windows)."""
        return max(self.paused_until - now, 0.0, *(w.delay(now) for w in self.windows))

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                wait = self.delay(self.clock())
                if wait <= 0:
                    break
                self.waited += wait
                await self.sleep(wait)
            sent = self.clock()
            for window in self.windows:
                window.sent.append(sent)

    async def pause(self, seconds: float) -> None:
        """Hold every request of this source for `seconds` (after a 429)."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)


class SharedRateLimiter:
    """A source's budget shared by every replica: permits from a `Budget`, a few at a time.

    Requests waiting together ask for permits together (up to `shape.batch`), so a busy
    replica spends one statement on several requests. A permit is used within `shape.hold`
    of the moment it was asked for, or thrown away: that bound is what lets the budget count
    grants instead of requests. A 429 pauses this replica at once and every other replica
    through the budget.
    """

    def __init__(
        self,
        budget: Budget,
        shape: BudgetShape,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.budget = budget
        self.shape = shape
        self.clock = clock
        self.sleep = sleep
        self.waited = 0.0
        self.paused_until = 0.0
        self._permits: deque[float] = deque()  # when each held permit expires
        self._waiting = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        self._waiting += 1
        try:
            if not self._permits:
                await asyncio.sleep(0)  # requests woken together ask for their permits together
            async with self._lock:
                await self._take()
        finally:
            self._waiting -= 1

    async def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)
        self._permits.clear()
        await self.budget.pause(seconds)

    async def _take(self) -> None:
        while True:
            asked = self.clock()
            wait = self.paused_until - asked
            if wait <= 0:
                while self._permits and self._permits[0] <= asked:
                    self._permits.popleft()
                if self._permits:
                    self._permits.popleft()
                    return
                grant = await self.budget.grant(min(self._waiting, self.shape.batch))
                self._permits.extend([asked + self.shape.hold] * grant.permits)
                if grant.permits:
                    continue
                wait = grant.retry_in
            self.waited += wait
            await self.sleep(wait)


@dataclass
class _Window:
    """The send times of the requests still inside one sliding window."""

    span: float  # the window's length, margin included
    capacity: int
    sent: deque[float] = field(default_factory=deque)

    @classmethod
    def of(cls, window: float, capacity: int, margin: float | None) -> _Window:
        return cls(window + (_margin(window) if margin is None else margin), capacity)

    def delay(self, now: float) -> float:
        while self.sent and self.sent[0] + self.span <= now:
            self.sent.popleft()
        if len(self.sent) < self.capacity:
            return 0.0
        return self.sent[0] + self.span - now


class BandwidthLimiter:
    """A token bucket of bytes per second shared by every transfer; None means unlimited."""

    def __init__(
        self,
        bytes_per_second: int | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = bytes_per_second
        self.clock = clock
        self.sleep = sleep
        self.allowance = float(bytes_per_second or 0)
        self.stamp = clock()
        self._lock = asyncio.Lock()

    async def consume(self, size: int) -> None:
        if not self.rate:
            return
        async with self._lock:
            now = self.clock()
            self.allowance = min(float(self.rate), self.allowance + (now - self.stamp) * self.rate)
            self.stamp = now
            self.allowance -= size
            if self.allowance < 0:
                await self.sleep(-self.allowance / self.rate)


async def wait_out(decision: Decision, limiter: Pacer, sleep: Sleep) -> None:
    """Wait before a retry; after a 429 first pause the source's whole request budget."""
    if decision.throttled:
        await limiter.pause(decision.delay)
    await sleep(decision.delay)
