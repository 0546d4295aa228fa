"""The documents table: what the planner knows of each remote document and its mirrored file.

Rows are written when a file is committed to the mirror (with its job retired in the same
transaction, fenced by the job's lease), when a document is skipped, failed, moved or
removed, and when start-up adopts a file a crash left in place. Reads return plain data,
a window of documents at a time: a pass never holds a whole source's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent.models import DocState, JobSpec, KnownDocument, RemoteDocument
from agent.state import jobs
from agent.state.database import Database
from agent.state.tables import DocumentRow, JobRow

CHUNK = 500  # remote ids per IN (...) list
TABLE = cast(Table, DocumentRow.__table__)


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A verified file now in place, to be committed to the state (if its lease holds)."""

    lease: jobs.JobLease
    doc: RemoteDocument
    rel_path: str
    size: int
    sha256: str
    mtime_ns: int
    metadata_json: str | None
    metadata_hash: str | None


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """One document's row, as plain data."""

    remote_id: str
    version: str
    name: str
    rel_path: str | None
    state: DocState
    size: int | None
    sha256: str | None
    mtime_ns: int | None
    reason: str | None
    external_url: str | None
    metadata_hash: str | None
    prune: bool


DocumentState = tuple[RemoteDocument, DocState, str | None, str | None]


