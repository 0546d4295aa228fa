"""One pass over a source: list -> plan (pure) -> download concurrently -> record."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.config import AgentConfig, SourceConfig
from agent.engine.commit import SIDECAR_SUFFIX, Committer, Finished, adopt_in_place, prune
from agent.engine.filtered_out import remove_filtered_out
from agent.engine.plan import (
    Download,
    Plan,
    Sidecar,
    order_moves,
)
from agent.engine.survey import survey
from agent.errors import DiskSpaceError, DocumentError, PermanentError, SkipDocument, describe_error
from agent.log import get_logger
from agent.models import (
    DocState,
    JobSpec,
    PassStats,
    metadata_digest,
)
from agent.sources.base import Source
from agent.state.store import Store
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.mirrorfs import Folder, MirrorFS, off_loop
from agent.transfer.pacing import RateLimiter
from agent.transfer.retry import next_retry_seconds

Progress = Callable[[str, str, int, int | None], None]  # event, rel_path, bytes, total
FORGOTTEN = "deleted by hand; on_local_delete = forget"


@dataclass
class SourceRuntime:
    """A configured source, ready to run passes: its implementation and shared budget."""

    config: SourceConfig
    source: Source
    limiter: RateLimiter
    log: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = get_logger(source=self.config.name)  # bound once, used per document


@dataclass
class _Tally:
    downloaded: int = 0
    adopted: int = 0
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
        staging: Folder,
        progress: Progress | None = None,
    ) -> None:
        self.agent = agent
        self.store = store
        self.downloader = downloader
        self.slots = asyncio.Semaphore(agent.max_concurrent_downloads)
        self.progress = progress
        self.fs = MirrorFS(agent.mirror_dir)
        self.staging = staging  # kept open by the agent for its whole life
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
        found = await survey(self.fs, self.store, rt.config, rt.source, rt.log)
        plan = found.plan
        await self._record_simple(rt, plan)
        await remove_filtered_out(self.store, self.fs, rt.config.name, found.removals, rt.log)
        tally = await self._download_all(rt, found.fetch, found.adopt)
        return PassStats(
            listed=found.listed,
            downloaded=tally.downloaded,
            adopted=tally.adopted,
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
        await self.store.documents.record_states(
            name, [(d, DocState.DELETED_LOCALLY, FORGOTTEN, None) for d in plan.forgotten]
        )
        for doc in plan.forgotten:
            rt.log.info("document.deleted_locally", remote_id=doc.remote_id)
        for item in plan.downloads:
            if item.restore:
                rt.log.info("document.restoring", remote_id=item.doc.remote_id, path=item.rel_path)
        await self.store.documents.record_removed(name, plan.removed)
        for rel_path in plan.prunes:
            await off_loop(prune, self.fs, rel_path)
            rt.log.info("document.pruned", path=rel_path)
        if plan.moves:
            steps = order_moves(plan.moves)
            await off_loop(_apply_moves, self.fs, steps, rt.config.write_metadata)
            for move in plan.moves:
                rt.log.info("document.moved", old=move.old_path, new=move.new_path)
            await self.store.documents.record_moves(
                name, [(m.doc.remote_id, m.doc.name, m.new_path) for m in plan.moves]
            )
        for sidecar in plan.sidecars:
            await self._write_sidecar(rt, sidecar)

    async def _download_all(
        self, rt: SourceRuntime, downloads: Sequence[Download], adopt: Sequence[Download] = ()
    ) -> _Tally:
        """Download with a bounded pool of workers; commit finished files in batches."""
        tally = _Tally()
        if not downloads and not adopt:
            return tally
        name = rt.config.name
        everything = [*adopt, *downloads]
        jobs = await self.store.jobs.claim(name, [(d.doc, d.rel_path) for d in everything])
        committer = Committer(self.store, self.fs, self.staging, name, rt.config.write_metadata)
        queue = iter(everything)
        in_place = {d.doc.remote_id for d in adopt}

        async def worker() -> None:
            for item in queue:  # shared by the workers: each item is taken once
                job = jobs[item.doc.remote_id]
                if item.doc.remote_id not in in_place or not await self._adopt(
                    rt, item, job, tally, committer
                ):
                    await self._one(rt, item, job, tally, committer)
                self.queue_depth -= 1

        self.queue_depth += len(everything)
        stop = asyncio.Event()
        flusher = asyncio.create_task(committer.flush_periodically(stop))
        workers = min(len(everything), self.agent.max_concurrent_downloads)
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            stop.set()
            self.queue_depth = max(0, self.queue_depth - sum(1 for _ in queue))
            await flusher  # its last round commits what is left
        return tally

    async def _adopt(
        self, rt: SourceRuntime, item: Download, job: JobSpec, tally: _Tally, committer: Committer
    ) -> bool:
        """Record the file in place without a download; False when it changed meanwhile."""
        fetched = await off_loop(adopt_in_place, self.fs, item)
        if fetched is None:
            return False
        metadata = await rt.source.describe(item.doc)
        tally.adopted += 1
        await committer.add(Finished(item, job, fetched, metadata, in_place=True))
        return True

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
            await off_loop(
                _write_sidecar, self.fs, sidecar.rel_path, text.encode() + b"\n", self.staging
            )
        await self.store.documents.record_metadata(
            rt.config.name, sidecar.doc.remote_id, text, digest
        )

    async def _failed(
        self, rt: SourceRuntime, item: Download, job: JobSpec, exc: DocumentError
    ) -> None:
        name = rt.config.name
        permanent = isinstance(exc, PermanentError)
        attempts = await self.store.jobs.attempts(job.job_id) + 1
        partial = self.staging.lstat(job.temp_name)
        size = partial.st_size if partial else 0
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


def _write_sidecar(fs: MirrorFS, rel_path: str, data: bytes, staging: Folder) -> None:
    parent, _, name = rel_path.rpartition("/")
    with fs.make_folder(parent) as folder:
        folder.write_atomic(name + SIDECAR_SUFFIX, data, staging)


def _apply_moves(fs: MirrorFS, steps: Sequence[tuple[str, str]], sidecars: bool) -> None:
    """Carry out (old, new) renames in order; a missing old file is left for a restore."""
    for old, new in steps:
        _move_file(fs, old, new)
        if sidecars:
            _move_file(fs, old + SIDECAR_SUFFIX, new + SIDECAR_SUFFIX)
        old_parent = old.rpartition("/")[0]
        if "/" in old_parent:  # a sub-folder the move may have emptied, never the source's
            grand, _, leaf = old_parent.rpartition("/")
            holder = fs.folder(grand)
            if holder is not None:
                with holder:
                    holder.remove_if_empty(leaf)


def _move_file(fs: MirrorFS, old: str, new: str) -> None:
    """Rename one regular file; whatever already sits at `new` is kept aside, not replaced."""
    source = fs.parent(old)
    if source is None:
        return
    with source:
        old_name = old.rpartition("/")[2]
        found = source.lstat(old_name)
        if found is None or not stat.S_ISREG(found.st_mode):
            source.clear_link(old_name)
            return
        new_parent, _, new_name = new.rpartition("/")
        with fs.make_folder(new_parent) as dest:
            taken = dest.lstat(new_name)
            if taken is not None and not stat.S_ISLNK(taken.st_mode):
                dest.set_aside(new_name)
            dest.move_in(source, old_name, new_name)
            dest.fsync()
        source.fsync()
