"""Pure retry decisions: back-off bounds, Retry-After parsing, cross-pass retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from agent.transfer.retry import (
    PERMANENT_RETRY_SECONDS,
    backoff_delay,
    next_retry_seconds,
    parse_retry_after,
    retry_wait,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@given(
    attempt=st.integers(min_value=1, max_value=200),
    rand=st.floats(min_value=0.0, max_value=0.999999),
    cap=st.floats(min_value=0.1, max_value=600.0),
)
def test_backoff_stays_within_the_capped_exponential_ceiling(
    attempt: int, rand: float, cap: float
) -> None:
    delay = backoff_delay(attempt, cap=cap, rand=lambda: rand)
    assert 0.0 <= delay <= min(cap, 2.0 ** (attempt - 1))


def test_backoff_ceiling_doubles_per_attempt_until_the_cap() -> None:
    ceilings = [backoff_delay(n, cap=10.0, rand=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_delta_seconds_is_taken_as_is(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == float(seconds)


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_http_date_counts_from_now(seconds: int) -> None:
    when = format_datetime(NOW + timedelta(seconds=seconds), usegmt=True)
    assert parse_retry_after(when, NOW) == float(seconds)


def test_retry_after_in_the_past_means_now() -> None:
    when = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(when, NOW) == 0.0


@given(st.text())
def test_retry_after_never_raises_and_never_goes_negative(value: str) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed is None or parsed >= 0.0


def test_missing_or_garbage_retry_after_is_none() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


def test_retry_wait_prefers_the_server_and_caps_it() -> None:
    assert retry_wait(3, 7.0) == 7.0
    assert retry_wait(3, 10_000.0, cap=120.0) == 120.0
    assert retry_wait(1, None) <= 1.0  # no word from the server: first back-off step


@given(st.integers(min_value=1, max_value=100))
def test_cross_pass_retries_grow_but_stay_within_an_hour(attempts: int) -> None:
    now = next_retry_seconds(attempts, permanent=False)
    assert 30.0 <= now <= 3600.0
    assert next_retry_seconds(attempts + 1, permanent=False) >= now


def test_permanent_failures_wait_hours() -> None:
    assert next_retry_seconds(1, permanent=True) == PERMANENT_RETRY_SECONDS >= 3600.0
