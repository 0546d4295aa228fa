"""The state store: one async interface over the state database, used by engine and sources."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from agent.errors import StateError
from agent.models import (
    DocState,
    JobSpec,
    JobState,
    KnownDocument,
    RemoteDocument,
)
from agent.state.source_state import StoredToken
from agent.state.tables import CursorRow, DocumentRow, JobRow, SourceRow, TokenRow

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0002"  # the newest migration; tests/test_schema.py keeps it equal to Alembic's
TOKEN_HISTORY = 5  # rotated refresh tokens kept (encrypted) for forensics


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A verified file now in place, to be committed to the state."""

    job_id: int
    doc: RemoteDocument
    rel_path: str
    size: int
    sha256: str
    mtime_ns: int
    metadata_json: str | None
    metadata_hash: str | None


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as `status` shows it."""

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


def _upgrade(connection: Connection) -> None:
    """Apply the migrations the database lacks (Alembic is imported only when needed)."""
    if _current_revision(connection) == SCHEMA_HEAD:
        return
    from alembic import command  # noqa: PLC0415 - a start-up cost only when migrating
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _cipher(state_dir: Path) -> Fernet:
    """The key that encrypts tokens at rest, created once beside the database (mode 0600)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = state_dir / "secret.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return Fernet(key_file.read_bytes().strip())


