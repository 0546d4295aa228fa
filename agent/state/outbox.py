"""The webhook outbox: each endpoint's cursor in the journal, its retry state and its lease.

The outbox of an endpoint is the journal after its cursor, filtered by the endpoint's types
and sources: deliveries go out in `seq` order, one at a time, so the only state to keep is
where the endpoint stands (the cursor: the last entry delivered or given up) and how the
entry after it fares (attempts, the next attempt's time). That state is durable, so
deliveries survive restarts, and nothing is held in memory.

Several replicas share one database: an endpoint is delivered to by whichever holds its
lease. `claim` takes the endpoint's row with `FOR UPDATE SKIP LOCKED` on PostgreSQL (a
replica never waits behind another's claim) and sets `lease_owner` and `lease_until`; every
later write is fenced on `lease_owner`, so a replica whose lease was taken over cannot move
the cursor (`LeaseLostError`). An entry is sent twice only when a replica stalls longer than
the lease in the middle of a send; receivers deduplicate on `webhook-id`, as the Standard
Webhooks specification asks them to.

An endpoint first seen starts at the end of the journal (it gets what happens from then on).
One whose `fingerprint` (its URL and secret) changed is enabled again, keeping its cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.errors import StateError
from agent.state.database import Database
from agent.state.journal import Event, Journal, matching
from agent.state.tables import EventRow, WebhookEndpointRow

TABLE = cast(Table, WebhookEndpointRow.__table__)
EVENTS = cast(Table, EventRow.__table__)


class LeaseLostError(StateError):
    """Another process holds the endpoint's lease now: this one must stop delivering."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A configured endpoint as the outbox knows it."""

    name: str
    fingerprint: str
    types: tuple[str, ...] = ()  # () = every type
    sources: tuple[str, ...] = ()  # () = every source


@dataclass(frozen=True, slots=True)
class Head:
    """Where a leased endpoint stands: its cursor and how the entry after it fares."""

    cursor: int
    attempts: int
    next_attempt_at: float | None


class Outbox:
    """The endpoints' cursors, retry state and leases."""

    def __init__(self, db: Database, journal: Journal) -> None:
        self.db = db
        self.journal = journal

    async def register(self, endpoints: Sequence[Endpoint]) -> None:
        """Know these endpoints: new ones start at the journal's end, changed ones are enabled."""
        now = self.db.clock()
        async with self.db.begin() as conn:
            end = int(await conn.scalar(select(func.max(EVENTS.c.seq))) or 0)
            for endpoint in endpoints:
                await _register(conn, endpoint, end, now)

    async def claim(self, name: str, owner: str, ttl: float) -> Head | None:
        """Lease the endpoint for `ttl` seconds (renewing our own lease); None when another
        process holds it or the endpoint is disabled."""
        now = self.db.clock()
        free = or_(
            TABLE.c.lease_owner.is_(None),
            TABLE.c.lease_owner == owner,
            TABLE.c.lease_until < now,
        )
        query = (
            select(TABLE)
            .where(TABLE.c.name == name, TABLE.c.disabled_at.is_(None), free)
            .with_for_update(skip_locked=True)
        )
        async with self.db.begin() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            await conn.execute(
                update(TABLE)
                .where(TABLE.c.name == name)
                .values(lease_owner=owner, lease_until=now + ttl)
            )
        return Head(row.cursor, row.attempts, row.next_attempt_at)

    async def head_event(self, endpoint: Endpoint, cursor: int) -> Event | None:
        """The next entry to deliver after `cursor`, or None when the endpoint is caught up."""
        found = await self.journal.read(cursor, 1, types=endpoint.types, sources=endpoint.sources)
        return found[0] if found else None

    async def delivered(self, name: str, owner: str, seq: int) -> None:
        """The entry `seq` is delivered (or given up): move the cursor past it."""
        await self._fenced(
            name, owner, cursor=seq, attempts=0, next_attempt_at=None, last_error=None
        )

    async def gave_up(self, name: str, owner: str, seq: int, error: str) -> None:
        """The entry `seq` failed every attempt of the schedule: move on, keeping why."""
        await self._fenced(
            name, owner, cursor=seq, attempts=0, next_attempt_at=None, last_error=error
        )

    async def retry_at(self, name: str, owner: str, attempts: int, at: float, error: str) -> None:
        await self._fenced(name, owner, attempts=attempts, next_attempt_at=at, last_error=error)

    async def disable(self, name: str, owner: str, reason: str) -> None:
        await self._fenced(
            name, owner, disabled_at=self.db.clock(), disabled_reason=reason, lease_owner=None
        )

    async def release(self, name: str, owner: str) -> None:
        """Give the lease up (at shutdown), so another replica need not wait for it to expire."""
        async with self.db.begin() as conn:
            await conn.execute(
                update(TABLE)
                .where(TABLE.c.name == name, TABLE.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def pending_since(self, endpoint: Endpoint) -> float | None:
        """When the oldest entry still to deliver to the endpoint was journaled (None: none)."""
        cursor = select(TABLE.c.cursor).where(
            TABLE.c.name == endpoint.name, TABLE.c.disabled_at.is_(None)
        )
        query = select(func.min(EVENTS.c.time)).where(
            EVENTS.c.seq > cursor.scalar_subquery(), *matching(endpoint.types, endpoint.sources)
        )
        async with self.db.connect() as conn:
            found = await conn.scalar(query)
        return None if found is None else float(found)

    async def _fenced(self, name: str, owner: str, **values: Any) -> None:
        now = self.db.clock()
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(TABLE)
                .where(TABLE.c.name == name, TABLE.c.lease_owner == owner)
                .values(updated_at=now, **values)
            )
        if result.rowcount != 1:
            raise LeaseLostError(f"the lease on webhook endpoint {name!r} was taken over")


async def _register(conn: AsyncConnection, endpoint: Endpoint, end: int, now: float) -> None:
    where = TABLE.c.name == endpoint.name
    found = await conn.scalar(select(TABLE.c.fingerprint).where(where))
    if found is None:
        await conn.execute(
            insert(TABLE).values(
                name=endpoint.name,
                fingerprint=endpoint.fingerprint,
                cursor=end,
                attempts=0,
                updated_at=now,
            )
        )
    elif found != endpoint.fingerprint:
        await conn.execute(
            update(TABLE)
            .where(where)
            .values(
                fingerprint=endpoint.fingerprint,
                attempts=0,
                next_attempt_at=None,
                disabled_at=None,
                disabled_reason=None,
                updated_at=now,
            )
        )
