"""Puts verified downloads in place and records them, in batches (one committer per source).

For each batch: record the verified size and sha256 of every job (one transaction, fenced:
only jobs this replica still holds go on), rename the fsynced temp files into place and
fsync their folders (one thread hop), then commit the document rows and retire the jobs
(one transaction, fenced again). A crash anywhere in between leaves either a temp file the
next attempt places, or a placed file start-up adopts after checking its sha256.

Batches follow group commit: a file that arrives while the committer is idle is placed at
once (the first file of a pass appears without waiting), later ones gather for up to
`FLUSH_INTERVAL` or `COMMIT_BATCH` files. A batch, once begun, runs to its commit whatever
is cancelled meanwhile: renamed files whose rows were never committed would look like local
edits to a process that does not restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.engine.plan import Download
from agent.log import get_logger
from agent.models import Fetched, JobSpec, KnownDocument, metadata_digest
from agent.state.documents import Mirrored
from agent.state.jobs import JobLease
from agent.state.journal import EMPTY
from agent.state.store import Store
from agent.transfer.files import (
    fsync_dir,
    hash_file,
    keep_local_copy,
    locally_edited,
    write_atomic,
)

COMMIT_BATCH = 64
FLUSH_INTERVAL = 1.0  # seconds a verified file may wait for its batch
SIDECAR_SUFFIX = ".meta.json"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finished:
    """A download that is verified and fsynced, waiting to be placed and recorded."""

    item: Download
    lease: JobLease
    job: JobSpec
    fetched: Fetched
    metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Placement:
    mirrored: Mirrored
    kept_as: str | None  # the name a locally edited file was moved aside to


async def finish(task: asyncio.Future[T]) -> T:
    """The result of `task`, waiting for it to end even when the waiter is cancelled
    meanwhile (the cancellation is raised once the task is done)."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class Committer:
    """Collects one source's finished downloads and commits them in batches."""

    def __init__(
        self,
        store: Store,
        mirror_dir: Path,
        staging: Path,
        source: str,
        write_metadata: bool,
        *,
        on_flushed: Callable[[Sequence[Finished], Sequence[Mirrored]], None],
        on_failed: Callable[[Sequence[Finished], BaseException], None],
        note: Mapping[str, object] = EMPTY,
    ) -> None:
        self.store = store
        self.mirror_dir = mirror_dir
        self.staging = staging
        self.source = source
        self.write_metadata = write_metadata
        self.on_flushed = on_flushed  # (the batch, what of it was committed)
        self.on_failed = on_failed
        self.note = note  # added to the journal entries of these files
        self.pending: list[Finished] = []
        self.log = get_logger(source=source)
        self._arrived = asyncio.Event()
        self._hurry = False
        self._closing = False
        self._last_flush = -FLUSH_INTERVAL
        self._task = asyncio.create_task(self._run(), name=f"commit:{source}")

    def add(self, finished: Finished) -> None:
        self.pending.append(finished)
        self._arrived.set()

    def hurry(self) -> None:
        """Nothing else is on its way: commit what is pending without waiting for more."""
        self._hurry = True
        self._arrived.set()

    async def close(self) -> None:
        """Commit everything pending, then stop (a cancelled caller still waits for it)."""
        self._closing = True
        self._arrived.set()
        try:
            await finish(self._task)
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise  # the caller was cancelled; the flusher finished first
        while self.pending:  # the flusher itself was cancelled: what it left is done here
            await self._commit_next()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if not self.pending:
                self._arrived.clear()
                self._hurry = False
                if self._closing:
                    return
                continue
            await self._gather()
            with contextlib.suppress(Exception):  # reported to the pass; later batches go on
                await self._commit_next()

    async def _commit_next(self) -> None:
        """Place and commit the next batch, in a task of its own that runs to its end even
        when the one waiting for it is cancelled; report how it went."""
        batch, self.pending = self.pending[:COMMIT_BATCH], self.pending[COMMIT_BATCH:]
        flush = asyncio.ensure_future(self._flush(batch))
        try:
            await finish(flush)
        finally:
            self._last_flush = time.monotonic()
            if flush.cancelled():  # only a loop tearing down cancels the batch itself
                self.on_flushed(batch, [])
            elif (error := flush.exception()) is not None:
                self.on_failed(batch, error)
            else:
                self.on_flushed(batch, flush.result())

    async def _gather(self) -> None:
        """Wait until the batch is full, time is up, or nobody should wait any longer."""
        deadline = self._last_flush + FLUSH_INTERVAL
        while len(self.pending) < COMMIT_BATCH and not (self._closing or self._hurry):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def _flush(self, batch: Sequence[Finished]) -> list[Mirrored]:
        """Place and commit a batch; returns what was committed (jobs still held)."""
        held = await self.store.jobs.mark_verified(
            [(f.lease, f.fetched.size, f.fetched.sha256, f.job.temp_name) for f in batch]
        )
        for lost in (f for f in batch if f.lease.job_id not in held):
            self.log.warning("download.lease_lost", remote_id=lost.item.doc.remote_id)
        batch = [f for f in batch if f.lease.job_id in held]
        if not batch:
            return []
        ids = [f.item.doc.remote_id for f in batch]
        known = await self.store.documents.known(self.source, ids)
        recorded = await self.store.documents.recorded_sha256(self.source, list(known))
        placed = await asyncio.to_thread(self._place_all, batch, known, recorded)
        committed = await self.store.documents.commit_mirrored(
            self.source,
            [p.mirrored for p in placed],
            kept={p.mirrored.doc.remote_id: p.kept_as for p in placed if p.kept_as},
            note=self.note,
        )
        for p in placed:
            if p.kept_as:
                self.log.warning(
                    "document.local_edit_kept", path=p.mirrored.rel_path, kept_as=p.kept_as
                )
        return committed

    def _place_all(
        self,
        batch: Sequence[Finished],
        known: Mapping[str, KnownDocument],
        recorded: Mapping[str, str],
    ) -> list[Placement]:
        """Rename every file into place, then fsync each folder once (runs in a thread)."""
        placed = [
            self._place(f, known.get(f.item.doc.remote_id), recorded.get(f.item.doc.remote_id))
            for f in batch
        ]
        for folder in {(self.mirror_dir / p.mirrored.rel_path).parent for p in placed}:
            fsync_dir(folder)
        return placed

    def _place(
        self, finished: Finished, known: KnownDocument | None, recorded_sha256: str | None
    ) -> Placement:
        item = finished.item
        dest = self.mirror_dir / item.rel_path
        kept_as = None
        if dest.exists() and _edited(item.rel_path, dest, known, recorded_sha256, finished):
            kept_as = keep_local_copy(dest).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        Path(finished.fetched.temp_path).replace(dest)
        meta_json, meta_hash = metadata_digest(finished.metadata)
        if meta_json is not None and self.write_metadata:
            write_atomic(
                dest.with_name(dest.name + SIDECAR_SUFFIX), meta_json.encode() + b"\n", self.staging
            )
        mirrored = Mirrored(
            finished.lease,
            item.doc,
            item.rel_path,
            finished.fetched.size,
            finished.fetched.sha256,
            dest.stat().st_mtime_ns,
            meta_json,
            meta_hash,
        )
        return Placement(mirrored, kept_as)


def _edited(
    rel_path: str,
    dest: Path,
    known: KnownDocument | None,
    recorded_sha256: str | None,
    finished: Finished,
) -> bool:
    """Is the file at `dest` something other than what the agent wrote or is placing now?

    A file holding exactly the new bytes is not: another replica that lost this job after
    placing it, or a crash after the rename, left the very same content.
    """
    if (
        known is not None
        and known.rel_path == rel_path
        and recorded_sha256 is not None
        and not locally_edited(dest, known.size, known.mtime_ns, recorded_sha256)
    ):
        return False  # the file the agent wrote there, unchanged
    return not _identical(dest, finished.fetched)


def _identical(dest: Path, fetched: Fetched) -> bool:
    if not dest.is_file() or dest.stat().st_size != fetched.size:
        return False
    return hash_file(dest)[0].hexdigest() == fetched.sha256


def prune(path: Path) -> None:
    """Delete a mirrored file and its sidecar (for sources that ask for it)."""
    for victim in (path, path.with_name(path.name + SIDECAR_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            victim.unlink()
