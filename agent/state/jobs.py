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
failure, release, retirement) matches `id`, `owner` and `attempt` (`FENCE`). Once another
replica claimed the job, `attempt` moved on and the late holder's writes match nothing:
`LeaseLostError`, or the item drops out of a batch. Each attempt writes its own staging file
(`partial_name`), so two holders never write the same file.

The statements a job goes through on its way (claim, heartbeat, checkpoint, verification,
retirement) are built once, with bound parameters (a batch's leases as one expanding
`(id, attempt)` list): building and keying a statement per call, with a literal per job,
cost more CPU than running it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agent.errors import LeaseLostError
from agent.models import DocState, JobSpec, JobState, RemoteDocument
from agent.state.database import Database
from agent.state.job_records import (
    Claimed,
    JobLease,
    JobView,
    by_id,
    claimed,
    job_spec,
    job_view,
    new_job,
    partial_name,
    path_key,
    queued_values,
)
from agent.state.tables import DocumentRow, JobRow, PassLeaseRow

__all__ = ["Claimed", "JobLease", "JobView", "Jobs", "partial_name", "path_key"]

ENQUEUE_BATCH = 500  # job rows written per transaction
TABLE = cast(Table, JobRow.__table__)
DOCUMENTS = cast(Table, DocumentRow.__table__)
PASSES = cast(Table, PassLeaseRow.__table__)
Connection = AsyncConnection | AsyncSession

# The fence: the WHERE clause of every write a holder makes to its job (`_fence` binds it).
FENCE = (
    (TABLE.c.id == bindparam("job"))
    & (TABLE.c.owner == bindparam("holder"))
    & (TABLE.c.attempt == bindparam("claim"))
)
# The fence of a batch of one `holder`'s leases: `pairs` of (job id, attempt) (`_by_owner`).
HELD_ALL = (TABLE.c.owner == bindparam("holder")) & tuple_(TABLE.c.id, TABLE.c.attempt).in_(
    bindparam("pairs", expanding=True)
)
EXTEND = (
    update(TABLE)
    .where(HELD_ALL & (TABLE.c.state == JobState.ACTIVE))
    .values(lease_until=bindparam("until"))
    .returning(TABLE.c.id)
)
CHECKPOINT = (
    update(TABLE)
    .where(FENCE)
    .values(
        bytes_done=bindparam("done"),
        validator=bindparam("validator_"),
        temp_name=bindparam("temp"),
        updated_at=bindparam("at"),
    )
)
VERIFIED = (
    update(TABLE)
    .where(FENCE)
    .values(bytes_done=bindparam("done"), digest=bindparam("digest_"), temp_name=bindparam("temp"))
)
RELEASE = (
    update(TABLE)
    .where(FENCE)
    .values(
        state=JobState.QUEUED,
        owner=None,
        lease_until=None,
        temp_name=func.coalesce(bindparam("temp", type_=String), TABLE.c.temp_name),
        updated_at=bindparam("at"),
    )
)
RETIRE = delete(TABLE).where(HELD_ALL).returning(TABLE.c.id)


