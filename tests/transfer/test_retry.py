"""Pure retry decisions: the decision table, back-off bounds, Retry-After, cross-pass schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import (
    DiskSpaceError,
    ExpiredUrlError,
    IntegrityError,
    PermanentError,
    RetryLaterError,
    SkipDocument,
    TransientError,
)
from agent.transfer.contract import Outcome
from agent.transfer.retry import (
    PERMANENT_RETRY_SECONDS,
    Action,
    Decision,
    RetryPolicy,
    backoff_delay,
    decide,
    next_retry_seconds,
    parse_retry_after,
    retry_wait,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=4, max_renewals=2, cap=120.0)
URL = "http://127.0.0.1/x"


def _transient(status: int | None) -> Outcome:
    return Outcome.of(TransientError("t", url=URL, status=status))


IN_A_MINUTE = format_datetime(NOW + timedelta(seconds=60), usegmt=True)

# attempt, renewals, outcome, Retry-After -> decision (jitter fixed at its ceiling: rand = 1)
TABLE = [
    (1, 0, Outcome.content(), None, Decision(Action.DONE)),
    (1, 0, _transient(503), None, Decision(Action.RETRY, 1.0)),
    (3, 0, _transient(500), None, Decision(Action.RETRY, 4.0)),
    (3, 0, _transient(None), None, Decision(Action.RETRY, 4.0)),  # connection failed
    (4, 0, _transient(503), None, Decision(Action.GIVE_UP)),  # attempts spent
    (1, 0, _transient(503), "7", Decision(Action.RETRY, 7.0)),
    (1, 0, _transient(503), "9999", Decision(Action.RETRY, 120.0)),  # the server, capped
    (1, 0, _transient(503), IN_A_MINUTE, Decision(Action.RETRY, 60.0)),  # an HTTP date
    (1, 0, _transient(429), "2", Decision(Action.RETRY, 2.0, throttled=True)),
    (2, 0, _transient(429), None, Decision(Action.RETRY, 2.0, throttled=True)),
    (1, 0, _transient(409), None, Decision(Action.RETARGET, 1.0)),  # a transient 4xx
    (1, 0, Outcome.of(ExpiredUrlError("e", url=URL)), None, Decision(Action.RETARGET, 1.0)),
    (4, 0, Outcome.of(ExpiredUrlError("e", url=URL)), None, Decision(Action.GIVE_UP)),
    (1, 0, Outcome.of(IntegrityError("i", url=URL)), None, Decision(Action.RETRY, 1.0)),
    (1, 0, Outcome.of(RetryLaterError("r", url=URL, status=500)), "1", Decision(Action.GIVE_UP)),
    (1, 0, Outcome.of(DiskSpaceError("d")), None, Decision(Action.GIVE_UP)),
    (1, 0, Outcome.renew(URL, 401), None, Decision(Action.RENEW)),
    (4, 1, Outcome.renew(URL, 403), None, Decision(Action.RENEW)),  # renewals are not attempts
    (1, 2, Outcome.renew(URL, 401), None, Decision(Action.GIVE_UP)),  # renewals spent
    (1, 0, Outcome.of(SkipDocument("no content", url=URL)), None, Decision(Action.GIVE_UP)),
    (1, 0, Outcome.of(PermanentError("gone", url=URL, status=410)), None, Decision(Action.GIVE_UP)),
]


@pytest.mark.parametrize(("attempt", "renewals", "outcome", "retry_after", "expected"), TABLE)
def test_decision_table(
    attempt: int, renewals: int, outcome: Outcome, retry_after: str | None, expected: Decision
) -> None:
    """Each row: what to do after an attempt ended in `outcome` (the table in retry.py)."""
    decision = decide(
        attempt, outcome, retry_after, NOW, renewals=renewals, policy=POLICY, rand=lambda: 1.0
    )
    assert decision == expected


@given(attempt=st.integers(1, 50), status=st.sampled_from([429, 500, 502, 503, 504, None]))
def test_a_retry_never_waits_longer_than_the_cap(attempt: int, status: int | None) -> None:
    """A retry waits at most the cap, and only a 429 pauses the source's whole budget."""
    decision = decide(attempt, _transient(status), None, NOW, policy=RetryPolicy(max_attempts=99))
    assert decision.action is Action.RETRY
    assert 0.0 <= decision.delay <= 120.0
    assert decision.throttled == (status == 429)


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


def test_renewals_beyond_the_first_ones_wait_a_growing_jittered_pause() -> None:
    """A request that keeps losing short-lived tokens pauses before renewing, never gives up
    early: the first renewals go at once, later ones wait 0.05 s doubling, capped at 2 s."""
    policy = RetryPolicy(max_renewals=30, renew_at_once=2)
    delays = [
        decide(1, Outcome.renew(URL, 403), None, NOW, renewals=n, policy=policy, rand=lambda: 1.0)
        for n in range(30)
    ]
    assert all(d.action is Action.RENEW for d in delays)
    assert [d.delay for d in delays[:5]] == [0.0, 0.0, 0.05, 0.1, 0.2]
    assert max(d.delay for d in delays) == 2.0
    assert decide(1, Outcome.renew(URL, 403), None, NOW, renewals=30, policy=policy).action is (
        Action.GIVE_UP
    )
