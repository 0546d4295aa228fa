"""Pure webhook delivery decisions: what an answer means, and when to try again.

The retry schedule is an endpoint's `retry_schedule`, by default the Standard Webhooks
specification's example, each delay counted from the failure before it: immediately, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (about three days in all). Each delay is
stretched by up to 10 % of jitter so that endpoints coming back are not hit by every sender
at once. A `Retry-After` longer than the schedule's delay is honoured (up to a day). An
entry that fails every attempt is given up.

What an answer means, as the specification suggests: 2xx delivered; 410 Gone, the receiver
wants no more (the endpoint is disabled); anything else, a redirect included (never
followed), or no answer at all, a failed attempt.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

MAX_RETRY_AFTER = 86400.0
JITTER = 0.1


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    FAILED = "failed"  # try again on the schedule
    GONE = "gone"  # 410: disable the endpoint


def verdict(status: int | None) -> Verdict:
    """What an HTTP status (None: no answer) means for a delivery."""
    if status is not None and 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.GONE
    return Verdict.FAILED


def next_delay(
    schedule: Sequence[float], failed_attempts: int, retry_after: float | None, jitter: float
) -> float | None:
    """Seconds until the next attempt after `failed_attempts` failures; None: give up.

    `jitter` is a number in [0, 1) (random in use, fixed in tests).
    """
    if not 1 <= failed_attempts <= len(schedule):
        return None
    delay = schedule[failed_attempts - 1] * (1 + JITTER * jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay
