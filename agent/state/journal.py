"""The change journal: what changed in the mirror, in commit order, kept for a retention period.

Every change is appended inside the transaction that records it (`Documents` calls
`append` as the last statement of its transactions and `publish` after they commit), so a
journal entry exists exactly when its change is committed: a file renamed into place and its
row, a move, a removal, a failure after the download's retries. Readers (`GET /events`,
`sync-agent events`, webhook deliveries, the local hook) replay it from the database, so a
slow reader loses nothing to a buffer.

Order. `seq` increases in commit order, with gaps (a rolled-back transaction spends its
numbers), so a reader that has seen `seq = N` never later meets an entry below N:

- SQLite has one writer at a time, and the entry is written while the transaction holds
  the write lock: entries commit in the order their numbers were taken.
- On PostgreSQL two transactions could take numbers 10 and 11 from the sequence and commit
  11 first; a reader at 11 would then skip 10 for good. So `append` first takes a
  transaction-scoped advisory lock (`JOURNAL_LOCK`) and only then draws its numbers; the
  lock is released at commit, after the entries became visible, so the next writer's numbers
  are drawn after every smaller number committed or rolled back (a commit-ordered
  assignment). The lock is held only from the append (the last statement) to the commit,
  and nothing takes another lock after it, so it cannot deadlock and serialises little.

Retention: `prune` deletes entries older than a cut-off in small batches, each its own
transaction. SQLite reuses the freed pages for new entries, so the file grows to the size
of one retention period of changes and stays there (see docs/events.md for measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agent.models import EventType, PassStats
from agent.state.database import Database
from agent.state.tables import EventRow

TABLE = cast(Table, EventRow.__table__)
JOURNAL_LOCK = 0x6A726E6C  # PostgreSQL advisory lock: journal numbers are drawn in commit order
PRUNE_BATCH = 1000  # entries deleted per transaction
EMPTY: Mapping[str, Any] = MappingProxyType({})


CHANGES = frozenset(
    {
        EventType.ADDED,
        EventType.UPDATED,
        EventType.MOVED,
        EventType.REMOVED,
        EventType.LOCAL_COPY_KEPT,
    }
)  # the types that change the mirror's files


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A change to journal: what the caller knows; the journal adds seq, id and time."""

    type: EventType
    source: str
    document_id: str | None = None
    version: str | None = None
    path: str | None = None
    size: int | None = None
    digest: str | None = None  # "<algorithm>:<hex>" of the file's content
    data: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Event:
    """A committed journal entry."""

    seq: int
    id: str
    time: float
    type: str
    source: str
    document_id: str | None
    version: str | None
    path: str | None
    size: int | None
    digest: str | None
    data: Mapping[str, Any]

    @property
    def changes_mirror(self) -> bool:
        return self.type in CHANGES


Subscriber = Callable[[Sequence[Event]], None]


class Journal:
    """Appends to the journal inside callers' transactions; reads, waits for and prunes it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._changed = asyncio.Event()
        self._subscribers: list[Subscriber] = []

    # ------------------------------------------------------------ writing

    async def append(
        self, conn: AsyncConnection | AsyncSession, events: Sequence[NewEvent]
    ) -> list[Event]:
        """Journal `events` in the caller's transaction; make it its last statement."""
        if not events:
            return []
        if self.db.engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOURNAL_LOCK})
        now = self.db.clock()
        rows = [_values(event, now) for event in events]
        result = await conn.execute(insert(TABLE).returning(TABLE.c.id, TABLE.c.seq), rows)
        seqs: dict[str, int] = {row.id: row.seq for row in result}
        return [_event(SimpleNamespace(**row, seq=seqs[row["id"]])) for row in rows]

    def publish(self, events: Sequence[Event]) -> None:
        """Tell waiting readers and subscribers: call after the appending transaction committed."""
        if not events:
            return
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for subscriber in list(self._subscribers):
            subscriber(events)

    async def record(self, events: Sequence[NewEvent]) -> list[Event]:
        """Journal changes recorded nowhere else, in a transaction of their own."""
        async with self.db.begin() as conn:
            committed = await self.append(conn, events)
        self.publish(committed)
        return committed

    async def pass_completed(self, source: str, stats: PassStats, *, ok: bool) -> None:
        counts = {k: v for k, v in asdict(stats).items() if k != "errors"}
        await self.record([NewEvent(EventType.PASS_COMPLETED, source, data={**counts, "ok": ok})])

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with the entries this process commits; returns the unsubscribe."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    # ------------------------------------------------------------ reading

    async def read(
        self,
        since: int,
        limit: int,
        *,
        types: Collection[str] = (),
        sources: Collection[str] = (),
    ) -> list[Event]:
        """Up to `limit` entries after `since`, in order; only these types and sources if given."""
        query = (
            select(TABLE)
            .where(TABLE.c.seq > since, *matching(types, sources))
            .order_by(TABLE.c.seq)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            return [_event(row) for row in await conn.execute(query)]

    async def last_seq(self) -> int:
        async with self.db.connect() as conn:
            return int(await conn.scalar(select(func.max(TABLE.c.seq))) or 0)

    async def wait(
        self, since: int, limit: int, within: float, *, poll: float = 1.0
    ) -> list[Event]:
        """Entries after `since`, waiting up to `within` seconds for one to be committed.

        This process's writers wake the wait at once; entries other processes write (a
        replica, `sync-agent get`) are found by reading again every `poll` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed  # taken before reading: a commit after the read wakes us
            events = await self.read(since, limit)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(poll, remaining))

    # ------------------------------------------------------------ retention

    async def prune(self, before: float, *, batch: int = PRUNE_BATCH) -> int:
        """Delete entries older than `before`, `batch` per transaction; returns how many."""
        deleted = 0
        while True:
            async with self.db.begin() as conn:
                old = select(TABLE.c.seq).where(TABLE.c.time < before).order_by(TABLE.c.seq)
                seqs = list((await conn.scalars(old.limit(batch))).all())
                if seqs:
                    await conn.execute(delete(TABLE).where(TABLE.c.seq.in_(seqs)))
            deleted += len(seqs)
            if len(seqs) < batch:
                return deleted
            await asyncio.sleep(0)  # let the writers that record changes in between


def matching(types: Collection[str], sources: Collection[str]) -> list[ColumnElement[bool]]:
    """The WHERE clauses that keep entries of these types and sources (none given: all)."""
    clauses: list[ColumnElement[bool]] = []
    if types:
        clauses.append(TABLE.c.type.in_(list(types)))
    if sources:
        clauses.append(TABLE.c.source.in_(list(sources)))
    return clauses


def _values(event: NewEvent, now: float) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": str(event.type),
        "source": event.source,
        "document_id": event.document_id,
        "version": event.version,
        "path": event.path,
        "size": event.size,
        "digest": event.digest,
        "time": now,
        "data": json.dumps(dict(event.data), sort_keys=True, default=str),
    }


def _event(row: Any) -> Event:
    """An entry from a row (or anything with the row's attributes)."""
    return Event(
        seq=int(row.seq),
        id=row.id,
        time=row.time,
        type=row.type,
        source=row.source,
        document_id=row.document_id,
        version=row.version,
        path=row.path,
        size=row.size,
        digest=row.digest,
        data=MappingProxyType(json.loads(row.data or "{}")),
    )
