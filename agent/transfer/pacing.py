"""Shared budgets: requests per minute per source, bytes per second overall, retry waits."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.transfer.retry import Decision

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


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
            capacity = max(1, int(per_minute * window / 60.0))
            self.windows = (
                _Window.of(window, capacity, margin),
                _Window.of(window / 6, -(-capacity // 6), margin),
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

    def pause(self, seconds: float) -> None:
        """Hold every request of this source for `seconds` (after a 429)."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)


@dataclass
class _Window:
    """The send times of the requests still inside one sliding window."""

    span: float  # the window's length, margin included
    capacity: int
    sent: deque[float] = field(default_factory=deque)

    @classmethod
    def of(cls, window: float, capacity: int, margin: float | None) -> _Window:
        return cls(window + (min(0.5, window / 10) if margin is None else margin), capacity)

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


async def wait_out(decision: Decision, limiter: RateLimiter, sleep: Sleep) -> None:
    """Wait before a retry; after a 429 first pause the source's whole request budget."""
    if decision.throttled:
        limiter.pause(decision.delay)
    await sleep(decision.delay)