class Store:
    """Async access to the state database."""

    def __init__(self, engine: AsyncEngine, cipher: Fernet) -> None:
        self.engine = engine
        self.session = async_sessionmaker(engine, expire_on_commit=False)
        self.cipher = cipher

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, state_dir: Path) -> AsyncIterator[Store]:
        """Open the database, apply migrations, and close it on exit."""
        if url.startswith("sqlite"):
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StateError(
                f"cannot open the state database: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            yield cls(engine, _cipher(state_dir))
        finally:
            await engine.dispose()

    # ------------------------------------------------------------ sources and passes

    async def pass_started(self, source: str, kind: str) -> None:
        async with self.session.begin() as s:
            row = await s.scalar(select(SourceRow).where(SourceRow.name == source))
            if row is None:
                row = SourceRow(name=source, type=kind)
                s.add(row)
            row.type = kind
            row.last_pass_started = time.time()

    async def pass_finished(self, source: str, ok: bool, error: str | None) -> None:
        async with self.session.begin() as s:
            await s.execute(
                update(SourceRow)
                .where(SourceRow.name == source)
                .values(last_pass_finished=time.time(), last_pass_ok=ok, last_error=error)
            )

    # ------------------------------------------------------------ documents

    async def known_documents(self, source: str, now: float) -> dict[str, KnownDocument]:
        """What the planner needs of every document of a source, streamed row by row."""
        columns = (
            DocumentRow.remote_id,
            DocumentRow.version,
            DocumentRow.rel_path,
            DocumentRow.state,
            DocumentRow.size,
            DocumentRow.metadata_hash,
            DocumentRow.prune,
            DocumentRow.mtime_ns,
        )
        known: dict[str, KnownDocument] = {}
        async with self.engine.connect() as conn:
            waits = dict(
                (
                    await conn.execute(
                        select(JobRow.remote_id, JobRow.version).where(
                            JobRow.source == source, JobRow.next_retry_at > now
                        )
                    )
                ).all()
            )
            rows = await conn.stream(
                select(*columns)
                .where(DocumentRow.source == source)
                .execution_options(yield_per=2000)
            )
            async for rid, ver, path, state, size, mhash, prune, mtime in rows:
                known[rid] = KnownDocument(
                    rid, ver, path, DocState(state), size, mhash, waits.get(rid), prune, mtime
                )
        return known

    async def recorded_sha256(self, source: str, remote_ids: Sequence[str]) -> dict[str, str]:
        """The sha256 the agent recorded for these documents' mirrored files."""
        found: dict[str, str] = {}
        async with self.engine.connect() as conn:
            for chunk in _chunks(remote_ids):
                rows = await conn.execute(
                    select(DocumentRow.remote_id, DocumentRow.sha256).where(
                        DocumentRow.source == source,
                        DocumentRow.remote_id.in_(chunk),
                        DocumentRow.sha256.is_not(None),
                    )
                )
                found.update({rid: sha for rid, sha in rows if sha})
        return found

    async def document_row(self, source: str, remote_id: str) -> DocumentRow | None:
        async with self.session() as s:
            return await s.scalar(
                select(DocumentRow).where(
                    DocumentRow.source == source, DocumentRow.remote_id == remote_id
                )
            )

    async def commit_mirrored(self, source: str, items: Sequence[Mirrored]) -> None:
        """Record files that are now in place, and retire their jobs, in one transaction."""
        if not items:
            return
        now = time.time()
        table = cast(Table, DocumentRow.__table__)
        values = [_mirrored_values(source, item, now) for item in items]
        async with self.engine.begin() as conn:
            found = await conn.execute(
                select(table.c.remote_id, table.c.id).where(
                    table.c.source == source,
                    table.c.remote_id.in_([v["remote_id"] for v in values]),
                )
            )
            ids: dict[str, int] = dict(found.all())  # a Result is not a mapping: rows first
            fresh = [v for v in values if v["remote_id"] not in ids]
            known = [{**v, "row_id": ids[v["remote_id"]]} for v in values if v["remote_id"] in ids]
            if fresh:
                await conn.execute(insert(table), fresh)
            if known:
                columns: dict[str, Any] = {
                    k: bindparam(k) for k in values[0] if k not in ("source", "remote_id")
                }
                statement = update(table).where(table.c.id == bindparam("row_id")).values(columns)
                await conn.execute(statement, known)
            await conn.execute(delete(JobRow).where(JobRow.id.in_([m.job_id for m in items])))

    async def record_states(
        self, source: str, docs: Iterable[tuple[RemoteDocument, DocState, str | None, str | None]]
    ) -> None:
        """Upsert (doc, state, reason, rel_path) for skipped, pending or failed documents."""
        docs = list(docs)
        if not docs:
            return
        now = time.time()
        async with self.session.begin() as s:
            existing = await self._rows(s, source, [d.remote_id for d, *_ in docs])
            for doc, state, reason, rel_path in docs:
                row = existing.get(doc.remote_id) or _new_doc(source, doc)
                if state == DocState.SKIPPED or row.state != DocState.MIRRORED:
                    row.version = doc.version
                row.name, row.state, row.reason = doc.name, state, reason
                row.external_url = doc.external_url
                row.rel_path = rel_path or row.rel_path
                row.updated_at = now
                s.add(row)
            if any(state == DocState.SKIPPED for _, state, _, _ in docs):
                skipped = [d.remote_id for d, st, _, _ in docs if st == DocState.SKIPPED]
                await s.execute(
                    delete(JobRow).where(JobRow.source == source, JobRow.remote_id.in_(skipped))
                )

    async def record_metadata(
        self, source: str, remote_id: str, metadata_json: str | None, metadata_hash: str | None
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(DocumentRow)
                .where(DocumentRow.source == source, DocumentRow.remote_id == remote_id)
                .values(metadata_json=metadata_json, metadata_hash=metadata_hash)
            )

    async def record_removed(self, source: str, remote_ids: Sequence[str]) -> None:
        if not remote_ids:
            return
        async with self.session.begin() as s:
            for chunk in _chunks(remote_ids):
                await s.execute(
                    update(DocumentRow)
                    .where(DocumentRow.source == source, DocumentRow.remote_id.in_(chunk))
                    .values(state=DocState.REMOVED, updated_at=time.time())
                )
                await s.execute(
                    delete(JobRow).where(JobRow.source == source, JobRow.remote_id.in_(chunk))
                )

    async def record_moves(self, source: str, moves: Sequence[tuple[str, str, str]]) -> None:
        """(remote_id, new name, new rel_path) for documents moved in the mirror."""
        async with self.session.begin() as s:
            for remote_id, name, rel_path in moves:
                await s.execute(
                    update(DocumentRow)
                    .where(DocumentRow.source == source, DocumentRow.remote_id == remote_id)
                    .values(name=name, rel_path=rel_path, updated_at=time.time())
                )

    async def _rows(self, s: Any, source: str, remote_ids: Sequence[str]) -> dict[str, DocumentRow]:
        found: dict[str, DocumentRow] = {}
        for chunk in _chunks(remote_ids):
            rows = await s.scalars(
                select(DocumentRow).where(
                    DocumentRow.source == source, DocumentRow.remote_id.in_(chunk)
                )
            )
            found.update({row.remote_id: row for row in rows})
        return found

    # ------------------------------------------------------------ jobs

    async def open_job(self, source: str, doc: RemoteDocument, rel_path: str) -> JobSpec:
        """The job for one document version (see `open_jobs`)."""
        return (await self.open_jobs(source, [(doc, rel_path)]))[doc.remote_id]

    async def open_jobs(
        self, source: str, items: Sequence[tuple[RemoteDocument, str]]
    ) -> dict[str, JobSpec]:
        """The jobs for these document versions: persisted ones when resuming, else new ones.

        A job keeps the attributes it was created with (`x-download-reason` and the like)
        for as long as it targets the same version; a new version starts a new job.
        """
        jobs: dict[str, JobSpec] = {}
        for start in range(0, len(items), 500):
            async with self.engine.begin() as conn:
                jobs.update(await _open_jobs(conn, source, items[start : start + 500]))
        return jobs

    async def mark_verified(self, items: Sequence[tuple[int, int, str]]) -> None:
        """(job id, size, sha256) of files about to be renamed into place.

        Written before the rename, so that start-up can adopt a file a crash left in place
        before its document row was committed, after checking its sha256.
        """
        if not items:
            return
        statement = (
            update(JobRow)
            .where(JobRow.id == bindparam("job_id"))
            .values(bytes_done=bindparam("size"), sha256=bindparam("digest"))
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                statement, [{"job_id": j, "size": n, "digest": d} for j, n, d in items]
            )

    async def checkpoint(self, job_id: int, bytes_done: int, validator: str | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(bytes_done=bytes_done, validator=validator, updated_at=time.time())
            )

    async def job_failed(
        self,
        job_id: int,
        *,
        kind: str,
        error: str,
        permanent: bool,
        retry_in: float,
        bytes_done: int,
    ) -> None:
        now = time.time()
        async with self.session.begin() as s:
            await s.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(
                    state=JobState.FAILED if permanent else JobState.RETRY,
                    attempts=JobRow.attempts + 1,
                    error_kind=kind,
                    last_error=error,
                    next_retry_at=now + retry_in,
                    bytes_done=bytes_done,
                    updated_at=now,
                )
            )

    async def job_attempts(self, job_id: int) -> int:
        async with self.session() as s:
            return int(await s.scalar(select(JobRow.attempts).where(JobRow.id == job_id)) or 0)

    async def jobs(self, source: str | None = None) -> list[JobView]:
        query = select(JobRow).order_by(JobRow.source, JobRow.id)
        if source is not None:
            query = query.where(JobRow.source == source)
        async with self.session() as s:
            rows = await s.scalars(query)
            return [
                JobView(
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
                for r in rows
            ]

    async def active_temp_names(self) -> set[str]:
        async with self.session() as s:
            return set(await s.scalars(select(JobRow.temp_name)))

    async def interrupted_jobs(self) -> list[JobSpec]:
        """Jobs that were active when the last process stopped."""
        async with self.session.begin() as s:
            rows = list(await s.scalars(select(JobRow).where(JobRow.state == JobState.ACTIVE)))
            for row in rows:
                row.state = JobState.QUEUED
            return [_job_spec(r) for r in rows]

    async def verified_jobs(self) -> list[tuple[JobSpec, int, str]]:
        """Jobs whose bytes were verified for a rename: (job, size, sha256)."""
        async with self.session() as s:
            rows = await s.scalars(select(JobRow).where(JobRow.sha256.is_not(None)))
            return [(_job_spec(r), r.bytes_done, r.sha256 or "") for r in rows]

    async def adopt_placed(self, job: JobSpec, size: int, sha256: str, mtime_ns: int) -> bool:
        """Record a file the job had renamed into place before its row was committed.

        Refuses (returns False) when the file is the document's previous version: the row
        already holds its sha256 for another version.
        """
        async with self.session.begin() as s:
            row = await s.scalar(
                select(DocumentRow).where(
                    DocumentRow.source == job.source, DocumentRow.remote_id == job.remote_id
                )
            )
            if row is not None and row.sha256 == sha256 and row.version != job.version:
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
            row.state, row.reason, row.updated_at = DocState.MIRRORED, None, time.time()
            row.size, row.sha256, row.mtime_ns = size, sha256, mtime_ns
            await s.execute(delete(JobRow).where(JobRow.id == job.job_id))
            return True

    # ------------------------------------------------------------ status

    async def status(self, names: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Per source: document counts, last pass, jobs and skipped documents.

        `names` limits it to the configured sources (a removed source's rows stay behind).
        """
        query = select(SourceRow).order_by(SourceRow.name)
        if names is not None:
            query = query.where(SourceRow.name.in_(list(names)))
        async with self.session() as s:
            sources = list(await s.scalars(query))
            counts = (
                await s.execute(
                    select(DocumentRow.source, DocumentRow.state, func.count()).group_by(
                        DocumentRow.source, DocumentRow.state
                    )
                )
            ).all()
            skipped = (
                await s.execute(
                    select(
                        DocumentRow.source,
                        DocumentRow.remote_id,
                        DocumentRow.name,
                        DocumentRow.reason,
                        DocumentRow.external_url,
                    )
                    .where(DocumentRow.state == DocState.SKIPPED)
                    .order_by(DocumentRow.source, DocumentRow.name)
                )
            ).all()
            by_source: dict[str, dict[str, int]] = {}
            for src, state, n in counts:
                by_source.setdefault(src, {})[state] = n
            skipped_by: dict[str, list[dict[str, Any]]] = {}
            for src, rid, name, reason, url in skipped:
                skipped_by.setdefault(src, []).append(
                    {"remote_id": rid, "name": name, "reason": reason, "url": url}
                )
        jobs = await self.jobs()
        return [
            _source_status(row, by_source.get(row.name, {}), skipped_by.get(row.name, []), jobs)
            for row in sources
        ]

    # ------------------------------------------------------------ tokens and cursors

    async def load_token(self, source: str, kind: str) -> StoredToken | None:
        async with self.session() as s:
            row = await s.scalar(
                select(TokenRow)
                .where(TokenRow.source == source, TokenRow.kind == kind)
                .order_by(TokenRow.id.desc())
                .limit(1)
            )
        if row is None:
            return None
        try:
            value = self.cipher.decrypt(row.value.encode()).decode()
        except InvalidToken:
            return None  # the key file was replaced: the token is unreadable, obtain a new one
        expires = None if row.expires_at is None else datetime.fromtimestamp(row.expires_at, UTC)
        return StoredToken(value, expires)

    async def save_token(
        self, source: str, kind: str, value: str, expires_at: datetime | None
    ) -> None:
        encrypted = self.cipher.encrypt(value.encode()).decode()
        async with self.session.begin() as s:
            s.add(
                TokenRow(
                    source=source,
                    kind=kind,
                    value=encrypted,
                    expires_at=None if expires_at is None else expires_at.timestamp(),
                    created_at=time.time(),
                )
            )
            await s.flush()
            keep = select(TokenRow.id).where(TokenRow.source == source, TokenRow.kind == kind)
            keep = keep.order_by(TokenRow.id.desc()).limit(TOKEN_HISTORY)
            await s.execute(
                delete(TokenRow).where(
                    TokenRow.source == source,
                    TokenRow.kind == kind,
                    TokenRow.id.not_in(keep.scalar_subquery()),
                )
            )

    async def load_cursor(self, source: str, key: str) -> str | None:
        async with self.session() as s:
            return await s.scalar(
                select(CursorRow.value).where(CursorRow.source == source, CursorRow.key == key)
            )

    async def save_cursor(self, source: str, key: str, value: str | None) -> None:
        async with self.session.begin() as s:
            row = await s.get(CursorRow, (source, key))
            if value is None:
                if row is not None:
                    await s.delete(row)
                return
            if row is None:
                s.add(CursorRow(source=source, key=key, value=value, updated_at=time.time()))
            elif row.value != value:
                row.value, row.updated_at = value, time.time()

    def for_source(self, source: str) -> StoreSourceState:
        return StoreSourceState(self, source)


class StoreSourceState:
    """The `SourceState` a source sees: the store, scoped to that source."""

    def __init__(self, store: Store, source: str) -> None:
        self.store = store
        self.source = source

    async def load_token(self, kind: str) -> StoredToken | None:
        return await self.store.load_token(self.source, kind)

    async def save_token(self, kind: str, value: str, expires_at: datetime | None = None) -> None:
        await self.store.save_token(self.source, kind, value, expires_at)

    async def load_cursor(self, key: str) -> str | None:
        return await self.store.load_cursor(self.source, key)

    async def save_cursor(self, key: str, value: str | None) -> None:
        await self.store.save_cursor(self.source, key, value)


def _mirrored_values(source: str, item: Mirrored, now: float) -> dict[str, Any]:
    return {
        "source": source,
        "remote_id": item.doc.remote_id,
        "version": item.doc.version,
        "name": item.doc.name,
        "rel_path": item.rel_path,
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


def _new_doc(source: str, doc: RemoteDocument) -> DocumentRow:
    return DocumentRow(
        source=source,
        remote_id=doc.remote_id,
        version=doc.version,
        name=doc.name,
        state=DocState.PENDING,
        updated_at=time.time(),
    )


async def _open_jobs(
    conn: AsyncConnection, source: str, items: Sequence[tuple[RemoteDocument, str]]
) -> dict[str, JobSpec]:
    wanted = {doc.remote_id: (doc, rel_path) for doc, rel_path in items}
    table = cast(Table, JobRow.__table__)
    mine = (table.c.source == source) & table.c.remote_id.in_(list(wanted))
    existing = {r.remote_id: r for r in await conn.execute(select(table).where(mine))}
    stale = [r.id for rid, r in existing.items() if r.version != wanted[rid][0].version]
    if stale:
        await conn.execute(delete(table).where(table.c.id.in_(stale)))
    now = time.time()
    fresh = [
        _new_job(source, doc, rel_path, now)
        for rid, (doc, rel_path) in wanted.items()
        if rid not in existing or existing[rid].id in stale
    ]
    if fresh:
        await conn.execute(insert(table), fresh)
    await conn.execute(
        update(table)
        .where(mine)
        .values(state=JobState.ACTIVE, rel_path=_rel_path_case(table, wanted), updated_at=now)
    )
    return {r.remote_id: _job_spec(r) for r in await conn.execute(select(table).where(mine))}


def _rel_path_case(table: Any, wanted: Mapping[str, tuple[RemoteDocument, str]]) -> Any:
    return case({rid: path for rid, (_, path) in wanted.items()}, value=table.c.remote_id)


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


def _job_spec(row: Any) -> JobSpec:
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


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _source_status(
    row: SourceRow,
    counts: Mapping[str, int],
    skipped: list[dict[str, Any]],
    jobs: Sequence[JobView],
) -> dict[str, Any]:
    mine = [j for j in jobs if j.source == row.name]
    return {
        "name": row.name,
        "type": row.type,
        "documents": sum(counts.values()),
        "mirrored": counts.get(DocState.MIRRORED, 0),
        "pending": counts.get(DocState.PENDING, 0),
        "failed": counts.get(DocState.FAILED, 0),
        "skipped": counts.get(DocState.SKIPPED, 0),
        "removed": counts.get(DocState.REMOVED, 0),
        "last_pass_started": _iso(row.last_pass_started),
        "last_pass_finished": _iso(row.last_pass_finished),
        "last_pass_ok": row.last_pass_ok,
        "last_error": row.last_error,
        "jobs": [_job_json(j) for j in mine],
        "skipped_documents": skipped,
    }


def _job_json(job: JobView) -> dict[str, Any]:
    state = job.state
    with contextlib.suppress(ValueError):
        state = JobState(job.state)
    return {
        "remote_id": job.remote_id,
        "path": job.rel_path,
        "state": {
            "active": "in-progress",
            "queued": "in-progress",
            "retry": "waiting-to-retry",
            "failed": "permanently-failed",
        }.get(state, state),
        "bytes_done": job.bytes_done,
        "expected_size": job.expected_size,
        "attempts": job.attempts,
        "error_kind": job.error_kind,
        "last_error": job.last_error,
        "next_retry_at": _iso(job.next_retry_at),
    }


def _iso(value: float | None) -> str | None:
    return (
        None if value is None else datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    )
