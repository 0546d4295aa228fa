"""Replicas sharing one state database: who runs (registration, heartbeats), passes asked of them.

Each `sync-agent run` registers itself (id, host, pid, start) and heartbeats; a clean stop
removes its row, and a replica that vanished (SIGKILL, a lost node) is shown as stale once
its heartbeat is `STALE_AFTER` old and forgotten after `FORGET_AFTER`. A pass asked for on
any replica (`POST /sync`) is a row in `pass_requests` until a pass of that source that
started after it ends, so whichever replica runs the source's next pass answers it.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.errors import StateError
from agent.log import get_logger
from agent.state.database import Database
from agent.state.tables import PassRequestRow, ReplicaRow

HEARTBEAT = 10.0  # seconds between a replica's heartbeats
STALE_AFTER = 45.0  # a replica silent this long is shown as stale
FORGET_AFTER = 900.0  # and its row is deleted after this long
REPLICAS = cast(Table, ReplicaRow.__table__)
REQUESTS = cast(Table, PassRequestRow.__table__)


def shared(db: Database) -> bool:
    """Can several processes share this database (PostgreSQL), or only one (SQLite)?"""
    return db.engine.dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What a replica says of itself when it registers."""

    id: str
    host: str
    pid: int
    started_at: float


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A registered replica as `status` reports it (plain data)."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    stale: bool


def this_replica(started_at: float) -> ReplicaInfo:
    """This process as a replica: host name, pid and a random suffix (pids repeat in pods)."""
    host, pid = socket.gethostname(), os.getpid()
    return ReplicaInfo(f"{host[:48]}-{pid}-{secrets.token_hex(3)}", host[:255], pid, started_at)


class Replicas:
    """The `replicas` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def registered(self, me: ReplicaInfo) -> AsyncIterator[None]:
        """Registered for the life of the block; the row is removed on a clean exit."""
        await self.register(me)
        try:
            yield
        finally:
            try:
                await self.leave(me.id)
            except StateError as exc:  # it ages out instead
                get_logger().warning("replica.leave_failed", replica=me.id, error=str(exc))

    async def register(self, me: ReplicaInfo) -> None:
        now = self.db.clock()
        values = {
            "id": me.id,
            "host": me.host,
            "pid": me.pid,
            "started_at": me.started_at,
            "heartbeat_at": now,
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
        """Every registered replica, oldest first."""
        now = self.db.clock()
        async with self.db.connect() as conn:
            rows = await conn.execute(select(REPLICAS).order_by(REPLICAS.c.started_at))
            return [
                ReplicaView(
                    r.id,
                    r.host,
                    r.pid,
                    r.started_at,
                    r.heartbeat_at,
                    now - r.heartbeat_at > STALE_AFTER,
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
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(values)
    changed = {k: statement.excluded[k] for k in values if k not in key}
    await conn.execute(statement.on_conflict_do_update(index_elements=list(key), set_=changed))