class Jobs:
    """The persisted download jobs and their leases."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLite has one process per state folder (the instance lock): the holder of a lease
        # it takes over is gone. On PostgreSQL it may be a stalled replica, still writing.
        self.exclusive = db.engine.dialect.name == "sqlite"
        self._claim_batch = _claim_statement(_claimable_batch(), exclusive=self.exclusive)
        # the rows of a batch of leases still held, locked against claims (PostgreSQL) until
        # the transaction ends, so a write that follows changes exactly these
        held = select(TABLE.c.id).where(HELD_ALL)
        self._lock_held = held if self.exclusive else held.with_for_update()

    # ------------------------------------------------------------ passes

    async def enqueue(
        self,
        source: str,
        items: Sequence[tuple[RemoteDocument, str]],
        *,
        restoring: Collection[str] = (),
    ) -> int:
        """Queue downloads of these document versions; returns how many are claimable now.

        A job keeps the attributes it was created with (`x-download-reason` and the like)
        for as long as it targets the same version; a new version starts a new job. A job
        leased to a replica is left to it. A document the state records mirrored at that
        version and path by now is not queued again: a job an earlier pass left queued was
        committed after this pass read the row (downloaded once, not twice), unless its id
        is in `restoring` (its mirrored file is gone and is fetched again).
        """
        queued = 0
        for start in range(0, len(items), ENQUEUE_BATCH):
            async with self.db.begin() as conn:
                batch = items[start : start + ENQUEUE_BATCH]
                queued += await _enqueue(conn, source, batch, self.db.clock(), restoring)
        return queued

    async def outstanding(self, source: str, owner: str) -> bool:
        """Is any job of the source still to be done here: queued, held by `owner`, or held
        by a lease that expired? (Jobs under another replica's live lease are its work.)"""
        now = self.db.clock()
        mine_or_lapsed = (TABLE.c.owner == owner) | (func.coalesce(TABLE.c.lease_until, 0) < now)
        waiting = (TABLE.c.state == JobState.QUEUED) | (
            (TABLE.c.state == JobState.ACTIVE) & mine_or_lapsed
        )
        workable = _workable(source) & ~_repairing(now)
        query = select(TABLE.c.id).where(workable & waiting).limit(1)
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
        params = {"sources": list(sources), "busy": list(busy), "limit": limit}
        async with self.db.begin() as conn:
            rows = await conn.execute(
                self._claim_batch, {**params, **_lease_values(owner, now, seconds)}
            )
            return _claimed_rows(rows, exclusive=self.exclusive)

    async def claim_document(
        self, owner: str, source: str, doc: RemoteDocument, rel_path: str, seconds: float
    ) -> Claimed | None:
        """Queue this document version and lease its job to `owner` in one transaction (an
        on-demand fetch: no worker can claim it in between); None while a live lease of
        another holder has it."""
        now = self.db.clock()
        where = _claimable(now, ()) & (TABLE.c.source == source)
        statement = _claim_statement(
            where & (TABLE.c.remote_id == doc.remote_id), exclusive=self.exclusive
        )
        async with self.db.begin() as conn:  # fetched now even when mirrored already
            await _enqueue(conn, source, [(doc, rel_path)], now, {doc.remote_id})
            rows = await conn.execute(statement, {"limit": 1, **_lease_values(owner, now, seconds)})
            found = _claimed_rows(rows, exclusive=self.exclusive)
        return found[0] if found else None

    async def extend(self, leases: Collection[JobLease], seconds: float) -> set[int]:
        """Heartbeat: extend these leases; returns the ids still held (the rest were lost)."""
        kept: set[int] = set()
        until = self.db.clock() + seconds
        async with self.db.begin() as conn:
            for owner, pairs in _by_owner(leases).items():
                params = {"holder": owner, "pairs": pairs, "until": until}
                kept.update((await conn.scalars(EXTEND, params)).all())
        return kept

    async def checkpoint(
        self, lease: JobLease, bytes_done: int, validator: str | None, temp_name: str
    ) -> None:
        """Persist how far the holder's staging file `temp_name` got (fenced)."""
        params = {
            **_fence(lease),
            "done": bytes_done,
            "validator_": validator,
            "temp": temp_name,
            "at": self.db.clock(),
        }
        async with self.db.begin() as conn:
            result = await conn.execute(CHECKPOINT, params)
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
        kept: set[int] = set()
        async with self.db.begin() as conn:
            for owner, pairs in _by_owner([lease for lease, *_ in items]).items():
                params = {"holder": owner, "pairs": pairs}
                kept.update((await conn.scalars(self._lock_held, params)).all())
            rows = [
                {**_fence(lease), "done": size, "digest_": digest, "temp": temp}
                for lease, size, digest, temp in items
                if lease.job_id in kept
            ]
            if rows:  # one statement, executed for each row (still fenced)
                await conn.execute(VERIFIED, rows)
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
            result = await conn.execute(update(TABLE).where(FENCE).values(values), _fence(lease))
        return bool(result.rowcount)

    async def release(self, items: Sequence[tuple[JobLease, str | None]]) -> None:
        """Give jobs back to the queue (fenced): (lease, the staging file holding their bytes,
        if this attempt wrote one). A released job's partial is safe to take over at once."""
        if not items:
            return
        now = self.db.clock()
        rows = [{**_fence(lease), "temp": temp, "at": now} for lease, temp in items]
        async with self.db.begin() as conn:
            await conn.execute(RELEASE, rows)

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
            return [job_view(r) for r in await conn.execute(query)]

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
        query = select(TABLE).where(TABLE.c.digest.is_not(None) & unleased & ~_repairing(now))
        async with self.db.connect() as conn:
            rows = await conn.execute(query)
            return [(job_spec(r, r.temp_name), r.bytes_done, r.digest or "") for r in rows]


async def retire_held(conn: Connection, leases: Sequence[JobLease]) -> set[int]:
    """Delete finished jobs still held under these leases, in the caller's transaction (the
    document rows are committed with it); returns the ids retired."""
    retired: set[int] = set()
    for owner, pairs in _by_owner(leases).items():
        retired.update((await conn.scalars(RETIRE, {"holder": owner, "pairs": pairs})).all())
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


def _fence(lease: JobLease) -> dict[str, Any]:
    """The parameters of `FENCE` for one lease."""
    return {"job": lease.job_id, "holder": lease.owner, "claim": lease.attempt}


def _by_owner(leases: Collection[JobLease]) -> dict[str, list[tuple[int, int]]]:
    """The parameters of `HELD_ALL`: each owner's (job id, attempt) pairs."""
    grouped: dict[str, list[tuple[int, int]]] = {}
    for lease in leases:
        grouped.setdefault(lease.owner, []).append((lease.job_id, lease.attempt))
    return grouped


def _workable(source: str) -> ColumnElement[bool]:
    """Jobs of the source a replica can download (rows from before 0004 carry no document
    until a pass queues them again)."""
    return (TABLE.c.source == source) & TABLE.c.doc_json.is_not(None)


def _repairing(now: float | BindParameter[float]) -> ColumnElement[bool]:
    """Jobs of a source `verify --repair` holds the pass lease of (`PassLeases.take`)."""
    held = select(PASSES.c.source).where(PASSES.c.repair & (PASSES.c.lease_until >= now))
    return TABLE.c.source.in_(held.scalar_subquery())


def _claimable(now: float, busy: Collection[int]) -> ColumnElement[bool]:
    lapsed = (TABLE.c.state == JobState.ACTIVE) & (func.coalesce(TABLE.c.lease_until, 0) < now)
    if busy:
        lapsed &= TABLE.c.id.not_in(list(busy))
    queued = (TABLE.c.state == JobState.QUEUED) | lapsed
    return TABLE.c.doc_json.is_not(None) & queued & ~_repairing(now)


def _claimable_batch() -> ColumnElement[bool]:
    """`_claimable` of the `sources`, with `at` for now and `busy` as bound parameters."""
    lapsed = (
        (TABLE.c.state == JobState.ACTIVE)
        & (func.coalesce(TABLE.c.lease_until, 0) < bindparam("at"))
        & TABLE.c.id.not_in(bindparam("busy", expanding=True))
    )
    return (
        TABLE.c.doc_json.is_not(None)
        & ((TABLE.c.state == JobState.QUEUED) | lapsed)
        & TABLE.c.source.in_(bindparam("sources", expanding=True))
        & ~_repairing(bindparam("at"))
    )


def _claim_statement(where: ColumnElement[bool], *, exclusive: bool) -> Any:
    """The claim (see the module docstring): lease up to `limit` jobs matching `where`, the
    oldest first, to `claimer` until `until`, returning their rows (on PostgreSQL with the
    owner each had before)."""
    values = {
        "state": JobState.ACTIVE,
        "owner": bindparam("claimer"),
        "lease_until": bindparam("until"),
        "attempt": TABLE.c.attempt + 1,
        "updated_at": bindparam("at"),
    }
    picked = select(TABLE.c.id).where(where).order_by(TABLE.c.id).limit(bindparam("limit"))
    if exclusive:
        statement = update(TABLE).where(TABLE.c.id.in_(picked.scalar_subquery()))
        return statement.values(values).returning(*TABLE.c)
    cte = (
        picked.add_columns(TABLE.c.owner.label("previous_owner"))
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    statement = update(TABLE).where(TABLE.c.id == cte.c.id).values(values)
    return statement.returning(*TABLE.c, cte.c.previous_owner)


def _lease_values(owner: str, now: float, seconds: float) -> dict[str, Any]:
    return {"claimer": owner, "until": now + seconds, "at": now}


def _claimed_rows(rows: Any, *, exclusive: bool) -> list[Claimed]:
    """The claimed jobs, oldest first (on SQLite nobody else held them: see `_claimed`)."""
    found = [claimed(r, None if exclusive else r.previous_owner) for r in rows]
    return sorted(found, key=by_id)


async def _enqueue(
    conn: AsyncConnection,
    source: str,
    items: Sequence[tuple[RemoteDocument, str]],
    now: float,
    restoring: Collection[str],
) -> int:
    wanted = {doc.remote_id: (doc, rel_path) for doc, rel_path in items}
    rows = (await conn.execute(_jobs_and_files(source, list(wanted)))).all()
    existing = {r.remote_id: r for r in rows if r.id is not None}
    for row in rows:  # a job committed after the pass read its row: mirrored as wanted
        rid = row.remote_id
        if row.id is None and rid not in existing and rid not in restoring:
            doc, rel_path = wanted[rid]
            if (row.version, row.path) == (doc.version, rel_path):
                del wanted[rid]
    stale = [r.id for rid, r in existing.items() if r.version != wanted[rid][0].version]
    if stale:
        await conn.execute(delete(TABLE).where(TABLE.c.id.in_(stale)))
    fresh = [
        new_job(source, doc, rel_path, now)
        for rid, (doc, rel_path) in wanted.items()
        if rid not in existing or existing[rid].id in stale
    ]
    if fresh:
        await conn.execute(insert(TABLE), fresh)
    again = [
        {"job_id": r.id, **queued_values(*wanted[rid])}
        for rid, r in existing.items()
        if r.id not in stale and r.state != JobState.ACTIVE
    ]
    if again:
        values: dict[str, Any] = {k: bindparam(k) for k in again[0] if k != "job_id"}
        statement = update(TABLE).where(TABLE.c.id == bindparam("job_id")).values(values)
        await conn.execute(statement.values(state=JobState.QUEUED, updated_at=now), again)
    return len(fresh) + len(again)


def _jobs_and_files(source: str, ids: list[str]) -> Any:
    """The jobs of these documents and, with no job id, the rows of those whose file is
    mirrored: one statement, so one snapshot on PostgreSQL too (a job committed meanwhile
    shows as a job or as a file, never as neither)."""
    jobs = select(
        TABLE.c.id, TABLE.c.remote_id, TABLE.c.version, TABLE.c.state, null().label("path")
    ).where((TABLE.c.source == source) & TABLE.c.remote_id.in_(ids))
    files = select(
        null(), DOCUMENTS.c.remote_id, DOCUMENTS.c.version, null(), DOCUMENTS.c.rel_path
    ).where(
        (DOCUMENTS.c.source == source)
        & DOCUMENTS.c.remote_id.in_(ids)
        & (DOCUMENTS.c.state == DocState.MIRRORED)
    )
    return union_all(jobs, files)
