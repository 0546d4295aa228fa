"""Puts verified downloads in place and records them, in batches.

For each batch: record the verified size and sha256 of every job (one transaction), rename
the fsynced temp files into place and fsync their folders (one thread hop), then commit the
document rows (one transaction). A crash anywhere in between leaves either a temp file the
next pass places, or a placed file start-up adopts after checking its sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.engine.plan import Download
from agent.log import get_logger
from agent.models import Fetched, JobSpec, metadata_digest
from agent.state.documents import Mirrored
from agent.state.store import Store
from agent.transfer.files import (
    fsync_dir,
    keep_local_copy,
    locally_edited,
    write_atomic,
)

COMMIT_BATCH = 64
FLUSH_INTERVAL = 1.0  # seconds a verified file may wait for its batch
SIDECAR_SUFFIX = ".meta.json"


@dataclass(frozen=True, slots=True)
class Finished:
    """A download that is verified and fsynced, waiting to be placed and recorded."""

    item: Download
    job: JobSpec
    fetched: Fetched
    metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Placement:
    mirrored: Mirrored
    kept_as: str | None  # the name a locally edited file was moved aside to


class Committer:
    """Collects finished downloads of one pass and commits them in batches."""

    def __init__(
        self, store: Store, mirror_dir: Path, staging: Path, source: str, write_metadata: bool
    ) -> None:
        self.store = store
        self.mirror_dir = mirror_dir
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
                [(f.job.job_id, f.fetched.size, f.fetched.sha256) for f in batch]
            )
            recorded = await self.store.documents.recorded_sha256(
                self.source, [f.item.doc.remote_id for f in batch if f.item.known is not None]
            )
            placed = await asyncio.to_thread(self._place_all, batch, recorded)
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

    async def flush_periodically(self) -> None:
        """Keep files appearing promptly while a long pass is still downloading."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    def _place_all(self, batch: Sequence[Finished], recorded: Mapping[str, str]) -> list[Placement]:
        """Rename every file into place, then fsync each folder once (runs in a thread)."""
        placed = [self._place(f, recorded.get(f.item.doc.remote_id)) for f in batch]
        for folder in {(self.mirror_dir / p.mirrored.rel_path).parent for p in placed}:
            fsync_dir(folder)
        return placed

    def _place(self, finished: Finished, recorded_sha256: str | None) -> Placement:
        item = finished.item
        dest = self.mirror_dir / item.rel_path
        kept_as = None
        if dest.exists() and self._edited(item, dest, recorded_sha256):
            kept_as = keep_local_copy(dest).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        Path(finished.fetched.temp_path).replace(dest)
        meta_json, meta_hash = metadata_digest(finished.metadata)
        if meta_json is not None and self.write_metadata:
            write_atomic(
                dest.with_name(dest.name + SIDECAR_SUFFIX), meta_json.encode() + b"\n", self.staging
            )
        mirrored = Mirrored(
            finished.job.job_id,
            item.doc,
            item.rel_path,
            finished.fetched.size,
            finished.fetched.sha256,
            dest.stat().st_mtime_ns,
            meta_json,
            meta_hash,
        )
        return Placement(mirrored, kept_as)

    @staticmethod
    def _edited(item: Download, dest: Path, recorded_sha256: str | None) -> bool:
        """Is the file at `dest` something other than what the agent last wrote there?"""
        known = item.known
        if known is None or known.rel_path != item.rel_path or recorded_sha256 is None:
            return True  # the agent never wrote this path for this document
        return locally_edited(dest, known.size, known.mtime_ns, recorded_sha256)


def prune(path: Path) -> None:
    """Delete a mirrored file and its sidecar (for sources that ask for it)."""
    for victim in (path, path.with_name(path.name + SIDECAR_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            victim.unlink()
