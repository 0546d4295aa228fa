"""Webhook deliveries against a real receiver on loopback that verifies every signature:
order, retries, 410, redirects, a slow endpoint beside a fast one, and replicas."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agent.config import WebhookConfig
from agent.config.secret import Secret
from agent.events.schedule import Verdict, next_delay, verdict
from agent.events.shape import cloud_event, event_json
from agent.events.webhooks import deliveries
from agent.metrics import Metrics
from agent.models import EventType
from agent.state.journal import Event, NewEvent
from agent.state.store import Store
from tests.events.receiver import SECRET, Receiver

Receivers = Callable[..., Awaitable[Receiver]]
FAST = (0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2)  # a retry schedule for tests


def hook(receiver: Receiver, name: str = "app", **keys: object) -> WebhookConfig:
    settings: dict[str, object] = {"retry_schedule": FAST, **keys}
    return WebhookConfig(url=receiver.url, secret=Secret(SECRET), name=name, **settings)  # type: ignore[arg-type]


async def changes(store: Store, count: int, source: str = "src") -> list[Event]:
    return await store.journal.record(
        [NewEvent(EventType.ADDED, source, str(i), "v1", f"{source}/{i}.pdf") for i in range(count)]
    )


def outcomes(metrics: Metrics, endpoint: str) -> dict[str, float]:
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "sync_agent_webhook_deliveries_total" and labels["endpoint"] == endpoint:
                found[labels["outcome"]] = sample.value
    return found


# ---------------------------------------------------------------- pure decisions


def test_answers_mean_what_the_specification_says() -> None:
    assert [verdict(s) for s in (200, 204, 299)] == [Verdict.DELIVERED] * 3
    assert verdict(410) is Verdict.GONE
    assert [verdict(s) for s in (None, 301, 302, 400, 429, 500, 502)] == [Verdict.FAILED] * 7


def test_the_default_schedule_is_the_specifications_and_then_gives_up() -> None:
    spec = WebhookConfig(url="https://h/x", secret=None).retry_schedule
    delays = [next_delay(spec, n, None, 0.0) for n in range(1, 11)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400, None]
    assert next_delay(spec, 1, None, 0.99) == pytest.approx(5 * 1.099)  # at most 10 % jitter
    assert next_delay(spec, 1, 120.0, 0.0) == 120.0  # a longer Retry-After is honoured
    assert next_delay(spec, 1, 10**9, 0.0) == 86400.0  # up to a day


def test_a_cloud_event_carries_the_entry_with_its_path_as_subject() -> None:
    entry = Event(7, "evt_1", 1714564803.25, "document.moved", "hr", "d1", "v2", "hr/a.pdf", 3,
                  "ab" * 32, {"old_path": "hr/b.pdf"})  # fmt: skip
    body = cloud_event(entry)
    assert {k: body[k] for k in ("specversion", "id", "type", "subject", "time")} == {
        "specversion": "1.0",
        "id": "evt_1",
        "type": "document.moved",
        "subject": "hr/a.pdf",
        "time": "2024-05-01T12:00:03.250Z",
    }
    assert body["source"] == "/sync-agent/sources/hr"
    assert body["data"]["seq"] == 7
    assert body["data"]["data"] == {"old_path": "hr/b.pdf"}
    assert event_json(entry)["time"] == body["time"]


# ---------------------------------------------------------------- deliveries


async def test_every_entry_arrives_once_in_order_through_500s_and_an_outage(
    store: Store, receivers: Receivers
) -> None:
    receiver = await receivers(answers=[500, 500, 503])
    metrics = Metrics()
    async with deliveries(store, [hook(receiver)], metrics):
        sent = await changes(store, 5)
        await receiver.until_accepted(2)
        await receiver.stop()  # down for a while: connections refused
        more = await changes(store, 3, source="other")
        await asyncio.sleep(0.3)
        await receiver.start()
        await receiver.until_accepted(8)
    assert receiver.problems == []
    assert receiver.ids() == [e.id for e in sent + more]
    assert receiver.seqs() == sorted(receiver.seqs())
    counts = outcomes(metrics, "app")
    assert counts["delivered"] == 8
    assert counts["failed"] >= 3


async def test_deliveries_resume_after_a_restart_where_the_outbox_stands(
    store: Store, receivers: Receivers
) -> None:
    receiver = await receivers()
    async with deliveries(store, [hook(receiver)]):
        first = await changes(store, 2)
        await receiver.until_accepted(2)
    later = await changes(store, 2)  # journaled while nothing delivers
    async with deliveries(store, [hook(receiver)]):
        await receiver.until_accepted(4)
    assert receiver.ids() == [e.id for e in first + later]


async def test_410_gone_disables_the_endpoint(store: Store, receivers: Receivers) -> None:
    receiver = await receivers(answers=[410])
    metrics = Metrics()
    async with deliveries(store, [hook(receiver)], metrics):
        await changes(store, 3)
        await until(lambda: outcomes(metrics, "app").get("gone") == 1)
        await asyncio.sleep(0.3)
    assert receiver.accepted == []
    assert len(receiver.attempts) == 1
    assert await store.outbox.claim("app", "anyone", 60) is None


async def test_a_redirect_is_not_followed_and_an_entry_failing_every_retry_is_given_up(
    store: Store, receivers: Receivers
) -> None:
    receiver = await receivers(answers=[302] * (1 + len(FAST)))
    metrics = Metrics()
    async with deliveries(store, [hook(receiver)], metrics):
        first, second = await changes(store, 2)
        await receiver.until_accepted(1)
    assert receiver.attempts == [first.id] * (1 + len(FAST)) + [second.id]
    assert receiver.ids() == [second.id]
    assert outcomes(metrics, "app")["gave_up"] == 1


async def test_types_and_sources_choose_what_an_endpoint_gets(
    store: Store, receivers: Receivers
) -> None:
    receiver = await receivers()
    chosen = hook(receiver, types=(EventType.REMOVED,), sources=("hr",))
    async with deliveries(store, [chosen]):
        await changes(store, 2, source="hr")
        wanted = await store.journal.record(
            [NewEvent(EventType.REMOVED, s, "1") for s in ("it", "hr")]
        )
        await receiver.until_accepted(1)
        await asyncio.sleep(0.2)
    assert receiver.ids() == [wanted[1].id]


async def test_a_slow_endpoint_never_delays_another(store: Store, receivers: Receivers) -> None:
    slow, fast = await receivers(delay=3.0), await receivers()
    async with deliveries(store, [hook(slow, "slow"), hook(fast, "fast")]):
        await changes(store, 4)
        await fast.until_accepted(4, timeout=2.5)  # while the slow one sits on its first
        assert slow.accepted == []


async def test_the_oldest_pending_age_is_exported_per_endpoint(
    store: Store, receivers: Receivers
) -> None:
    receiver = await receivers(answers=[500] * 3)
    metrics = Metrics()
    async with deliveries(store, [hook(receiver, retry_schedule=(0.5,) * 5)], metrics):
        await changes(store, 1)
        await until(lambda: pending(metrics, "app") > 0)
        await receiver.until_accepted(1)
        await until(lambda: pending(metrics, "app") == 0)


async def test_replicas_sharing_a_database_deliver_each_entry_once(
    pg_migrated_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    receiver = await receivers()
    async with (
        Store.open(pg_migrated_url, tmp_path / "a") as one,
        Store.open(pg_migrated_url, tmp_path / "b") as two,
        deliveries(one, [hook(receiver)]),
        deliveries(two, [hook(receiver)]),
    ):
        sent = await changes(one, 6) + await changes(two, 6)
        await receiver.until_accepted(12)
        await asyncio.sleep(0.5)
    assert Counter(receiver.ids()) == Counter(e.id for e in sent)
    assert max(Counter(receiver.attempts).values()) == 1
    assert receiver.seqs() == sorted(receiver.seqs())


def pending(metrics: Metrics, endpoint: str) -> float:
    value = metrics.registry.get_sample_value(
        "sync_agent_webhook_oldest_pending_seconds", {"endpoint": endpoint}
    )
    return value or 0.0


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)
