"""The source's request budget holds over a whole pass, whatever the download concurrency."""

from __future__ import annotations

import time

from transfer_kit import World, payload

from agent.models import PassStats
from agent.transfer.pacing import RateLimiter

WINDOW = 1.0  # seconds: the per-minute budget scaled down so the test takes seconds
PER_WINDOW = 8
DOCUMENTS = 22


async def test_no_window_ever_sees_more_requests_than_the_budget(world: World) -> None:
    world.sandbox.rate_window = WINDOW
    world.sandbox.requests_per_minute = PER_WINDOW  # the sandbox counts per `rate_window`
    world.source_options["requests_per_minute"] = PER_WINDOW * 60 / WINDOW
    world.agent_options["max_concurrent_downloads"] = 8
    for i in range(DOCUMENTS):
        world.add(f"doc-{i:02d}.pdf", payload(2000 + i, seed=i))
    started = time.monotonic()

    outcome = await world.sync(rate_window=WINDOW)

    assert isinstance(outcome, PassStats)
    assert outcome.downloaded == DOCUMENTS
    await world.assert_exact()
    requests = len(world.sandbox.request_times)
    assert requests == DOCUMENTS + 2  # token, one listing page, one call per download
    assert world.sandbox.throttled == 0
    assert world.sandbox.max_requests_in_window(WINDOW) <= PER_WINDOW
    # the limiter, not luck, kept the pace: the requests needed several windows
    assert time.monotonic() - started >= ((requests - 1) // PER_WINDOW) * WINDOW


class FakeTime:
    """A clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_minutes_budget_is_spread_over_every_sixth_of_the_minute() -> None:
    """120 a minute never means 120 in one second: at most 20 go in any 10 seconds (the
    documented 30-in-10-seconds limit holds), and the whole minute still carries 120."""
    fake = FakeTime()
    limiter = RateLimiter(120, window=60.0, margin=0.0, clock=fake.clock, sleep=fake.sleep)
    sent = []
    for _ in range(120):
        await limiter.acquire()
        sent.append(fake.now)
    most_in_ten = max(sum(1 for t in sent if start <= t < start + 10) for start in sent)
    assert most_in_ten == 20
    assert sent[-1] < 60.0  # the sixth windows do not slow the minute's budget down
