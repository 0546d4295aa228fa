"""Puts verified downloads in place and records them, in batches (one committer per source).

For each batch: fsync every temp file of the batch at once (`Durability`: the downloads
themselves were written without a flush), record the verified size and digest of every job
(one transaction, fenced: only jobs this replica still holds go on), rename the temp files
into place and fsync their folders (one thread hop), then commit the document rows and
retire the jobs (one transaction, fenced again). A crash anywhere in between leaves either a
temp file the next attempt places, or a placed file start-up adopts after checking its
digest; a job is recorded as verified only once its bytes are on disk.

Batches follow group commit: a file that arrives while the committer is idle is placed at
once (the first file of a pass appears without waiting), later ones gather for up to
`FLUSH_INTERVAL` or `COMMIT_BATCH` files. A batch, once begun, runs to its commit whatever
is cancelled meanwhile: renamed files whose rows were never committed would look like local
edits to a process that does not restart.

What is at a document's path decides how it is placed. Nothing: the file is renamed in,
its mtime set to the document's remote modification time when the listing gives one. The
file the agent last wrote there, unchanged: replaced. A regular file holding exactly the
downloaded bytes (a mirror whose state was lost, an edit that matches the new version,
another replica that lost this job after placing it): adopted as it is, not rewritten, and
the temp file dropped. Anything else (a local edit, a file the agent never wrote, a
folder): kept beside as `name (local copy <date>).ext`. A link: set aside by `mirrorfs`,
never followed. Files adopted without a download (the plan's quick check) were hashed by
the workers and are only recorded here.

A document renamed together with a new version is placed at its new path; the file its
previous version left at the old path is deleted when it is still exactly what the agent
wrote there, and kept (a local edit) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.engine.plan import Download, remote_mtime_ns
from agent.log import get_logger
from agent.models import DocState, Fetched, JobSpec, KnownDocument, metadata_digest
from agent.state.documents import Mirrored
from agent.state.jobs import JobLease, path_key
from agent.state.journal import EMPTY
from agent.state.store import Store
from agent.transfer.digests import Algorithm
from agent.transfer.durable import Durability
from agent.transfer.files import identical, locally_edited
from agent.transfer.mirrorfs import LINK_LABEL, Folder, MirrorFS, off_loop

COMMIT_BATCH = 64
FLUSH_INTERVAL = 1.0  # seconds a verified file may wait for its batch
SIDECAR_SUFFIX = ".meta.json"
RETIRABLE = frozenset({DocState.MIRRORED, DocState.FAILED})  # rows that may hold a file
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finished:
    """A download that is verified and written (not yet flushed), waiting to be placed
    and recorded.

    `in_place` marks a file adopted without a download: `fetched` describes the file
    already at the document's path, and there is no temp file.
    """

    item: Download
    lease: JobLease
    job: JobSpec
    fetched: Fetched
    metadata: Mapping[str, Any] | None
    in_place: bool = False


@dataclass(frozen=True, slots=True)
class Placement:
    mirrored: Mirrored
    kept_as: str | None  # the name a locally edited file was moved aside to
    adopted: bool  # the file already in place held these bytes
    retired: str | None = None  # the previous version's file, deleted from its old path


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
        fs: MirrorFS,
        staging: Folder,
        source: str,
        write_metadata: bool,
        *,
        durability: Durability,
        on_flushed: Callable[[Sequence[Finished], Sequence[Mirrored]], None],
        on_failed: Callable[[Sequence[Finished], BaseException], None],
        note: Mapping[str, object] = EMPTY,
    ) -> None:
        self.store = store
        self.fs = fs
        self.durability = durability
        self.staging = staging
        self.source = source
        self.write_metadata = write_metadata
        self.on_flushed = on_flushed  # (the batch, what of it was committed)
        self.on_failed = on_failed
        self.note = note  # added to the journal entries of these files
        self.pending: list[Finished] = []
        self.log = get_logger(source=source)
        self._arrived = asyncio.Event()
        self._gathering = False  # a batch is gathering: only a full one needs to say so
        self._hurry = False
        self._closing = False
        self._last_flush = -FLUSH_INTERVAL
        self._task = asyncio.create_task(self._run(), name=f"commit:{source}")

    def add(self, finished: Finished) -> None:
        self.pending.append(finished)
        if not self._gathering or len(self.pending) >= COMMIT_BATCH:
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
        self._gathering = True
        try:
            while len(self.pending) < COMMIT_BATCH and not (self._closing or self._hurry):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._arrived.wait()
        finally:
            self._gathering = False

    async def _flush(self, batch: Sequence[Finished]) -> list[Mirrored]:
        """Place and commit a batch; returns what was committed (jobs still held)."""
        await self.durability.sync([Path(f.fetched.temp_path) for f in batch if not f.in_place])
        held = await self.store.jobs.mark_verified(
            [(f.lease, f.fetched.size, f.fetched.digest, f.job.temp_name) for f in batch]
        )
        for lost in (f for f in batch if f.lease.job_id not in held):
            self.log.warning("download.lease_lost", remote_id=lost.item.doc.remote_id)
        batch = [f for f in batch if f.lease.job_id in held]
        if not batch:
            return []
        ids = [f.item.doc.remote_id for f in batch]
        known = await self.store.documents.known(self.source, ids)
        recorded = (  # documents new to the mirror (a first pass: all) have none
            await self.store.documents.recorded_digests(self.source, list(known)) if known else {}
        )
        placed = await off_loop(self._place_all, batch, known, recorded)
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
            elif p.adopted:
                self.log.info("document.adopted", path=p.mirrored.rel_path, bytes=p.mirrored.size)
            if p.retired:
                self.log.info("document.old_file_removed", path=p.mirrored.rel_path, old=p.retired)
        return committed

    def _place_all(
        self,
        batch: Sequence[Finished],
        known: Mapping[str, KnownDocument],
        recorded: Mapping[str, str],
    ) -> list[Placement]:
        """Rename every file into place, then fsync each folder once (runs in a thread)."""
        folders: dict[str, Folder] = {}
        try:
            placed = []
            for f in batch:
                parent = f.item.rel_path.rpartition("/")[0]
                if parent not in folders:
                    folders[parent] = self.fs.make_folder(parent)
                rid = f.item.doc.remote_id
                placed.append(self._place(folders[parent], f, known.get(rid), recorded.get(rid)))
            for folder in folders.values():
                folder.fsync()
            return placed
        finally:
            for folder in folders.values():
                folder.close()

    def _place(
        self,
        folder: Folder,
        finished: Finished,
        known: KnownDocument | None,
        recorded_digest: str | None,
    ) -> Placement:
        item = finished.item
        name = item.rel_path.rpartition("/")[2]
        kept_as, adopted = None, finished.in_place
        if not finished.in_place:
            kept_as, adopted = _clear(folder, name, finished, known, recorded_digest)
            temp = Path(finished.fetched.temp_path).name
            if adopted:
                os.unlink(temp, dir_fd=self.staging.fd)
            else:
                mtime = remote_mtime_ns(item.doc)
                if mtime is not None:
                    self.staging.set_mtime(temp, mtime)
                folder.move_in(self.staging, temp, name)
        meta_json, meta_hash = metadata_digest(finished.metadata)
        if meta_json is not None and self.write_metadata:
            folder.write_atomic(name + SIDECAR_SUFFIX, meta_json.encode() + b"\n", self.staging)
        found = folder.lstat(name)
        mirrored = Mirrored(
            finished.lease,
            item.doc,
            item.rel_path,
            finished.fetched.size,
            finished.fetched.digest,
            found.st_mtime_ns if found else 0,
            meta_json,
            meta_hash,
        )
        retired = _retire_old_file(self.fs, item.rel_path, known, recorded_digest)
        return Placement(mirrored, kept_as, adopted, retired)


def _clear(
    folder: Folder,
    name: str,
    finished: Finished,
    known: KnownDocument | None,
    recorded_digest: str | None,
) -> tuple[str | None, bool]:
    """Make way at `name`: (what a local file was kept as, whether it is adopted)."""
    found = folder.lstat(name)
    if found is None:
        return None, False
    if stat.S_ISLNK(found.st_mode):
        folder.set_aside(name, LINK_LABEL)
        return None, False
    if stat.S_ISREG(found.st_mode):
        if _ours_unchanged(finished.item.rel_path, folder, name, known, recorded_digest):
            return None, False
        if identical(folder, name, finished.fetched.size, finished.fetched.digest):
            return None, True
    return folder.set_aside(name), False


def _ours_unchanged(
    rel_path: str,
    folder: Folder,
    name: str,
    known: KnownDocument | None,
    recorded_digest: str | None,
) -> bool:
    """Is the file at `name` exactly what the agent last wrote there for this document?"""
    if known is None or known.rel_path != rel_path or recorded_digest is None:
        return False  # the agent never wrote this path for this document
    return not locally_edited(folder, name, known.size, known.mtime_ns, recorded_digest)


def _retire_old_file(
    fs: MirrorFS, rel_path: str, known: KnownDocument | None, recorded_digest: str | None
) -> str | None:
    """Delete the file the document's previous version left at another path (it was renamed
    with its new version) when it is exactly what the agent wrote there; returns its path.
    An edited file is kept, as a local copy is. A row whose last download failed still
    records its file (a failure moves no path)."""
    if known is None or known.state not in RETIRABLE or recorded_digest is None:
        return None
    old = known.rel_path
    if old is None or path_key(old) == path_key(rel_path):  # the same file, case aside
        return None
    folder = fs.parent(old)
    if folder is None:
        return None
    with folder:
        name = old.rpartition("/")[2]
        if folder.lstat(name) is None:
            return None
        if locally_edited(folder, name, known.size, known.mtime_ns, recorded_digest):
            return None
        for victim in (name, name + SIDECAR_SUFFIX):
            folder.unlink(victim)
        folder.fsync()
    return old


def adopt_in_place(fs: MirrorFS, item: Download, algorithm: Algorithm) -> Fetched | None:
    """Hash the file at the document's path when it still has the listed size (in a thread).

    None when it no longer does (changed since the plan looked): then it is downloaded.
    """
    folder = fs.parent(item.rel_path)
    if folder is None:
        return None
    with folder:
        digest = folder.digest(item.rel_path.rpartition("/")[2], algorithm)
    if digest is None or digest[1].st_size != item.doc.size:
        return None
    return Fetched(temp_path="", size=digest[1].st_size, digest=digest[0], validator=None)


def prune(fs: MirrorFS, rel_path: str) -> None:
    """Delete a mirrored file and its sidecar (for sources that ask for it)."""
    folder = fs.parent(rel_path)
    if folder is None:
        return
    with folder:
        name = rel_path.rpartition("/")[2]
        for victim in (name, name + SIDECAR_SUFFIX):
            folder.unlink(victim)
        folder.fsync()
