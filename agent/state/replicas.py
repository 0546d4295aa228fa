"""Replicas sharing one state database: who runs (registration, heartbeats), what each holds,
and the passes asked of any of them.

Each process that opens the agent (`sync-agent run`, and one-shot `sync` or `get`, which
claim jobs too) registers under its owner id (`agent.state.replica`) with host, pid and
start, and heartbeats while it runs; a clean stop removes its row, and a replica that
vanished (SIGKILL, a lost node) is shown as stale once its heartbeat is `STALE_AFTER` old
and forgotten after `FORGET_AFTER`. What a replica holds is read from the leases: the
sources whose pass it lists (`pass_leases`) and the download jobs it works (`jobs`). A pass
asked for on any replica (`POST /sync`) is a row in `pass_requests` until a listing of that
source that started after it ends, wherever the pass lease landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.errors import StateError
from agent.log import get_logger
from agent.models import JobState
from agent.state.database import Database
from agent.state.dialects import insert_for
from agent.state.replica import ReplicaId
from agent.state.tables import JobRow, PassLeaseRow, PassRequestRow, ReplicaRow

HEARTBEAT = 10.0  # seconds between a replica's heartbeats
STALE_AFTER = 45.0  # a replica silent this long is shown as stale
FORGET_AFTER = 900.0  # and its row is deleted after this long
REPLICAS = cast(Table, ReplicaRow.__table__)
REQUESTS = cast(Table, PassRequestRow.__table__)
PASSES = cast(Table, PassLeaseRow.__table__)
JOBS = cast(Table, JobRow.__table__)


def shared(db: Database) -> bool:
    """Can several processes share this database (PostgreSQL), or only one (SQLite)?"""
    return db.engine.dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A registered replica and what it holds, as `status` reports it (plain data)."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    stale: bool
    passes: tuple[str, ...] = ()  # the sources whose pass it lists now
    jobs: int = 0  # the download jobs leased to it now


class Replicas:
    """The `replicas` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def registered(
        self, me: ReplicaId, started_at: float, *, every: float = HEARTBEAT
    ) -> AsyncIterator[None]:
        """Registered, and heartbeating every `every` seconds, for the life of the block;
        the row is removed on a clean exit."""
        await self.register(me, started_at)
        beating = asyncio.create_task(self._beat(me, started_at, every), name="replica:beat")
        try:
            yield
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            try:
                await self.leave(str(me))
            except StateError as exc:  # it ages out instead
                get_logger().warning("replica.leave_failed", replica=str(me), error=str(exc))

    async def _beat(self, me: ReplicaId, started_at: float, every: float) -> None:
        """Tell the other replicas this one lives, and forget those long gone."""
        while True:
            await asyncio.sleep(every)
            try:
                if not await self.heartbeat(str(me)):
                    get_logger().warning("replica.registered_again", replica=str(me))
                    await self.register(me, started_at)
                await self.forget_stale()
            except StateError as exc:
                get_logger().error("replica.heartbeat_failed", error=str(exc))

    async def register(self, me: ReplicaId, started_at: float) -> None:
        values = {
            "id": str(me),
            "host": me.host[:255],
            "pid": me.pid,
            "started_at": started_at,
            "heartbeat_at": self.db.clock(),
        }
        async with self.db.begin() as conn:
            await upsert(conn, REPLICAS, values, ["id"])

    async def heartbeat(self, replica_id: str) -> bool:
        """Record that the replica lives; False when its row is gone (it was forgotten)."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(REPLICAS)
                .where(REPLICAS.c.id == replica_id)
                .values(heartbeat_at=self.db.clock())
            )
        return bool(result.rowcount)

    async def leave(self, replica_id: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(delete(REPLICAS).where(REPLICAS.c.id == replica_id))

    async def forget_stale(self) -> int:
        """Delete the rows of replicas silent for FORGET_AFTER; how many were deleted."""
        cutoff = self.db.clock() - FORGET_AFTER
        async with self.db.begin() as conn:
            result = await conn.execute(delete(REPLICAS).where(REPLICAS.c.heartbeat_at < cutoff))
        return int(result.rowcount)

    async def views(self) -> list[ReplicaView]:
        """Every registered replica, oldest first, with the leases it holds now."""
        now = self.db.clock()
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(REPLICAS).order_by(REPLICAS.c.started_at))).all()
            passes = await conn.execute(
                select(PASSES.c.owner, PASSES.c.source)
                .where(PASSES.c.lease_until >= now)
                .order_by(PASSES.c.source)
            )
            jobs = await conn.execute(
                select(JOBS.c.owner, func.count())
                .where((JOBS.c.state == JobState.ACTIVE) & (JOBS.c.lease_until >= now))
                .group_by(JOBS.c.owner)
            )
            listing: dict[str, list[str]] = {}
            for owner, source in passes:
                listing.setdefault(owner, []).append(source)
            working = {owner: int(n) for owner, n in jobs}
        return [
            ReplicaView(
                r.id,
                r.host,
                r.pid,
                r.started_at,
                r.heartbeat_at,
                now - r.heartbeat_at > STALE_AFTER,
                tuple(listing.get(r.id, ())),
                working.get(r.id, 0),
            )
            for r in rows
        ]


class PassRequests:
    """Passes asked for and not answered yet, by source."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def ask(self, sources: Iterable[str]) -> None:
        """Ask for a pass of each source now (a newer request replaces an older one)."""
        now = self.db.clock()
        async with self.db.begin() as conn:
            for source in sources:
                await upsert(conn, REQUESTS, {"source": source, "requested_at": now}, ["source"])

    async def pending(self) -> dict[str, float]:
        """source -> when its pass was asked for."""
        async with self.db.connect() as conn:
            rows = await conn.execute(select(REQUESTS.c.source, REQUESTS.c.requested_at))
            return dict(rows.all())

    async def answered(self, source: str, pass_started: float) -> None:
        """A pass of `source` that started at `pass_started` ended: it answers older requests."""
        async with self.db.begin() as conn:
            await conn.execute(
                delete(REQUESTS).where(
                    REQUESTS.c.source == source, REQUESTS.c.requested_at <= pass_started
                )
            )


async def upsert(
    conn: AsyncConnection, table: Table, values: dict[str, Any], key: Sequence[str]
) -> None:
    """INSERT, or UPDATE the row with the same `key` columns (SQLite and PostgreSQL alike)."""
    statement = insert_for(conn.dialect.name, table).values(values)
    changed = {k: statement.excluded[k] for k in values if k not in key}
    await conn.execute(statement.on_conflict_do_update(index_elements=list(key), set_=changed))
