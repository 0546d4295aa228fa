"""Puts verified downloads in place and records them, in batches.

For each batch: record the verified size and sha256 of every job (one transaction), rename
the fsynced temp files into place and fsync their folders (one thread hop), then commit the
document rows (one transaction). A crash anywhere in between leaves either a temp file the
next pass places, or a placed file start-up adopts after checking its sha256.

What is at a document's path decides how it is placed. Nothing: the file is renamed in,
its mtime set to the document's remote modification time when the listing gives one. The
file the agent last wrote there, unchanged: replaced. A regular file holding exactly the
downloaded bytes (a mirror whose state was lost, an edit that matches the new version):
adopted as it is, not rewritten, and the temp file dropped. Anything else (a local edit, a
file the agent never wrote, a folder): kept beside as `name (local copy <date>).ext`. A
link: set aside by `mirrorfs`, never followed. Files adopted without a download (the plan's
quick check) were hashed by the engine and are only recorded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.engine.plan import Download, remote_mtime_ns
from agent.log import get_logger
from agent.models import Fetched, JobSpec, metadata_digest
from agent.state.documents import Mirrored
from agent.state.store import Store
from agent.transfer.files import identical, locally_edited
from agent.transfer.mirrorfs import LINK_LABEL, Folder, MirrorFS, off_loop

COMMIT_BATCH = 64
FLUSH_INTERVAL = 1.0  # seconds a verified file may wait for its batch
SIDECAR_SUFFIX = ".meta.json"


@dataclass(frozen=True, slots=True)
class Finished:
    """A download that is verified and fsynced, waiting to be placed and recorded.

    `in_place` marks a file adopted without a download: `fetched` describes the file
    already at the document's path, and there is no temp file.
    """

    item: Download
    job: JobSpec
    fetched: Fetched
    metadata: Mapping[str, Any] | None
    in_place: bool = False


@dataclass(frozen=True, slots=True)
class Placement:
    mirrored: Mirrored
    kept_as: str | None  # the name a locally edited file was moved aside to
    adopted: bool  # the file already in place held these bytes


class Committer:
    """Collects finished downloads of one pass and commits them in batches."""

    def __init__(
        self, store: Store, fs: MirrorFS, staging: Folder, source: str, write_metadata: bool
    ) -> None:
        self.store = store
        self.fs = fs
        self.staging = staging
        self.source = source
        self.write_metadata = write_metadata
        self.note: Mapping[str, object] = {}  # added to the journal entries of these files
        self.pending: list[Finished] = []
        self._lock = asyncio.Lock()

    async def add(self, finished: Finished) -> None:
        self.pending.append(finished)
        if len(self.pending) >= COMMIT_BATCH:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            batch, self.pending = self.pending, []
            if not batch:
                return
            await self.store.jobs.mark_verified(
                [(f.job.job_id, f.fetched.size, f.fetched.sha256) for f in batch if not f.in_place]
            )
            recorded = await self.store.documents.recorded_sha256(
                self.source, [f.item.doc.remote_id for f in batch if f.item.known is not None]
            )
            placed = await off_loop(self._place_all, batch, recorded)
            await self.store.documents.commit_mirrored(
                self.source,
                [p.mirrored for p in placed],
                kept={p.mirrored.doc.remote_id: p.kept_as for p in placed if p.kept_as},
                note=self.note,
            )
        log = get_logger(source=self.source)
        for p in placed:
            if p.kept_as:
                log.warning("document.local_edit_kept", path=p.mirrored.rel_path, kept_as=p.kept_as)
            elif p.adopted:
                log.info("document.adopted", path=p.mirrored.rel_path, bytes=p.mirrored.size)

    async def flush_periodically(
        self, stop: asyncio.Event, interval: float = FLUSH_INTERVAL
    ) -> None:
        """Keep files appearing promptly while a long pass is still downloading; once `stop`
        is set, flush what is left and return. Never cancel it: a batch taken for a flush
        that is cancelled half-way would be placed but not recorded until the next start."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            await self.flush()
        await self.flush()  # what arrived while the last round was running

    def _place_all(self, batch: Sequence[Finished], recorded: Mapping[str, str]) -> list[Placement]:
        """Rename every file into place, then fsync each folder once (runs in a thread)."""
        folders: dict[str, Folder] = {}
        try:
            placed = []
            for f in batch:
                parent = f.item.rel_path.rpartition("/")[0]
                if parent not in folders:
                    folders[parent] = self.fs.make_folder(parent)
                placed.append(self._place(folders[parent], f, recorded.get(f.item.doc.remote_id)))
            for folder in folders.values():
                folder.fsync()
            return placed
        finally:
            for folder in folders.values():
                folder.close()

    def _place(self, folder: Folder, finished: Finished, recorded_sha256: str | None) -> Placement:
        item = finished.item
        name = item.rel_path.rpartition("/")[2]
        kept_as, adopted = None, finished.in_place
        if not finished.in_place:
            kept_as, adopted = self._clear(folder, name, finished, recorded_sha256)
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
            finished.job.job_id,
            item.doc,
            item.rel_path,
            finished.fetched.size,
            finished.fetched.sha256,
            found.st_mtime_ns if found else 0,
            meta_json,
            meta_hash,
        )
        return Placement(mirrored, kept_as, adopted)

    def _clear(
        self, folder: Folder, name: str, finished: Finished, recorded_sha256: str | None
    ) -> tuple[str | None, bool]:
        """Make way at `name`: (what a local file was kept as, whether it is adopted)."""
        found = folder.lstat(name)
        if found is None:
            return None, False
        if stat.S_ISLNK(found.st_mode):
            folder.set_aside(name, LINK_LABEL)
            return None, False
        if stat.S_ISREG(found.st_mode):
            if self._ours_unchanged(finished.item, folder, name, recorded_sha256):
                return None, False
            if identical(folder, name, finished.fetched.size, finished.fetched.sha256):
                return None, True
        return folder.set_aside(name), False

    @staticmethod
    def _ours_unchanged(
        item: Download, folder: Folder, name: str, recorded_sha256: str | None
    ) -> bool:
        """Is the file at `name` exactly what the agent last wrote there for this document?"""
        known = item.known
        if known is None or known.rel_path != item.rel_path or recorded_sha256 is None:
            return False  # the agent never wrote this path for this document
        return not locally_edited(folder, name, known.size, known.mtime_ns, recorded_sha256)


def adopt_in_place(fs: MirrorFS, item: Download) -> Fetched | None:
    """Hash the file at the document's path when it still has the listed size (in a thread).

    None when it no longer does (changed since the plan looked): then it is downloaded.
    """
    folder = fs.parent(item.rel_path)
    if folder is None:
        return None
    with folder:
        digest = folder.digest(item.rel_path.rpartition("/")[2])
    if digest is None or digest[1].st_size != item.doc.size:
        return None
    return Fetched(temp_path="", size=digest[1].st_size, sha256=digest[0], validator=None)


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
