"""Webhook deliveries: a worker per endpoint sends its outbox in journal order, signed.

Each delivery follows the Standard Webhooks specification: a POST of a CloudEvent
(`agent.events.shape`) with `webhook-id` (the entry's id, the same on every retry),
`webhook-timestamp` (the attempt's time) and `webhook-signature` (`v1,` and the base64
HMAC-SHA256 of `id.timestamp.body` under the endpoint's `whsec_` secret, computed by the
`standardwebhooks` package). Redirects are not followed; an attempt may take 30 s.

The engine only writes the journal. A worker per endpoint leases the endpoint
(`agent.state.outbox`), sends the entry after its cursor once it is due, and records the
outcome (`agent.events.schedule` decides): the cursor moves on, a retry is scheduled, the
entry is given up, or the endpoint is disabled (410). So one slow or dead endpoint delays
neither the mirror nor the other endpoints, and a restart resumes where the outbox stands.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from standardwebhooks.webhooks import Webhook

from agent.config import WebhookConfig
from agent.config.webhooks import fingerprint
from agent.errors import StateError, safe_url
from agent.events.schedule import Verdict, next_delay, verdict
from agent.events.shape import CLOUDEVENTS_TYPE, cloud_event, compact
from agent.log import get_logger
from agent.sources.http import open_session
from agent.state.journal import Event
from agent.state.outbox import Endpoint, Head, LeaseLostError
from agent.state.store import Store
from agent.transfer.retry import parse_retry_after

REQUEST_TIMEOUT = 30.0  # the specification recommends 15 to 30 s
LEASE_SECONDS = 90.0  # longer than an attempt, renewed at every step
IDLE_POLL = 10.0  # how often a caught-up worker looks for entries another process wrote
CLAIM_POLL = 30.0  # how often a worker without the lease (or waiting to retry) looks again
STOP_GRACE = 5.0  # how long shutdown lets an attempt in flight finish
SYNC_DELIVERY = 30.0  # how long `sync-agent sync` delivers what is due before it exits
Clock = Callable[[], float]


class Observer(Protocol):
    """Where deliveries are counted (the daemon's metrics)."""

    def webhook_attempt(self, endpoint: str, outcome: str) -> None: ...

    def webhook_pending(self, endpoint: str, seconds: float) -> None: ...


class _Unobserved:
    def webhook_attempt(self, endpoint: str, outcome: str) -> None:
        del endpoint, outcome

    def webhook_pending(self, endpoint: str, seconds: float) -> None:
        del endpoint, seconds


@dataclass(frozen=True, slots=True)
class Target:
    """A configured endpoint, ready to sign for."""

    config: WebhookConfig
    endpoint: Endpoint
    signer: Webhook


@dataclass(frozen=True, slots=True)
class Attempt:
    status: int | None  # None: no answer (refused, reset, timed out)
    retry_after: float | None
    error: str


def outbox_endpoint(hook: WebhookConfig) -> Endpoint:
    return Endpoint(hook.name, fingerprint(hook), hook.types, hook.sources)


def targets(webhooks: Sequence[WebhookConfig]) -> list[Target]:
    """The endpoints that can sign (a webhook without its secret is left out)."""
    return [
        Target(hook, outbox_endpoint(hook), Webhook(hook.secret.reveal()))
        for hook in webhooks
        if hook.secret is not None
    ]


class Sender:
    """Signs and posts one entry to one endpoint."""

    def __init__(self, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    async def send(self, target: Target, event: Event) -> Attempt:
        body = compact(cloud_event(event))
        stamp = int(self.clock())
        signature = target.signer.sign(event.id, datetime.fromtimestamp(stamp, UTC), body)
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
            "Content-Type": CLOUDEVENTS_TYPE,
        }
        try:
            async with self.session.post(
                target.config.url,
                data=body.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as response:
                await response.read()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return Attempt(response.status, retry_after, f"HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Attempt(None, None, f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))


class Worker:
    """Delivers one endpoint's outbox while it holds the endpoint's lease."""

    def __init__(
        self,
        target: Target,
        store: Store,
        sender: Sender,
        observer: Observer,
        *,
        owner: str,
        stop: asyncio.Event,
        clock: Clock = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.target = target
        self.name = target.endpoint.name
        self.store = store
        self.sender = sender
        self.observer = observer
        self.owner = owner
        self.stop = stop
        self.clock = clock
        self.jitter = jitter
        self.log = get_logger(endpoint=self.name, url=safe_url(target.config.url))

    async def run(self, *, drain: bool = False) -> None:
        """Deliver until stopped; with `drain`, only what is due now, then return."""
        try:
            while not self.stop.is_set():
                try:
                    pause = await self.step(drain=drain)
                except LeaseLostError:
                    self.log.info("webhook.lease_lost")
                    pause = CLAIM_POLL
                except StateError as exc:
                    self.log.error("webhook.state_failed", error=str(exc))
                    pause = CLAIM_POLL
                if pause is None:
                    continue
                if drain:
                    return
                await self._pause(pause)
        finally:
            await self._release()

    async def step(self, *, drain: bool = False) -> float | None:
        """Deliver the entry due now (None: go on at once), else say how long to pause."""
        head = await self.store.outbox.claim(self.name, self.owner, LEASE_SECONDS)
        await self._report_pending()
        if head is None:
            return CLAIM_POLL  # another replica delivers, or the endpoint is disabled
        event = await self.store.outbox.head_event(self.target.endpoint, head.cursor)
        if event is None:
            if drain:
                return IDLE_POLL
            await self._idle(head.cursor)
            return None
        due_in = (head.next_attempt_at or 0.0) - self.clock()
        if due_in > 0:
            return min(due_in, CLAIM_POLL)
        await self._attempt(head, event)
        return None

    async def _attempt(self, head: Head, event: Event) -> None:
        attempt = await self.sender.send(self.target, event)
        outcome = verdict(attempt.status)
        outbox, log = self.store.outbox, self.log.bind(event_id=event.id, seq=event.seq)
        if outcome is Verdict.DELIVERED:
            await outbox.delivered(self.name, self.owner, event.seq)
            log.debug("webhook.delivered", attempts=head.attempts + 1)
            self.observer.webhook_attempt(self.name, "delivered")
            return
        if outcome is Verdict.GONE:
            await outbox.disable(self.name, self.owner, "the endpoint answered 410 Gone")
            log.warning(
                "webhook.disabled",
                reason="the endpoint answered 410 Gone",
                action="no more events are sent to it; give it a new url or secret to resume",
            )
            self.observer.webhook_attempt(self.name, "gone")
            return
        await self._failed(head, event, attempt)

    async def _failed(self, head: Head, event: Event, attempt: Attempt) -> None:
        failures = head.attempts + 1
        schedule = self.target.config.retry_schedule
        delay = next_delay(schedule, failures, attempt.retry_after, self.jitter())
        log = self.log.bind(event_id=event.id, seq=event.seq, error=attempt.error)
        if delay is None:
            await self.store.outbox.gave_up(self.name, self.owner, event.seq, attempt.error)
            log.error("webhook.given_up", attempts=failures)
            self.observer.webhook_attempt(self.name, "gave_up")
            return
        at = self.clock() + delay
        await self.store.outbox.retry_at(self.name, self.owner, failures, at, attempt.error)
        log.warning("webhook.attempt_failed", attempt=failures, retry_in=round(delay, 1))
        self.observer.webhook_attempt(self.name, "failed")

    async def _report_pending(self) -> None:
        since = await self.store.outbox.pending_since(self.target.endpoint)
        age = 0.0 if since is None else max(0.0, self.clock() - since)
        self.observer.webhook_pending(self.name, age)

    async def _idle(self, cursor: int) -> None:
        """Wait for an entry after `cursor` (this process's wake at once), or for the stop."""
        arrived = asyncio.ensure_future(self.store.journal.wait(cursor, 1, IDLE_POLL))
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({arrived, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel({arrived, stopping})

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            return

    async def _release(self) -> None:
        try:
            await self.store.outbox.release(self.name, self.owner)
        except StateError as exc:
            self.log.warning("webhook.release_failed", error=str(exc))


class Deliveries:
    """The workers of every configured endpoint, sharing one HTTP session."""

    def __init__(self, workers: Sequence[Worker], stop: asyncio.Event) -> None:
        self.workers = list(workers)
        self.stop = stop

    async def drain(self, within: float) -> None:
        """Deliver what is due now to every endpoint, for at most `within` seconds."""
        runs = [asyncio.create_task(w.run(drain=True)) for w in self.workers]
        if not runs:
            return
        _, late = await asyncio.wait(runs, timeout=within)
        await _cancel(late)


def owner_id() -> str:
    """This process, as a lease holder: host, pid and a random tag (at most 64 characters)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def deliveries(
    store: Store,
    webhooks: Sequence[WebhookConfig],
    observer: Observer | None = None,
    *,
    run: bool = True,
    clock: Clock = time.time,
) -> AsyncIterator[Deliveries]:
    """A worker per endpoint (running in the background with `run`), stopped on exit."""
    chosen = targets(webhooks)
    stop = asyncio.Event()
    async with open_session(limit=max(4, len(chosen)), limit_per_host=4) as session:
        await store.outbox.register([t.endpoint for t in chosen])
        sender, owner = Sender(session, clock), owner_id()
        workers = [
            Worker(t, store, sender, observer or _Unobserved(), owner=owner, stop=stop, clock=clock)
            for t in chosen
        ]
        tasks = [asyncio.create_task(w.run(), name=f"webhook:{w.name}") for w in workers if run]
        try:
            yield Deliveries(workers, stop)
        finally:
            stop.set()
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
                await _cancel(late)


async def deliver_due(
    store: Store, webhooks: Sequence[WebhookConfig], within: float = SYNC_DELIVERY
) -> None:
    """Deliver what is due now, for a command that does not stay (`sync`): the rest waits in
    the outbox for the next `sync` or `run`."""
    if webhooks:
        async with deliveries(store, webhooks, run=False) as due:
            await due.drain(within)


async def _cancel(tasks: Collection[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
