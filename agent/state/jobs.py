"""The download job queue: claiming jobs for a pass, checkpoints, failures, start-up recovery.

A job is one document version on its way into the mirror; it survives restarts so a download
resumes from its persisted offset. Every change to a job row is a statement in this module,
and every statement on one job goes through `_one(job_id)`: a lease (owner, lease_until,
attempt columns) adds its claim to `claim` and its fence to `_one`, nothing else moves.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Table,
    bindparam,
    case,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agent.models import JobSpec, JobState, RemoteDocument
from agent.state.database import Database
from agent.state.tables import JobRow

CLAIM_BATCH = 500  # job rows claimed per transaction
TABLE = cast(Table, JobRow.__table__)


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


class Jobs:
    """The persisted download jobs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim_one(self, source: str, doc: RemoteDocument, rel_path: str) -> JobSpec:
        """The job for one document version (see `claim`)."""
        return (await self.claim(source, [(doc, rel_path)]))[doc.remote_id]

    async def claim(
        self, source: str, items: Sequence[tuple[RemoteDocument, str]]
    ) -> dict[str, JobSpec]:
        """The jobs for these document versions, marked active: persisted ones when resuming,
        else new ones.

        A job keeps the attributes it was created with (`x-download-reason` and the like)
        for as long as it targets the same version; a new version starts a new job.
        """
        jobs: dict[str, JobSpec] = {}
        for start in range(0, len(items), CLAIM_BATCH):
            async with self.db.begin() as conn:
                batch = items[start : start + CLAIM_BATCH]
                jobs.update(await _claim(conn, source, batch, self.db.clock()))
        return jobs

    async def mark_verified(self, items: Sequence[tuple[int, int, str]]) -> None:
        """(job id, size, sha256) of files about to be renamed into place.

        Written before the rename, so that start-up can adopt a file a crash left in place
        before its document row was committed, after checking its sha256.
        """
        if not items:
            return
        statement = (
            update(TABLE)
            .where(_one(bindparam("job_id")))
            .values(bytes_done=bindparam("size"), sha256=bindparam("digest"))
        )
        async with self.db.begin() as conn:
            await conn.execute(
                statement, [{"job_id": j, "size": n, "digest": d} for j, n, d in items]
            )

    async def checkpoint(self, job_id: int, bytes_done: int, validator: str | None) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(TABLE)
                .where(_one(job_id))
                .values(bytes_done=bytes_done, validator=validator, updated_at=self.db.clock())
            )

    async def failed(
        self,
        job_id: int,
        *,
        kind: str,
        error: str,
        permanent: bool,
        retry_in: float,
        bytes_done: int,
    ) -> None:
        now = self.db.clock()
        async with self.db.begin() as conn:
            await conn.execute(
                update(TABLE)
                .where(_one(job_id))
                .values(
                    state=JobState.FAILED if permanent else JobState.RETRY,
                    attempts=TABLE.c.attempts + 1,
                    error_kind=kind,
                    last_error=error,
                    next_retry_at=now + retry_in,
                    bytes_done=bytes_done,
                    updated_at=now,
                )
            )

    async def attempts(self, job_id: int) -> int:
        async with self.db.connect() as conn:
            return int(await conn.scalar(select(TABLE.c.attempts).where(_one(job_id))) or 0)

    async def views(self, source: str | None = None) -> list[JobView]:
        """Every job (of one source, when given), ordered by source and age."""
        query = select(TABLE).order_by(TABLE.c.source, TABLE.c.id)
        if source is not None:
            query = query.where(TABLE.c.source == source)
        async with self.db.connect() as conn:
            return [_view(r) for r in await conn.execute(query)]

    async def temp_names(self) -> set[str]:
        """The staging file names jobs own (every other staging file is stale)."""
        async with self.db.connect() as conn:
            return set((await conn.scalars(select(TABLE.c.temp_name))).all())

    async def requeue_interrupted(self) -> list[JobSpec]:
        """Jobs that were active when the last process stopped, queued again."""
        async with self.db.begin() as conn:
            active = TABLE.c.state == JobState.ACTIVE
            rows = (await conn.execute(select(TABLE).where(active))).all()
            await conn.execute(update(TABLE).where(active).values(state=JobState.QUEUED))
            return [_spec(r) for r in rows]

    async def verified(self) -> list[tuple[JobSpec, int, str]]:
        """Jobs whose bytes were verified for a rename: (job, size, sha256)."""
        async with self.db.connect() as conn:
            rows = await conn.execute(select(TABLE).where(TABLE.c.sha256.is_not(None)))
            return [(_spec(r), r.bytes_done, r.sha256 or "") for r in rows]


async def retire(conn: AsyncConnection | AsyncSession, job_ids: Sequence[int]) -> None:
    """Delete finished jobs, in the caller's transaction (the document row is committed with it)."""
    await conn.execute(delete(TABLE).where(TABLE.c.id.in_(list(job_ids))))


async def drop_for_documents(
    conn: AsyncConnection | AsyncSession, source: str, remote_ids: Sequence[str]
) -> None:
    """Delete the jobs of documents that need no download any more (skipped or removed)."""
    await conn.execute(
        delete(TABLE).where(TABLE.c.source == source, TABLE.c.remote_id.in_(list(remote_ids)))
    )


def _one(job_id: int | BindParameter[int]) -> ColumnElement[bool]:
    """The WHERE clause of every statement on one job (where a lease fence will go)."""
    return JobRow.id == job_id


async def _claim(
    conn: AsyncConnection, source: str, items: Sequence[tuple[RemoteDocument, str]], now: float
) -> dict[str, JobSpec]:
    wanted = {doc.remote_id: (doc, rel_path) for doc, rel_path in items}
    mine = (TABLE.c.source == source) & TABLE.c.remote_id.in_(list(wanted))
    existing = {r.remote_id: r for r in await conn.execute(select(TABLE).where(mine))}
    stale = [r.id for rid, r in existing.items() if r.version != wanted[rid][0].version]
    if stale:
        await retire(conn, stale)
    fresh = [
        _new_job(source, doc, rel_path, now)
        for rid, (doc, rel_path) in wanted.items()
        if rid not in existing or existing[rid].id in stale
    ]
    if fresh:
        await conn.execute(insert(TABLE), fresh)
    await conn.execute(
        update(TABLE)
        .where(mine)
        .values(state=JobState.ACTIVE, rel_path=_rel_path_case(wanted), updated_at=now)
    )
    return {r.remote_id: _spec(r) for r in await conn.execute(select(TABLE).where(mine))}


def _rel_path_case(wanted: Mapping[str, tuple[RemoteDocument, str]]) -> Any:
    return case({rid: path for rid, (_, path) in wanted.items()}, value=TABLE.c.remote_id)


def _new_job(source: str, doc: RemoteDocument, rel_path: str, now: float) -> dict[str, Any]:
    return {
        "source": source,
        "remote_id": doc.remote_id,
        "version": doc.version,
        "rel_path": rel_path,
        "attrs_json": json.dumps(dict(doc.attrs), sort_keys=True),
        "state": JobState.QUEUED,
        "expected_size": doc.size,
        "bytes_done": 0,
        "temp_name": f"{source}-{uuid.uuid4().hex}.part",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def _spec(row: Any) -> JobSpec:
    return JobSpec(
        job_id=row.id,
        source=row.source,
        remote_id=row.remote_id,
        version=row.version,
        rel_path=row.rel_path,
        attrs=json.loads(row.attrs_json or "{}"),
        expected_size=row.expected_size,
        validator=row.validator,
        temp_name=row.temp_name,
        sha256=row.sha256,
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
    )