class Documents:
    """The remote documents of every source and where each stands in the mirror."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(
        self, source: str, remote_ids: Collection[str] | None = None
    ) -> dict[str, KnownDocument]:
        """What the planner needs of these documents (all of the source's when None)."""
        query = _known_query(source, self.db.clock())
        known: dict[str, KnownDocument] = {}
        async with self.db.connect() as conn:
            if remote_ids is None:
                rows = await conn.stream(query.execution_options(yield_per=2000))
                async for row in rows:
                    known[row.remote_id] = _known(row)
                return known
            for chunk in _chunks(list(remote_ids)):
                for row in await conn.execute(query.where(TABLE.c.remote_id.in_(chunk))):
                    known[row.remote_id] = _known(row)
        return known

    async def holders(self, source: str, keys: Collection[str]) -> dict[str, set[str]]:
        """Who holds these path keys (`jobs.path_key`): documents mirrored there, and jobs
        that will place a file there. Keyed by path key, the ids of the holders."""
        found: dict[str, set[str]] = {}
        async with self.db.connect() as conn:
            for chunk in _chunks(list(keys)):
                mirrored = select(TABLE.c.path_key, TABLE.c.remote_id).where(
                    TABLE.c.source == source,
                    TABLE.c.state == DocState.MIRRORED,
                    TABLE.c.path_key.in_(chunk),
                )
                queued = select(JobRow.path_key, JobRow.remote_id).where(
                    JobRow.source == source, JobRow.path_key.in_(chunk)
                )
                for key, rid in await conn.execute(mirrored.union_all(queued)):
                    found.setdefault(key, set()).add(rid)
        return found

    async def unlisted(self, source: str, listed: Collection[str]) -> AsyncIterator[KnownDocument]:
        """Documents of the source not in `listed` and not marked removed yet, streamed."""
        query = _known_query(source, self.db.clock()).where(TABLE.c.state != DocState.REMOVED)
        async with self.db.connect() as conn:
            rows = await conn.stream(query.execution_options(yield_per=2000))
            async for row in rows:
                if row.remote_id not in listed:
                    yield _known(row)

    async def recorded_sha256(self, source: str, remote_ids: Sequence[str]) -> dict[str, str]:
        """The sha256 the agent recorded for these documents' mirrored files."""
        found: dict[str, str] = {}
        async with self.db.connect() as conn:
            for chunk in _chunks(remote_ids):
                rows = await conn.execute(
                    select(TABLE.c.remote_id, TABLE.c.sha256).where(
                        TABLE.c.source == source,
                        TABLE.c.remote_id.in_(chunk),
                        TABLE.c.sha256.is_not(None),
                    )
                )
                found.update({rid: sha for rid, sha in rows if sha})
        return found

    async def get(self, source: str, remote_id: str) -> DocumentRecord | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(TABLE).where(TABLE.c.source == source, TABLE.c.remote_id == remote_id)
                )
            ).first()
        return None if row is None else _record(row)

    async def commit_mirrored(self, source: str, items: Sequence[Mirrored]) -> list[Mirrored]:
        """Record files that are now in place, and retire their jobs, in one transaction.

        Only items whose job is still held under their lease are committed (and returned):
        a replica that lost a job to another cannot commit it a second time.
        """
        if not items:
            return []
        now = self.db.clock()
        async with self.db.begin() as conn:
            retired = await jobs.retire_held(conn, [m.lease for m in items])
            items = [m for m in items if m.lease.job_id in retired]
            if not items:
                return []
            values = [_mirrored_values(source, item, now) for item in items]
            found = await conn.execute(
                select(TABLE.c.remote_id, TABLE.c.id).where(
                    TABLE.c.source == source,
                    TABLE.c.remote_id.in_([v["remote_id"] for v in values]),
                )
            )
            ids: dict[str, int] = dict(found.all())  # a Result is not a mapping: rows first
            fresh = [v for v in values if v["remote_id"] not in ids]
            known = [{**v, "row_id": ids[v["remote_id"]]} for v in values if v["remote_id"] in ids]
            if fresh:
                await conn.execute(insert(TABLE), fresh)
            if known:
                columns: dict[str, Any] = {
                    k: bindparam(k) for k in values[0] if k not in ("source", "remote_id")
                }
                statement = update(TABLE).where(TABLE.c.id == bindparam("row_id")).values(columns)
                await conn.execute(statement, known)
        return list(items)

    async def record_states(self, source: str, docs: Iterable[DocumentState]) -> None:
        """Upsert (doc, state, reason, rel_path) for skipped, pending or failed documents."""
        docs = list(docs)
        if not docs:
            return
        now = self.db.clock()
        async with self.db.transaction() as s:
            existing = await _rows(s, source, [d.remote_id for d, *_ in docs])
            for doc, state, reason, rel_path in docs:
                row = existing.get(doc.remote_id) or _new_row(source, doc, now)
                if state == DocState.SKIPPED or row.state != DocState.MIRRORED:
                    row.version = doc.version
                row.name, row.state, row.reason = doc.name, state, reason
                row.external_url = doc.external_url
                row.rel_path = rel_path or row.rel_path
                row.path_key = None if row.rel_path is None else jobs.path_key(row.rel_path)
                row.updated_at = now
                s.add(row)
            skipped = [d.remote_id for d, st, _, _ in docs if st == DocState.SKIPPED]
            if skipped:
                await jobs.drop_for_documents(s, source, skipped)

    async def record_metadata(
        self, source: str, remote_id: str, metadata_json: str | None, metadata_hash: str | None
    ) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(TABLE)
                .where(TABLE.c.source == source, TABLE.c.remote_id == remote_id)
                .values(metadata_json=metadata_json, metadata_hash=metadata_hash)
            )

    async def record_removed(self, source: str, remote_ids: Sequence[str]) -> None:
        if not remote_ids:
            return
        now = self.db.clock()
        async with self.db.begin() as conn:
            for chunk in _chunks(remote_ids):
                await conn.execute(
                    update(TABLE)
                    .where(TABLE.c.source == source, TABLE.c.remote_id.in_(chunk))
                    .values(state=DocState.REMOVED, updated_at=now)
                )
                await jobs.drop_for_documents(conn, source, chunk)

    async def record_moves(self, source: str, moves: Sequence[tuple[str, str, str]]) -> None:
        """(remote_id, new name, new rel_path) for documents moved in the mirror."""
        now = self.db.clock()
        async with self.db.begin() as conn:
            for remote_id, name, rel_path in moves:
                await conn.execute(
                    update(TABLE)
                    .where(TABLE.c.source == source, TABLE.c.remote_id == remote_id)
                    .values(
                        name=name,
                        rel_path=rel_path,
                        path_key=jobs.path_key(rel_path),
                        updated_at=now,
                    )
                )

    async def adopt_placed(self, job: JobSpec, size: int, sha256: str, mtime_ns: int) -> bool:
        """Record a file the job had renamed into place before its row was committed.

        Refuses (returns False) when the file is the document's previous version (the row
        already holds its sha256 for another version), or when a replica holds the job now.
        """
        async with self.db.transaction() as s:
            row = (await _rows(s, job.source, [job.remote_id])).get(job.remote_id)
            if row is not None and row.sha256 == sha256 and row.version != job.version:
                return False
            if not await jobs.retire_unleased(s, job.job_id, self.db.clock()):
                return False
            if row is None:
                row = DocumentRow(
                    source=job.source,
                    remote_id=job.remote_id,
                    name=Path(job.rel_path).name,
                    state=DocState.PENDING,
                )
                s.add(row)
            row.version, row.rel_path = job.version, job.rel_path
            row.path_key = jobs.path_key(job.rel_path)
            row.state, row.reason, row.updated_at = DocState.MIRRORED, None, self.db.clock()
            row.size, row.sha256, row.mtime_ns = size, sha256, mtime_ns
            return True


