"""Pure retry decisions: backoff delays, Retry-After parsing, which statuses are transient."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PERMANENT_RETRY_SECONDS = 6 * 3600.0  # permanent failures are looked at again after hours


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
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def retry_wait(attempt: int, retry_after: float | None, *, cap: float = 300.0) -> float:
    """How long to wait before attempt `attempt + 1`: the server's word first, else backoff."""
    if retry_after is not None:
        return min(retry_after, cap)
    return backoff_delay(attempt)


def next_retry_seconds(attempts: int, *, permanent: bool) -> float:
    """When a failed job is looked at again across passes (persisted as next_retry_at)."""
    if permanent:
        return PERMANENT_RETRY_SECONDS
    return min(3600.0, 30.0 * 2.0 ** max(0, attempts - 1))
