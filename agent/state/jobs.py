"""The download job queue: jobs enqueued by passes, claimed by replicas under leases.

A job is one document version on its way into the mirror; it survives restarts so a download
resumes from its persisted offset. Its life:

    enqueue (a pass) -> queued -> claim -> active, leased to one replica -> retired with the
    document row (`agent.state.documents.commit_mirrored`), or failed -> retry / failed,
    until a pass queues it again; released (queued again) when its holder stops.

Claims take a batch in one short statement that writes the lease (`owner`, `lease_until`,
`attempt` + 1) and never holds a row lock past it: on PostgreSQL `FOR UPDATE SKIP LOCKED`
picks rows no other replica is claiming; on SQLite the single writer serialises claims
(`UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`). The claim also takes over jobs
whose lease expired, so a stopped replica's work moves on.

The fence: every write a holder makes to its job (heartbeat, checkpoint, verification,
failure, release, retirement) matches `id`, `owner` and `attempt` (`_held`). Once another
replica claimed the job, `attempt` moved on and the late holder's writes match nothing:
`LeaseLostError`, or the item drops out of a batch. Each attempt writes its own staging file
(`partial_name`), so two holders never write the same file.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agent.errors import LeaseLostError
from agent.models import JobSpec, JobState, RemoteDocument
from agent.state.database import Database
from agent.state.tables import JobRow

ENQUEUE_BATCH = 500  # job rows written per transaction
TABLE = cast(Table, JobRow.__table__)
Connection = AsyncConnection | AsyncSession


@dataclass(frozen=True, slots=True)
class JobLease:
    """One claim of a job: the fence of every write its holder makes."""

    job_id: int
    owner: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job leased to this replica: what to download, and what an earlier attempt left.

    `spec.temp_name` is this attempt's staging file. `partial` names the file holding the
    bytes persisted so far (`spec.validator`, `spec.digest` describe it), when it is not
    this attempt's own; `holder_may_live` says its writer did not release the job (its
    lease expired), so it may still be writing to it.
    """

    spec: JobSpec
    doc: RemoteDocument
    lease: JobLease
    partial: str | None
    holder_may_live: bool


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the status read model reports it (plain data, no user-facing words)."""

    source: str
    remote_id: str
    rel_path: str
    state: str
    bytes_done: int
    expected_size: int | None
    attempts: int
    last_error: str | None
    error_kind: str | None
    next_retry_at: float | None
    owner: str | None = None
    lease_until: float | None = None


def partial_name(source: str, job_id: int, attempt: int) -> str:
    """The staging file of one attempt at a job (ids are never reused, attempts only grow)."""
    return f"{source}-{job_id}.{attempt}.part"


def path_key(rel_path: str) -> str:
    """How a mirror path is compared for claims: casefolded, for file systems that fold case."""
    return rel_path.casefold()


class Jobs:
    """The persisted download jobs and their leases."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLite has one process per state folder (the instance lock): the holder of a lease
        # it takes over is gone. On PostgreSQL it may be a stalled replica, still writing.
        self.exclusive = db.engine.dialect.name == "sqlite"

    # ------------------------------------------------------------ passes

    async def enqueue(self, source: str, items: Sequence[tuple[RemoteDocument, str]]) -> int:
        """Queue downloads of these document versions; returns how many are claimable now.

        A job keeps the attributes it was created with (`x-download-reason` and the like)
        for as long as it targets the same version; a new version starts a new job. A job
        leased to a replica is left to it.
        """
        queued = 0
        for start in range(0, len(items), ENQUEUE_BATCH):
            async with self.db.begin() as conn:
                batch = items[start : start + ENQUEUE_BATCH]
                queued += await _enqueue(conn, source, batch, self.db.clock())
        return queued

    async def outstanding(self, source: str, owner: str) -> bool:
        """Is any job of the source still to be done here: queued, held by `owner`, or held
        by a lease that expired? (Jobs under another replica's live lease are its work.)"""
        now = self.db.clock()
        mine_or_lapsed = (TABLE.c.owner == owner) | (func.coalesce(TABLE.c.lease_until, 0) < now)
        waiting = (TABLE.c.state == JobState.QUEUED) | (
            (TABLE.c.state == JobState.ACTIVE) & mine_or_lapsed
        )
        query = select(TABLE.c.id).where(_workable(source) & waiting).limit(1)
        async with self.db.connect() as conn:
            return (await conn.scalar(query)) is not None

    # ------------------------------------------------------------ leases

    async def claim(
        self,
        owner: str,
        sources: Collection[str],
        limit: int,
        seconds: float,
        *,
        busy: Collection[int] = (),
    ) -> list[Claimed]:
        """Lease up to `limit` jobs of these sources to `owner` for `seconds`, oldest first:
        queued ones, and ones whose lease expired (`busy`: jobs `owner` is still working on,
        never taken over, even if a stalled heartbeat let their leases run out)."""
        if not sources or limit <= 0:
            return []
        now = self.db.clock()
        where = _claimable(now, busy) & TABLE.c.source.in_(list(sources))
        async with self.db.begin() as conn:
            return await self._claim(conn, where, limit, owner, now + seconds)

    async def claim_document(
        self, owner: str, source: str, doc: RemoteDocument, rel_path: str, seconds: float
    ) -> Claimed | None:
        """Queue this document version and lease its job to `owner` in one transaction (an
        on-demand fetch: no worker can claim it in between); None while a live lease of
        another holder has it."""
        now = self.db.clock()
        where = _claimable(now, ()) & (TABLE.c.source == source)
        async with self.db.begin() as conn:
            await _enqueue(conn, source, [(doc, rel_path)], now)
            found = await self._claim(
                conn, where & (TABLE.c.remote_id == doc.remote_id), 1, owner, now + seconds
            )
        return found[0] if found else None

    async def _claim(
        self,
        conn: AsyncConnection,
        where: ColumnElement[bool],
        limit: int,
        owner: str,
        until: float,
    ) -> list[Claimed]:
        """The claim statement (see the module docstring), oldest job first."""
        values = {
            "state": JobState.ACTIVE,
            "owner": owner,
            "lease_until": until,
            "attempt": TABLE.c.attempt + 1,
            "updated_at": self.db.clock(),
        }
        if self.exclusive:
            picked = select(TABLE.c.id).where(where).order_by(TABLE.c.id).limit(limit)
            statement = (
                update(TABLE)
                .where(TABLE.c.id.in_(picked.scalar_subquery()))
                .values(values)
                .returning(*TABLE.c)
            )
            rows = (await conn.execute(statement)).all()
            return sorted((_claimed(r, None) for r in rows), key=_by_id)
        cte = (
            select(TABLE.c.id, TABLE.c.owner.label("previous_owner"))
            .where(where)
            .order_by(TABLE.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        statement = (
            update(TABLE)
            .where(TABLE.c.id == cte.c.id)
            .values(values)
            .returning(*TABLE.c, cte.c.previous_owner)
        )
        rows = (await conn.execute(statement)).all()
        return sorted((_claimed(r, r.previous_owner) for r in rows), key=_by_id)

    async def extend(self, leases: Collection[JobLease], seconds: float) -> set[int]:
        """Heartbeat: extend these leases; returns the ids still held (the rest were lost)."""
        kept: set[int] = set()
        now = self.db.clock()
        async with self.db.begin() as conn:
            for owner, held in _by_owner(leases).items():
                statement = (
                    update(TABLE)
                    .where(_held_all(owner, held) & (TABLE.c.state == JobState.ACTIVE))
                    .values(lease_until=now + seconds)
                    .returning(TABLE.c.id)
                )
                kept.update((await conn.scalars(statement)).all())
        return kept

    async def checkpoint(
        self, lease: JobLease, bytes_done: int, validator: str | None, temp_name: str
    ) -> None:
        """Persist how far the holder's staging file `temp_name` got (fenced)."""
        values = {
            "bytes_done": bytes_done,
            "validator": validator,
            "temp_name": temp_name,
            "updated_at": self.db.clock(),
        }
        async with self.db.begin() as conn:
            result = await conn.execute(update(TABLE).where(_held(lease)).values(values))
        if result.rowcount == 0:
            raise LeaseLostError(f"job {lease.job_id} attempt {lease.attempt} was taken over")

    async def mark_verified(self, items: Sequence[tuple[JobLease, int, str, str]]) -> set[int]:
        """(lease, size, digest, temp_name) of files about to be renamed into place; returns
        the ids still held, the only ones to rename (fenced).

        Written before the rename, so that start-up can adopt a file a crash left in place
        before its document row was committed, after checking its digest.
        """
        if not items:
            return set()
        by_id = {lease.job_id: (size, digest, temp) for lease, size, digest, temp in items}
        values = {
            "bytes_done": case({i: v[0] for i, v in by_id.items()}, value=TABLE.c.id),
            "digest": case({i: v[1] for i, v in by_id.items()}, value=TABLE.c.id),
            "temp_name": case({i: v[2] for i, v in by_id.items()}, value=TABLE.c.id),
        }
        kept: set[int] = set()
        async with self.db.begin() as conn:
            for owner, held in _by_owner([lease for lease, *_ in items]).items():
                statement = (
                    update(TABLE).where(_held_all(owner, held)).values(values).returning(TABLE.c.id)
                )
                kept.update((await conn.scalars(statement)).all())
        return kept

    async def failed(
        self,
        lease: JobLease,
        *,
        kind: str,
        error: str,
        permanent: bool,
        retry_in: float,
        bytes_done: int,
        temp_name: str | None = None,
    ) -> bool:
        """Record a failed attempt and let go of the job (fenced); False: it was not ours."""
        now = self.db.clock()
        values: dict[str, Any] = {
            "state": JobState.FAILED if permanent else JobState.RETRY,
            "owner": None,
            "lease_until": None,
            "attempts": TABLE.c.attempts + 1,
            "error_kind": kind,
            "last_error": error,
            "next_retry_at": now + retry_in,
            "bytes_done": bytes_done,
            "updated_at": now,
        }
        if temp_name is not None:
            values["temp_name"] = temp_name
        async with self.db.begin() as conn:
            result = await conn.execute(update(TABLE).where(_held(lease)).values(values))
        return bool(result.rowcount)

    async def release(self, items: Sequence[tuple[JobLease, str | None]]) -> None:
        """Give jobs back to the queue (fenced): (lease, the staging file holding their bytes,
        if this attempt wrote one). A released job's partial is safe to take over at once."""
        now = self.db.clock()
        async with self.db.begin() as conn:
            for lease, temp_name in items:
                values: dict[str, Any] = {
                    "state": JobState.QUEUED,
                    "owner": None,
                    "lease_until": None,
                    "updated_at": now,
                }
                if temp_name is not None:
                    values["temp_name"] = temp_name
                await conn.execute(update(TABLE).where(_held(lease)).values(values))

    async def release_all(self) -> int:
        """Queue again every job a previous process held (SQLite, under the instance lock,
        at start-up: that process is gone, so its leases need not run out first)."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(TABLE)
                .where(TABLE.c.state == JobState.ACTIVE)
                .values(state=JobState.QUEUED, owner=None, lease_until=None)
            )
        return int(result.rowcount or 0)

    # ------------------------------------------------------------ reads

    async def attempts(self, job_id: int) -> int:
        async with self.db.connect() as conn:
            return int(await conn.scalar(select(TABLE.c.attempts).where(TABLE.c.id == job_id)) or 0)

    async def queued(self) -> int:
        """How many jobs wait for a replica to claim them."""
        async with self.db.connect() as conn:
            query = select(func.count()).where(TABLE.c.state == JobState.QUEUED)
            return int(await conn.scalar(query) or 0)

    async def views(self, source: str | None = None) -> list[JobView]:
        """Every job (of one source, when given), ordered by source and age."""
        query = select(TABLE).order_by(TABLE.c.source, TABLE.c.id)
        if source is not None:
            query = query.where(TABLE.c.source == source)
        async with self.db.connect() as conn:
            return [_view(r) for r in await conn.execute(query)]

    async def temp_names(self) -> set[str]:
        """The staging file names jobs own (every other staging file is stale): the file
        holding each job's bytes, and the file of each attempt under way."""
        columns = (TABLE.c.source, TABLE.c.id, TABLE.c.attempt, TABLE.c.state, TABLE.c.temp_name)
        names: set[str] = set()
        async with self.db.connect() as conn:
            for source, job_id, attempt, state, temp in await conn.execute(select(*columns)):
                names.add(temp)
                if state == JobState.ACTIVE:
                    names.add(partial_name(source, job_id, attempt))
        return names

    async def verified(self) -> list[tuple[JobSpec, int, str]]:
        """Jobs whose bytes were verified for a rename and that no live lease holds:
        (job, size, digest), `job.temp_name` naming the verified file."""
        now = self.db.clock()
        unleased = TABLE.c.owner.is_(None) | (func.coalesce(TABLE.c.lease_until, 0) < now)
        query = select(TABLE).where(TABLE.c.digest.is_not(None) & unleased)
        async with self.db.connect() as conn:
            rows = await conn.execute(query)
            return [(_spec(r, r.temp_name), r.bytes_done, r.digest or "") for r in rows]


async def retire_held(conn: Connection, leases: Sequence[JobLease]) -> set[int]:
    """Delete finished jobs still held under these leases, in the caller's transaction (the
    document rows are committed with it); returns the ids retired."""
    retired: set[int] = set()
    for owner, held in _by_owner(leases).items():
        statement = delete(TABLE).where(_held_all(owner, held)).returning(TABLE.c.id)
        retired.update((await conn.scalars(statement)).all())
    return retired


async def retire_unleased(conn: Connection, job_id: int, now: float) -> bool:
    """Delete a job no live lease holds (start-up adopting its placed file); False if held."""
    unleased = TABLE.c.owner.is_(None) | (func.coalesce(TABLE.c.lease_until, 0) < now)
    result = await conn.execute(delete(TABLE).where((TABLE.c.id == job_id) & unleased))
    return bool(cast(Any, result).rowcount)


async def drop_for_documents(conn: Connection, source: str, remote_ids: Sequence[str]) -> None:
    """Delete the jobs of documents that need no download any more (skipped or removed).

    A replica downloading one of them finds its fence gone and stops.
    """
    await conn.execute(
        delete(TABLE).where(TABLE.c.source == source, TABLE.c.remote_id.in_(list(remote_ids)))
    )


def _held(lease: JobLease) -> ColumnElement[bool]:
    """The fence: the WHERE clause of every write a holder makes to its job."""
    return (
        (TABLE.c.id == lease.job_id)
        & (TABLE.c.owner == lease.owner)
        & (TABLE.c.attempt == lease.attempt)
    )


def _held_all(owner: str, leases: Collection[JobLease]) -> ColumnElement[bool]:
    """The fence of a batch of one owner's leases."""
    pairs = [(lease.job_id, lease.attempt) for lease in leases]
    return (TABLE.c.owner == owner) & tuple_(TABLE.c.id, TABLE.c.attempt).in_(pairs)


def _by_owner(leases: Collection[JobLease]) -> dict[str, list[JobLease]]:
    grouped: dict[str, list[JobLease]] = {}
    for lease in leases:
        grouped.setdefault(lease.owner, []).append(lease)
    return grouped


def _workable(source: str) -> ColumnElement[bool]:
    """Jobs of the source a replica can download (rows from before 0004 carry no document
    until a pass queues them again)."""
    return (TABLE.c.source == source) & TABLE.c.doc_json.is_not(None)


def _claimable(now: float, busy: Collection[int]) -> ColumnElement[bool]:
    lapsed = (TABLE.c.state == JobState.ACTIVE) & (func.coalesce(TABLE.c.lease_until, 0) < now)
    if busy:
        lapsed &= TABLE.c.id.not_in(list(busy))
    return TABLE.c.doc_json.is_not(None) & ((TABLE.c.state == JobState.QUEUED) | lapsed)


async def _enqueue(
    conn: AsyncConnection, source: str, items: Sequence[tuple[RemoteDocument, str]], now: float
) -> int:
    wanted = {doc.remote_id: (doc, rel_path) for doc, rel_path in items}
    mine = (TABLE.c.source == source) & TABLE.c.remote_id.in_(list(wanted))
    columns = (TABLE.c.id, TABLE.c.remote_id, TABLE.c.version, TABLE.c.state)
    existing = {r.remote_id: r for r in await conn.execute(select(*columns).where(mine))}
    stale = [r.id for rid, r in existing.items() if r.version != wanted[rid][0].version]
    if stale:
        await conn.execute(delete(TABLE).where(TABLE.c.id.in_(stale)))
    fresh = [
        _new_job(source, doc, rel_path, now)
        for rid, (doc, rel_path) in wanted.items()
        if rid not in existing or existing[rid].id in stale
    ]
    if fresh:
        await conn.execute(insert(TABLE), fresh)
    again = [
        {"job_id": r.id, **_queued_values(*wanted[rid])}
        for rid, r in existing.items()
        if r.id not in stale and r.state != JobState.ACTIVE
    ]
    if again:
        values: dict[str, Any] = {k: bindparam(k) for k in again[0] if k != "job_id"}
        statement = update(TABLE).where(TABLE.c.id == bindparam("job_id")).values(values)
        await conn.execute(statement.values(state=JobState.QUEUED, updated_at=now), again)
    return len(fresh) + len(again)


def _queued_values(doc: RemoteDocument, rel_path: str) -> dict[str, Any]:
    return {
        "rel_path": rel_path,
        "path_key": path_key(rel_path),
        "doc_json": _doc_json(doc),
        "owner": None,
        "lease_until": None,
    }


def _new_job(source: str, doc: RemoteDocument, rel_path: str, now: float) -> dict[str, Any]:
    return {
        "source": source,
        "remote_id": doc.remote_id,
        "version": doc.version,
        "rel_path": rel_path,
        "path_key": path_key(rel_path),
        "attrs_json": json.dumps(dict(doc.attrs), sort_keys=True),
        "doc_json": _doc_json(doc),
        "state": JobState.QUEUED,
        "expected_size": doc.size,
        "bytes_done": 0,
        "temp_name": "",  # no bytes yet; each attempt names its own file
        "attempts": 0,
        "attempt": 0,
        "created_at": now,
        "updated_at": now,
    }


def _doc_json(doc: RemoteDocument) -> str:
    """The listed document as any replica needs it to download (attrs are kept apart)."""
    fields = {
        "name": doc.name,
        "folder": list(doc.folder),
        "size": doc.size,
        "modified": doc.modified.isoformat() if doc.modified else None,
        "locator": doc.locator,
        "external_url": doc.external_url,
        "metadata": doc.metadata,
        "prune": doc.prune_when_removed,
    }
    return json.dumps(fields, sort_keys=True, default=str)


def _document(row: Any) -> RemoteDocument:
    fields = json.loads(row.doc_json)
    modified = fields["modified"]
    return RemoteDocument(
        remote_id=row.remote_id,
        version=row.version,
        name=fields["name"],
        folder=tuple(fields["folder"]),
        size=fields["size"],
        modified=datetime.fromisoformat(modified) if modified else None,
        locator=fields["locator"],
        attrs=json.loads(row.attrs_json or "{}"),
        external_url=fields["external_url"],
        metadata=fields["metadata"],
        prune_when_removed=fields["prune"],
    )


def _claimed(row: Any, previous_owner: str | None) -> Claimed:
    """A claimed row; `previous_owner` is who held it before (None: nobody, or, on SQLite,
    a previous process: the instance lock says it is gone)."""
    own = partial_name(row.source, row.id, row.attempt)
    lease = JobLease(row.id, row.owner, row.attempt)
    partial = row.temp_name if row.temp_name and row.temp_name != own else None
    may_live = previous_owner is not None and previous_owner != row.owner
    return Claimed(_spec(row, own), _document(row), lease, partial, holder_may_live=may_live)


def _by_id(claimed: Claimed) -> int:
    return claimed.lease.job_id


def _spec(row: Any, temp_name: str) -> JobSpec:
    return JobSpec(
        job_id=row.id,
        source=row.source,
        remote_id=row.remote_id,
        version=row.version,
        rel_path=row.rel_path,
        attrs=json.loads(row.attrs_json or "{}"),
        expected_size=row.expected_size,
        validator=row.validator,
        temp_name=temp_name,
        digest=row.digest,
    )


def _view(r: Any) -> JobView:
    return JobView(
        r.source,
        r.remote_id,
        r.rel_path,
        r.state,
        r.bytes_done,
        r.expected_size,
        r.attempts,
        r.last_error,
        r.error_kind,
        r.next_retry_at,
        r.owner,
        r.lease_until,
    )
