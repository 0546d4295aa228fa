"""The documents table: what the planner knows of each remote document and its mirrored file.

Rows are written when a file is committed to the mirror (with its job retired in the same
transaction, fenced by the job's lease), when a document is skipped, failed, moved or
removed, and when start-up adopts a file a crash left in place. Each of these changes is
journaled in its own transaction (`agent.state.journal`: the append is the transaction's
last statement, `publish` follows the commit). Reads return plain data, a window of
documents at a time: a pass never holds a whole source's rows.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent.models import DocState, JobSpec, KnownDocument, RemoteDocument
from agent.state import document_events as changes
from agent.state import document_queries as queries
from agent.state import jobs
from agent.state.database import Database
from agent.state.journal import EMPTY, Journal, NewEvent
from agent.state.tables import DocumentRow, JobRow

CHUNK = 500  # remote ids per IN (...) list
STREAM = 2000  # rows fetched at a time when streaming a whole source
SETTLED_CHUNK = 1000  # listed documents compared per statement (4 parameters each)
TABLE = cast(Table, DocumentRow.__table__)


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A verified file now in place, to be committed to the state (if its lease holds)."""

    lease: jobs.JobLease
    doc: RemoteDocument
    rel_path: str
    size: int
    digest: str
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
    digest: str | None
    mtime_ns: int | None
    reason: str | None
    external_url: str | None
    metadata_hash: str | None
    prune: bool


DocumentState = tuple[RemoteDocument, DocState, str | None, str | None]


