"""Webhook endpoints' outboxes, on SQLite and on PostgreSQL: where each starts, leases that one
holder at a time gets, fenced writes, and the age of what waits."""

from __future__ import annotations

import pytest

from agent.models import EventType
from agent.state.journal import NewEvent
from agent.state.outbox import Endpoint, LeaseLostError
from agent.state.store import Store
from tests.state.conftest import ManualClock

HOOK = Endpoint("hook", "f1")


async def journal(store: Store, *sources: str) -> list[int]:
    events = await store.journal.record([NewEvent(EventType.ADDED, s) for s in sources])
    return [e.seq for e in events]


async def test_a_new_endpoint_starts_at_the_end_of_the_journal(store: Store) -> None:
    await journal(store, "old")
    await store.outbox.register([HOOK])
    (seq,) = await journal(store, "new")
    head = await store.outbox.claim("hook", "me", 60)
    assert head is not None
    event = await store.outbox.head_event(HOOK, head.cursor)
    assert event is not None
    assert (event.seq, event.source) == (seq, "new")


async def test_one_holder_at_a_time_until_the_lease_expires(
    store: Store, clock: ManualClock
) -> None:
    await store.outbox.register([HOOK])
    assert await store.outbox.claim("hook", "a", 60) is not None
    assert await store.outbox.claim("hook", "b", 60) is None
    assert await store.outbox.claim("hook", "a", 60) is not None  # renewed by its holder
    clock.now += 61
    assert await store.outbox.claim("hook", "b", 60) is not None


async def test_a_holder_whose_lease_was_taken_cannot_move_the_cursor(
    store: Store, clock: ManualClock
) -> None:
    await store.outbox.register([HOOK])
    (seq,) = await journal(store, "x")
    await store.outbox.claim("hook", "a", 60)
    clock.now += 61
    await store.outbox.claim("hook", "b", 60)
    with pytest.raises(LeaseLostError):
        await store.outbox.delivered("hook", "a", seq)
    await store.outbox.delivered("hook", "b", seq)
    head = await store.outbox.claim("hook", "b", 60)
    assert head is not None
    assert head.cursor == seq


async def test_retries_are_remembered_and_a_delivery_resets_them(store: Store) -> None:
    await store.outbox.register([HOOK])
    (seq,) = await journal(store, "x")
    await store.outbox.claim("hook", "a", 60)
    await store.outbox.retry_at("hook", "a", 2, 1234.0, "HTTP 500")
    head = await store.outbox.claim("hook", "a", 60)
    assert head is not None
    assert (head.attempts, head.next_attempt_at) == (2, 1234.0)
    await store.outbox.gave_up("hook", "a", seq, "HTTP 500")
    head = await store.outbox.claim("hook", "a", 60)
    assert head is not None
    assert (head.cursor, head.attempts, head.next_attempt_at) == (seq, 0, None)


async def test_a_disabled_endpoint_is_enabled_again_by_a_new_url_or_secret(store: Store) -> None:
    await store.outbox.register([HOOK])
    await store.outbox.claim("hook", "a", 60)
    await store.outbox.disable("hook", "a", "410 Gone")
    await store.outbox.register([HOOK])
    assert await store.outbox.claim("hook", "a", 60) is None
    await store.outbox.register([Endpoint("hook", "f2")])
    assert await store.outbox.claim("hook", "a", 60) is not None


async def test_the_oldest_pending_entry_matches_the_endpoints_filters(
    store: Store, clock: ManualClock
) -> None:
    only_b = Endpoint("only-b", "f", sources=("b",))
    await store.outbox.register([HOOK, only_b])
    assert await store.outbox.pending_since(HOOK) is None
    start = clock.now
    await journal(store, "a")
    clock.now += 30
    (seq_b,) = await journal(store, "b")
    assert await store.outbox.pending_since(HOOK) == start
    assert await store.outbox.pending_since(only_b) == start + 30
    await store.outbox.claim("only-b", "a", 60)
    await store.outbox.delivered("only-b", "a", seq_b)
    assert await store.outbox.pending_since(only_b) is None