async def _rows(s: AsyncSession, source: str, remote_ids: Sequence[str]) -> dict[str, DocumentRow]:
    found: dict[str, DocumentRow] = {}
    for chunk in _chunks(remote_ids):
        rows = await s.scalars(
            select(DocumentRow).where(
                DocumentRow.source == source, DocumentRow.remote_id.in_(chunk)
            )
        )
        found.update({row.remote_id: row for row in rows})
    return found


def _mirrored_values(source: str, item: Mirrored, now: float) -> dict[str, Any]:
    return {
        "source": source,
        "remote_id": item.doc.remote_id,
        "version": item.doc.version,
        "name": item.doc.name,
        "rel_path": item.rel_path,
        "path_key": jobs.path_key(item.rel_path),
        "size": item.size,
        "sha256": item.sha256,
        "mtime_ns": item.mtime_ns,
        "state": DocState.MIRRORED,
        "reason": None,
        "external_url": None,
        "metadata_json": item.metadata_json,
        "metadata_hash": item.metadata_hash,
        "prune": item.doc.prune_when_removed,
        "updated_at": now,
    }


def _new_row(source: str, doc: RemoteDocument, now: float) -> DocumentRow:
    return DocumentRow(
        source=source,
        remote_id=doc.remote_id,
        version=doc.version,
        name=doc.name,
        state=DocState.PENDING,
        updated_at=now,
    )


def _record(row: Any) -> DocumentRecord:
    return DocumentRecord(
        row.remote_id,
        row.version,
        row.name,
        row.rel_path,
        DocState(row.state),
        row.size,
        row.sha256,
        row.mtime_ns,
        row.reason,
        row.external_url,
        row.metadata_hash,
        row.prune,
    )


def _known_query(source: str, now: float) -> Any:
    """Documents of a source with what the planner needs, and the version a failed job of
    theirs waits to retry (until its time comes)."""
    waiting = and_(
        JobRow.source == TABLE.c.source,
        JobRow.remote_id == TABLE.c.remote_id,
        JobRow.next_retry_at > now,
    )
    return (
        select(
            TABLE.c.remote_id,
            TABLE.c.version,
            TABLE.c.rel_path,
            TABLE.c.state,
            TABLE.c.size,
            TABLE.c.metadata_hash,
            JobRow.version.label("waiting_version"),
            TABLE.c.prune,
            TABLE.c.mtime_ns,
        )
        .outerjoin(JobRow, waiting)
        .where(TABLE.c.source == source)
    )


def _known(row: Any) -> KnownDocument:
    return KnownDocument(
        row.remote_id,
        row.version,
        row.rel_path,
        DocState(row.state),
        row.size,
        row.metadata_hash,
        row.waiting_version,
        row.prune,
        row.mtime_ns,
    )


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
