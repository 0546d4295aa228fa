"""One pass over a source: list -> plan (pure) -> download concurrently -> record."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, SourceConfig
from agent.engine.commit import SIDECAR_SUFFIX, Committer, Finished, prune
from agent.engine.plan import Download, Move, Plan, Sidecar, plan_pass
from agent.errors import DiskSpaceError, DocumentError, PermanentError, SkipDocument, describe_error
from agent.log import get_logger
from agent.models import DocState, JobSpec, PassStats, RemoteDocument, metadata_digest
from agent.sources.base import Source
from agent.state.store import Store
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.files import (
    staging_dir,
    write_atomic,
)
from agent.transfer.pacing import Pacer
from agent.transfer.retry import next_retry_seconds

Progress = Callable[[str, str, int, int | None], None]  # event, rel_path, bytes, total


@dataclass
class SourceRuntime:
    """A configured source, ready to run passes: its implementation and shared budget."""

    config: SourceConfig
    source: Source
    limiter: Pacer
    log: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = get_logger(source=self.config.name)  # bound once, used per document


@dataclass
class _Tally:
    downloaded: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class Engine:
    """Runs passes; shared by every source so the concurrency limit is global."""

    def __init__(
        self,
        agent: AgentConfig,
        store: Store,
        downloader: Downloader,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.agent = agent
        self.store = store
        self.downloader = downloader
        self.slots = asyncio.Semaphore(agent.max_concurrent_downloads)
        self.progress = progress
        self.staging = staging_dir(agent.mirror_dir)
        self.queue_depth = 0

    async def run_pass(self, rt: SourceRuntime) -> PassStats:
        name = rt.config.name
        log = get_logger(source=name)
        await self.store.status.pass_started(name, rt.config.type)
        try:
            stats = await self._pass(rt)
        except Exception as exc:
            await self.store.status.pass_finished(name, False, str(exc))
            raise
        ok = stats.failed == 0
        await self.store.status.pass_finished(name, ok, None if ok else "; ".join(stats.errors[:3]))
        await self.store.journal.pass_completed(name, stats, ok=ok)  # events: the pass's counts
        summary = {k: v for k, v in dataclasses.asdict(stats).items() if k != "errors"}
        log.info("pass.done", **summary)
        return stats

    async def _pass(self, rt: SourceRuntime) -> PassStats:
        name = rt.config.name
        listing = _unique([doc async for doc in rt.source.list_documents()])
        known = await self.store.documents.known(name)
        plan = plan_pass(name, listing, known)
        await self._record_simple(rt, plan)
        tally = await self._download_all(rt, plan.downloads)
        return PassStats(
            listed=len(listing),
            downloaded=tally.downloaded,
            moved=len(plan.moves),
            skipped=len(plan.skips) + tally.skipped,
            removed=len(plan.removed),
            failed=tally.failed,
            unchanged=plan.unchanged + plan.waiting,
            bytes=tally.bytes,
            errors=tuple(tally.errors),
        )

    async def _record_simple(self, rt: SourceRuntime, plan: Plan) -> None:
        name = rt.config.name
        await self.store.documents.record_states(
            name, [(d, DocState.SKIPPED, d.skip_reason or "skipped", None) for d in plan.skips]
        )
        await self.store.documents.record_removed(name, plan.removed)
        for rel_path in plan.prunes:
            await asyncio.to_thread(prune, self.agent.mirror_dir / rel_path)
            get_logger(source=name).info("document.pruned", path=rel_path)
        if plan.moves:
            await self.store.documents.record_moves(
                name, [await self._move(m, rt) for m in plan.moves]
            )
        for sidecar in plan.sidecars:
            await self._write_sidecar(rt, sidecar)

    async def _move(self, move: Move, rt: SourceRuntime) -> tuple[str, str, str]:
        old = self.agent.mirror_dir / move.old_path
        new = self.agent.mirror_dir / move.new_path
        await asyncio.to_thread(_rename, old, new, rt.config.write_metadata)
        get_logger(source=rt.config.name).info(
            "document.moved", old=move.old_path, new=move.new_path
        )
        return move.doc.remote_id, move.doc.name, move.new_path

    async def _download_all(self, rt: SourceRuntime, downloads: Sequence[Download]) -> _Tally:
        """Download with a bounded pool of workers; commit finished files in batches."""
        tally = _Tally()
        if not downloads:
            return tally
        name = rt.config.name
        jobs = await self.store.jobs.claim(name, [(d.doc, d.rel_path) for d in downloads])
        committer = Committer(
            self.store, self.agent.mirror_dir, self.staging, name, rt.config.write_metadata
        )
        queue = iter(downloads)

        async def worker() -> None:
            for item in queue:  # shared by the workers: each item is taken once
                await self._one(rt, item, jobs[item.doc.remote_id], tally, committer)
                self.queue_depth -= 1

        self.queue_depth += len(downloads)
        flusher = asyncio.create_task(committer.flush_periodically())
        workers = min(len(downloads), self.agent.max_concurrent_downloads)
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            flusher.cancel()
            self.queue_depth = max(0, self.queue_depth - sum(1 for _ in queue))
            await committer.flush()
        return tally

    async def _one(
        self, rt: SourceRuntime, item: Download, job: JobSpec, tally: _Tally, committer: Committer
    ) -> None:
        async with self.slots:
            try:
                finished = await self._fetch(rt, item, job)
            except SkipDocument as exc:
                tally.skipped += 1
                doc = replace(item.doc, external_url=exc.external_url or item.doc.external_url)
                await self.store.documents.record_states(
                    rt.config.name, [(doc, DocState.SKIPPED, exc.message, None)]
                )
                return
            except DocumentError as exc:
                tally.failed += 1
                tally.errors.append(f"{item.rel_path}: {describe_error(exc)}")
                await self._failed(rt, item, job, exc)
                return
        tally.downloaded += 1
        tally.bytes += finished.fetched.size
        await committer.add(finished)

    async def _fetch(self, rt: SourceRuntime, item: Download, job: JobSpec) -> Finished:
        metadata = await rt.source.describe(item.doc)
        endpoint = Endpoint(rt.source, item.doc, job.attrs, rt.limiter)
        self._notify("start", item.rel_path, 0, item.doc.size)
        fetched = await self.downloader.fetch(job, endpoint, self.store.jobs.checkpoint)
        self._notify("done", item.rel_path, fetched.size, fetched.size)
        rt.log.info(
            "download.done", remote_id=item.doc.remote_id, path=item.rel_path, bytes=fetched.size
        )
        return Finished(item, job, fetched, metadata)

    async def _write_sidecar(self, rt: SourceRuntime, sidecar: Sidecar) -> None:
        """The listing's metadata changed while the document did not: rewrite the sidecar."""
        text, digest = metadata_digest(sidecar.doc.metadata)
        if text is not None and rt.config.write_metadata:
            dest = self.agent.mirror_dir / (sidecar.rel_path + SIDECAR_SUFFIX)
            await asyncio.to_thread(write_atomic, dest, text.encode() + b"\n", self.staging)
        await self.store.documents.record_metadata(
            rt.config.name, sidecar.doc.remote_id, text, digest
        )

    async def _failed(
        self, rt: SourceRuntime, item: Download, job: JobSpec, exc: DocumentError
    ) -> None:
        name = rt.config.name
        permanent = isinstance(exc, PermanentError)
        attempts = await self.store.jobs.attempts(job.job_id) + 1
        size = _size(self.staging / job.temp_name)
        retry_in = next_retry_seconds(attempts, permanent=permanent)
        if isinstance(exc, DiskSpaceError):
            retry_in = 0.0  # a local condition: the next pass resumes once space is freed
        await self.store.jobs.failed(
            job.job_id,
            kind=exc.kind,
            error=describe_error(exc),
            permanent=permanent,
            retry_in=retry_in,
            bytes_done=size,
        )
        await self.store.documents.record_states(
            name, [(item.doc, DocState.FAILED, describe_error(exc), item.rel_path)]
        )
        self._notify("failed", item.rel_path, size, item.doc.size)
        get_logger(source=name).warning(
            "download.failed",
            remote_id=item.doc.remote_id,
            path=item.rel_path,
            kind=exc.kind,
            error=str(exc),
        )

    def _notify(self, event: str, rel_path: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(event, rel_path, done, total)


def _unique(listing: list[RemoteDocument]) -> list[RemoteDocument]:
    seen: dict[str, RemoteDocument] = {}
    for doc in listing:
        seen.setdefault(doc.remote_id, doc)
    return list(seen.values())


def _rename(old: Path, new: Path, sidecar: bool) -> None:
    if not old.exists():
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old, new)
    if sidecar:
        old_meta = old.with_name(old.name + SIDECAR_SUFFIX)
        if old_meta.exists():
            os.replace(old_meta, new.with_name(new.name + SIDECAR_SUFFIX))
    with contextlib.suppress(OSError):
        old.parent.rmdir()  # only succeeds when the folder became empty


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
