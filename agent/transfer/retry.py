"""Pure retry decisions: what to do after an answer, back-off delays, Retry-After parsing.

`decide` is the one rule for API calls and downloads alike:

    outcome     attempt < max      attempt >= max     note
    CONTENT     done               done
    RETRY       retry after delay  give up            RetryLaterError/DiskSpaceError: give up
    RETARGET    retarget + delay   give up            ask the source for a fresh target
    RENEW       renew              -                  up to `max_renewals`, then give up
    SKIP, FAIL  give up            give up

The delay is the server's Retry-After when it sent one (capped), else capped exponential
back-off with full jitter. A request renews at once the first `renew_at_once` times; after
that each renewal waits a short jittered pause first, so requests that keep losing the race
for a short-lived token spread out instead of giving up: a token that works for someone is
expiry, renewed as often as needed (`max_renewals` only stops a server that refuses one
request forever while accepting the others). A 429 is `throttled`: the caller pauses the
source's whole request budget for the delay, then waits it out like any other retry.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

from agent.errors import DiskSpaceError, RetryLaterError
from agent.transfer.contract import Outcome, Verdict

PERMANENT_RETRY_SECONDS = 6 * 3600.0  # permanent failures are looked at again after hours


class Action(StrEnum):
    DONE = "done"  # the answer is what was asked for
    RETRY = "retry"
    RETARGET = "retarget"
    RENEW = "renew"
    GIVE_UP = "give-up"  # raise the outcome's error


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0  # seconds to wait before the next attempt
    throttled: bool = False  # a 429: pause the source's whole budget for `delay`


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    max_renewals: int = 30  # renewals of one request; each needs a token that worked
    renew_at_once: int = 2  # renewals of one request before each waits a jittered pause
    cap: float = 120.0  # the longest wait, whatever Retry-After says


def decide(
    attempt: int,
    outcome: Outcome,
    retry_after: str | None,
    now: datetime,
    *,
    renewals: int = 0,
    policy: RetryPolicy = RetryPolicy(),
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What to do after attempt `attempt` (from 1) ended in `outcome` (see the table)."""
    verdict = outcome.verdict
    if verdict is Verdict.CONTENT:
        return Decision(Action.DONE)
    if verdict is Verdict.RENEW:
        if renewals >= policy.max_renewals:
            return Decision(Action.GIVE_UP)
        late = renewals - policy.renew_at_once + 1
        delay = backoff_delay(late, base=0.05, cap=2.0, rand=rand) if late > 0 else 0.0
        return Decision(Action.RENEW, delay)
    if verdict not in (Verdict.RETRY, Verdict.RETARGET) or attempt >= policy.max_attempts:
        return Decision(Action.GIVE_UP)
    if isinstance(outcome.error, RetryLaterError | DiskSpaceError):
        return Decision(Action.GIVE_UP)  # not within this pass
    delay = retry_wait(attempt, parse_retry_after(retry_after, now), cap=policy.cap, rand=rand)
    status = outcome.error.status if outcome.error is not None else None
    action = Action.RETRY if verdict is Verdict.RETRY else Action.RETARGET
    return Decision(action, delay, throttled=status == 429)


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 60.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Capped exponential backoff with full jitter; `attempt` counts from 1."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling * rand()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() too, which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def retry_wait(
    attempt: int,
    retry_after: float | None,
    *,
    cap: float = 300.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """How long to wait before attempt `attempt + 1`: the server's word first, else backoff."""
    if retry_after is not None:
        return min(retry_after, cap)
    return backoff_delay(attempt, rand=rand)


def next_retry_seconds(attempts: int, *, permanent: bool) -> float:
    """When a failed job is looked at again across passes (persisted as next_retry_at)."""
    if permanent:
        return PERMANENT_RETRY_SECONDS
    return min(3600.0, 30.0 * 2.0 ** max(0, attempts - 1))
