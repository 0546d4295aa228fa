"""Shared budgets: requests per minute per source, bytes per second overall, retry waits."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from agent.transfer.retry import Decision

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """At most `per_minute` requests in any sliding window of `window` seconds.

    One limiter is shared by every task of a source (token, listing and download calls), so
    the budget holds whatever the concurrency. A 429 pauses the whole source (`pause`).
    `margin` widens the window a little so that requests that travel at different speeds
    still never land closer together at the server than the budget allows; by default it is
    half a second, or a tenth of the window for windows under five seconds (tests).
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
        self.capacity = None if per_minute is None else max(1, int(per_minute * window / 60.0))
        self.window = window + (min(0.5, window / 10) if margin is None else margin)
        self.clock = clock
        self.sleep = sleep
        self.sent: deque[float] = deque()
        self.paused_until = 0.0
        self.waited = 0.0  # total seconds spent waiting, for metrics
        self._lock = asyncio.Lock()

    def delay(self, now: float) -> float:
        """Seconds until one more request fits (pure over the limiter's record)."""
        wait = max(0.0, self.paused_until - now)
        if self.capacity is not None and len(self.sent) >= self.capacity:
            wait = max(wait, self.sent[0] + self.window - now)
        return wait

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock()
                while self.sent and self.sent[0] + self.window <= now:
                    self.sent.popleft()
                wait = self.delay(now)
                if wait <= 0:
                    break
                self.waited += wait
                await self.sleep(wait)
            if self.capacity is not None:
                self.sent.append(self.clock())

    def pause(self, seconds: float) -> None:
        """Hold every request of this source for `seconds` (after a 429)."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)


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