class Documents:
    """The remote documents of every source and where each stands in the mirror."""

    def __init__(self, db: Database, journal: Journal) -> None:
        self.db = db
        self.journal = journal

    async def known(
        self, source: str, remote_ids: Collection[str] | None = None
    ) -> dict[str, KnownDocument]:
        """What the planner needs of these documents (all of the source's when None)."""
        params = {"source": source, "now": self.db.clock()}
        known: dict[str, KnownDocument] = {}
        async with self.db.connect() as conn:
            if remote_ids is None:
                rows = await conn.stream(queries.KNOWN.execution_options(yield_per=STREAM), params)
                async for partition in rows.partitions():
                    known.update((row[0], queries.known(row)) for row in partition)
                return known
            for chunk in _chunks(list(remote_ids)):
                for row in await conn.execute(queries.KNOWN_OF, {**params, "ids": chunk}):
                    known[row[0]] = queries.known(row)
        return known

    async def unsettled(
        self,
        source: str,
        ids: Sequence[str],
        versions: Sequence[str],
        paths: Sequence[str],
        digests: Sequence[str | None] = (),
    ) -> set[str]:
        """The ids of these listed documents whose row is not exactly what the listing says:
        mirrored, at that version, at that path, with that metadata hash (when one is given).
        The others need nothing from a pass. The database compares: a re-poll of an
        unchanged source sends its ids and gets nothing back, with no row built in Python.

        The listed documents come as columns of one length (no metadata hashes at all:
        `digests` empty), bound with no tuple built per document.
        """
        if not len(ids) == len(versions) == len(paths) or (digests and len(digests) != len(ids)):
            raise ValueError("the listed documents' columns differ in length")
        found: set[str] = set()
        async with self.db.connect() as conn:
            style = conn.dialect.paramstyle
            for start in range(0, len(ids), SETTLED_CHUNK):
                end = start + SETTLED_CHUNK
                columns: list[Sequence[str | None]] = [
                    ids[start:end],
                    versions[start:end],
                    paths[start:end],
                ]
                hashes = digests[start:end]
                metadata = any(h is not None for h in hashes)
                if metadata:  # else fewer to bind
                    columns.append(hashes)
                params = (*itertools.chain.from_iterable(zip(*columns, strict=True)), source)
                sql = queries.unsettled_sql(style, len(columns[0]), metadata=metadata)
                result = await conn.exec_driver_sql(sql, params)
                found.update(row[0] for row in result)
        return found

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

    async def unremoved(self, source: str) -> int:
        """How many documents of the source are not marked removed."""
        count = select(func.count()).where(
            TABLE.c.source == source, TABLE.c.state != DocState.REMOVED
        )
        async with self.db.connect() as conn:
            return int((await conn.execute(count)).scalar_one())

    async def unlisted(self, source: str, listed: Collection[str]) -> AsyncIterator[KnownDocument]:
        """Documents of the source not in `listed` and not marked removed yet, streamed
        (only their ids are read for every document; whole rows for the unlisted)."""
        ids = select(TABLE.c.remote_id).where(
            TABLE.c.source == source, TABLE.c.state != DocState.REMOVED
        )
        async with self.db.connect() as conn:
            found = await conn.stream_scalars(ids.execution_options(yield_per=STREAM))
            async for partition in found.partitions():  # one hop to the driver per partition
                gone = [rid for rid in partition if rid not in listed]
                if gone:
                    for known in (await self.known(source, gone)).values():
                        yield known

    async def recorded_digests(self, source: str, remote_ids: Sequence[str]) -> dict[str, str]:
        """The digests the agent recorded for these documents' mirrored files."""
        found: dict[str, str] = {}
        async with self.db.connect() as conn:
            for chunk in _chunks(remote_ids):
                rows = await conn.execute(
                    select(TABLE.c.remote_id, TABLE.c.digest).where(
                        TABLE.c.source == source,
                        TABLE.c.remote_id.in_(chunk),
                        TABLE.c.digest.is_not(None),
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

    async def commit_mirrored(
        self,
        source: str,
        items: Sequence[Mirrored],
        *,
        kept: Mapping[str, str] = EMPTY,
        note: Mapping[str, object] = EMPTY,
    ) -> list[Mirrored]:
        """Record files that are now in place, and retire their jobs, in one transaction.

        Only items whose job is still held under their lease are committed (and returned):
        a replica that lost a job to another cannot commit it a second time. Journaled with
        them: `document.added` or `document.updated` (with `note` in its data), after
        `document.local_copy_kept` for a document whose local edit was moved aside (`kept`:
        remote id -> the name of the copy, beside the file).
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
                select(TABLE.c.remote_id, TABLE.c.id, TABLE.c.version, TABLE.c.digest).where(
                    TABLE.c.source == source,
                    TABLE.c.remote_id.in_([v["remote_id"] for v in values]),
                )
            )
            rows = found.all()
            before = {rid: (version, sha) for rid, _, version, sha in rows}
            ids: dict[str, int] = {rid: row_id for rid, row_id, _, _ in rows}
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
            events = [
                e for m in items for e in changes.mirrored_events(source, m, before, kept, note)
            ]
            committed = await self.journal.append(conn, events)
        self.journal.publish(committed)
        return list(items)

    async def record_states(self, source: str, docs: Iterable[DocumentState]) -> None:
        """Upsert (doc, state, reason, rel_path) for skipped, pending or failed documents.

        `rel_path` (where the document's job was to put it) is recorded only for a row that
        records no file: a row whose file is in the mirror keeps that file's path, so a
        failed download of a renamed version moves nothing (the journal's `document.failed`
        names the path the download was for)."""
        docs = list(docs)
        if not docs:
            return
        now = self.db.clock()
        failed = []
        async with self.db.transaction() as s:
            existing = await _rows(s, source, [d.remote_id for d, *_ in docs])
            for doc, state, reason, rel_path in docs:
                row = existing.get(doc.remote_id) or _new_row(source, doc, now)
                if state == DocState.SKIPPED or row.state != DocState.MIRRORED:
                    row.version = doc.version
                row.name, row.state, row.reason = doc.name, state, reason
                row.external_url = doc.external_url
                if rel_path and row.digest is None:  # else the row's file is still there
                    row.rel_path = rel_path
                row.path_key = None if row.rel_path is None else jobs.path_key(row.rel_path)
                row.updated_at = now
                s.add(row)
                if state == DocState.FAILED:
                    failed.append(
                        changes.failed_event(source, doc, rel_path or row.rel_path, reason)
                    )
            skipped = [d.remote_id for d, st, _, _ in docs if st == DocState.SKIPPED]
            if skipped:
                await jobs.drop_for_documents(s, source, skipped)
            await s.flush()  # the rows before the journal: its append stays the last statement
            committed = await self.journal.append(s, failed)
        self.journal.publish(committed)

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
        """Mark documents gone from the listing removed, journaling `document.removed`.

        The only way a row leaves the documents not removed (no row is ever deleted): the
        end of a pass relies on it to skip reading their ids when it found all of them
        listed (`Lister._remove_unlisted`)."""
        await self._restate(source, remote_ids, DocState.REMOVED, changes.removed_event)

    async def record_returned(self, source: str, remote_ids: Sequence[str]) -> None:
        """Mark removed documents listed again, their files still in place, mirrored once
        more, journaling `document.added` (the file is back in the mirror's truth)."""
        await self._restate(
            source, remote_ids, DocState.MIRRORED, changes.returned_event, only=DocState.REMOVED
        )

    async def _restate(
        self,
        source: str,
        remote_ids: Sequence[str],
        state: DocState,
        event: Callable[[str, Any], NewEvent],
        *,
        only: DocState | None = None,
    ) -> None:
        """Put these documents' rows (those in state `only`, when given) in `state`, drop
        their jobs, and journal `event` for each row that changed."""
        if not remote_ids:
            return
        now = self.db.clock()
        events = []
        async with self.db.begin() as conn:
            for chunk in _chunks(remote_ids):
                mine = (TABLE.c.source == source) & TABLE.c.remote_id.in_(chunk)
                if only is not None:
                    mine &= TABLE.c.state == only
                changing = select(TABLE).where(mine, TABLE.c.state != state)
                events += [event(source, row) for row in await conn.execute(changing)]
                await conn.execute(update(TABLE).where(mine).values(state=state, updated_at=now))
                await jobs.drop_for_documents(conn, source, chunk)
            committed = await self.journal.append(conn, events)
        self.journal.publish(committed)

    async def record_files_removed(
        self, source: str, removed: Sequence[tuple[str, Mapping[str, object]]]
    ) -> None:
        """(remote_id, data) for documents whose mirrored file the agent deleted while the
        document stays listed (a filter now leaves it out): the row forgets the file, and
        `document.removed` is journaled with `file_deleted` and `data`."""
        if not removed:
            return
        now = self.db.clock()
        events = []
        async with self.db.begin() as conn:
            for remote_id, data in removed:
                where = (TABLE.c.source == source) & (TABLE.c.remote_id == remote_id)
                row = (await conn.execute(select(TABLE).where(where))).first()
                if row is None or row.rel_path is None:
                    continue
                events.append(changes.file_removed_event(source, row, data))
                forget = {"rel_path": None, "size": None, "digest": None, "mtime_ns": None}
                await conn.execute(update(TABLE).where(where).values(**forget, updated_at=now))
            committed = await self.journal.append(conn, events)
        self.journal.publish(committed)

    async def record_moves(self, source: str, moves: Sequence[tuple[str, str, str]]) -> None:
        """(remote_id, new name, new rel_path) for documents moved in the mirror, journaling
        `document.moved`."""
        now = self.db.clock()
        events = []
        async with self.db.begin() as conn:
            for remote_id, name, rel_path in moves:
                where = (TABLE.c.source == source) & (TABLE.c.remote_id == remote_id)
                row = (await conn.execute(select(TABLE).where(where))).first()
                await conn.execute(
                    update(TABLE)
                    .where(where)
                    .values(
                        name=name,
                        rel_path=rel_path,
                        path_key=jobs.path_key(rel_path),
                        updated_at=now,
                    )
                )
                if row is not None:
                    events.append(changes.moved_event(source, row, rel_path))
            committed = await self.journal.append(conn, events)
        self.journal.publish(committed)

    async def adopt_placed(self, job: JobSpec, size: int, digest: str, mtime_ns: int) -> bool:
        """Record a file the job had renamed into place before its row was committed.

        Refuses (returns False) when the file is the document's previous version (the row
        already holds its digest for another version), or when a replica holds the job now.
        """
        async with self.db.transaction() as s:
            row = (await _rows(s, job.source, [job.remote_id])).get(job.remote_id)
            if row is not None and row.digest == digest and row.version != job.version:
                return False
            if not await jobs.retire_unleased(s, job.job_id, self.db.clock()):
                return False
            before = {} if row is None else {job.remote_id: (row.version, row.digest)}
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
            row.size, row.digest, row.mtime_ns = size, digest, mtime_ns
            await s.flush()
            adopted = changes.added(
                job.source, job.remote_id, job.version, job.rel_path, size=size, digest=digest
            )
            committed = await self.journal.append(
                s, [changes.added_or_updated(adopted, before, EMPTY)]
            )
        self.journal.publish(committed)
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
        "digest": item.digest,
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
        row.digest,
        row.mtime_ns,
        row.reason,
        row.external_url,
        row.metadata_hash,
        row.prune,
    )


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
