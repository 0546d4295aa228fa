"""One attempt at a leased job: take over what an earlier attempt left, then adopt the file
already in place or download the document.

A job the listing found already in the mirror (its quick check, `Lister._hint_adoptions`)
is adopted in place: the file is hashed, not downloaded. The hints live here, per source,
until their job is worked or the source's next pass begins; another replica, which got no
hint, downloads the document and the commit adopts the identical file. That fallback also
bounds memory: past `MAX_HINTS` per source (a recovery of a huge mirror lists far ahead of
its workers), further files are downloaded and adopted at commit instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.engine.commit import Finished, adopt_in_place
from agent.engine.filters import Filters, size_refusal
from agent.engine.handoff import discard, take_over
from agent.engine.plan import Download
from agent.errors import SkipDocument
from agent.log import get_logger
from agent.models import JobSpec
from agent.state.jobs import Claimed
from agent.state.store import Store
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.mirrorfs import Folder, MirrorFS, off_loop

if TYPE_CHECKING:
    from agent.engine.sync import SourceRuntime

Progress = Callable[[str, str, int, int | None], None]  # event, rel_path, bytes, total
MAX_HINTS = 50_000  # adoption hints kept per source (a few MB)


class Attempts:
    """Runs attempts at jobs for the workers, and keeps the listing's adoption hints."""

    def __init__(
        self,
        store: Store,
        downloader: Downloader,
        fs: MirrorFS,
        staging: Folder,
        progress: Progress | None,
        *,
        max_hints: int = MAX_HINTS,
    ) -> None:
        self.store = store
        self.downloader = downloader
        self.fs = fs
        self.staging = staging
        self.progress = progress
        self.max_hints = max_hints
        self.hints: dict[str, set[tuple[str, str, str]]] = {}  # source: (id, version, path)
        self.full: set[str] = set()  # sources whose hints overflowed this pass (said once)

    def adoptable(self, source: str, items: Sequence[Download]) -> None:
        """These queued downloads may be adopted from the file already at their path (as
        many as there is room for: the others are downloaded, and adopted at commit)."""
        hints = self.hints.setdefault(source, set())
        room = max(self.max_hints - len(hints), 0)
        if len(items) > room and source not in self.full:
            self.full.add(source)
            get_logger(source=source).info("adoption.hints_full", kept=self.max_hints)
        hints.update((d.doc.remote_id, d.doc.version, d.rel_path) for d in items[:room])

    def forget_hints(self, source: str) -> None:
        """A new pass of `source`: the hints of the last one that other replicas took."""
        self.hints.pop(source, None)
        self.full.discard(source)

    async def run(self, rt: SourceRuntime, job: Claimed) -> Finished:
        """The job's file, adopted in place when hinted and still there, else downloaded."""
        return await self._adopt(rt, job) or await self.download(rt, job, {})

    async def download(self, rt: SourceRuntime, job: Claimed, attrs: Mapping[str, str]) -> Finished:
        """Download the job's document (continuing an earlier attempt's bytes), `attrs`
        added to this attempt's request."""
        spec = await self._take_over(job)
        metadata = await rt.source.describe(job.doc)
        refuse = None if job.doc.size is not None else size_refusal(Filters.of(rt.config))
        endpoint = Endpoint(rt.source, job.doc, {**spec.attrs, **attrs}, rt.limiter, refuse)

        async def checkpoint(_: int, offset: int, validator: str | None) -> None:
            await self.store.jobs.checkpoint(job.lease, offset, validator, spec.temp_name)

        self.notify("start", spec.rel_path, 0, job.doc.size)
        try:
            fetched = await self.downloader.fetch(spec, endpoint, checkpoint)
            if refuse is not None and (refused := refuse(fetched.size)):
                raise refused  # a body that announced no size, too small or too large
        except SkipDocument:
            await off_loop(discard, self.staging, spec.temp_name)
            raise
        self.notify("done", spec.rel_path, fetched.size, fetched.size)
        rt.log.info(
            "download.done",
            remote_id=job.doc.remote_id,
            path=spec.rel_path,
            bytes=fetched.size,
            digest=fetched.digest,  # "<algorithm>:<hex>"
        )
        return Finished(Download(job.doc, spec.rel_path), job.lease, spec, fetched, metadata)

    async def _adopt(self, rt: SourceRuntime, job: Claimed) -> Finished | None:
        """The file already at the job's path, hashed, when the listing hinted it may be
        adopted; None when there was no hint or the file changed since (then: download)."""
        spec = job.spec
        hints = self.hints.get(spec.source)
        hint = (job.doc.remote_id, job.doc.version, spec.rel_path)
        if not hints or hint not in hints or job.partial is not None:
            return None
        hints.discard(hint)
        item = Download(job.doc, spec.rel_path)
        fetched = await off_loop(adopt_in_place, self.fs, item, self.downloader.algorithm)
        if fetched is None:
            return None
        metadata = await rt.source.describe(job.doc)
        return Finished(item, job.lease, spec, fetched, metadata, in_place=True)

    async def _take_over(self, job: Claimed) -> JobSpec:
        """This attempt's spec, its staging file holding the earlier attempt's bytes."""
        spec, partial = job.spec, job.partial
        if partial is None:
            return spec
        if not (spec.validator or spec.digest):  # bytes nothing can continue: start over
            if not job.holder_may_live:
                await off_loop(discard, self.staging, partial)
            return spec
        copy = job.holder_may_live
        size = await off_loop(take_over, self.staging, partial, spec.temp_name, copy=copy)
        if size:
            await self.store.jobs.checkpoint(job.lease, size, spec.validator, spec.temp_name)
            get_logger(source=spec.source).info(
                "download.taken_over", remote_id=spec.remote_id, bytes=size, copied=copy
            )
        if copy:
            await off_loop(discard, self.staging, partial)
        return replace(spec)

    def notify(self, event: str, rel_path: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(event, rel_path, done, total)
