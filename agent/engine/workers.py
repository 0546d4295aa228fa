"""The download workers of one replica: claim jobs under leases, download them, commit them.

One feeder claims batches of jobs for the sources this replica serves, as long as it has
room (`max_concurrent_downloads` running, as many again leased and waiting for a slot, and a
commit batch's worth verified and waiting for their commit), and naps when there is nothing
to claim until `wake()` is called (work was queued), room for a quarter of that frees up,
or its poll interval passes (work queued elsewhere, a lease of a stopped replica ran out).
Each claimed job runs in its own task: an attempt (`agent.engine.attempt`: take over what an earlier
attempt left, adopt the file in place or download it), then the file is handed to its
source's committer. A heartbeat (`agent.engine.heartbeat`) extends the leases of every job
this replica holds, from claim to commit; a job whose lease was lost meanwhile is
cancelled, and its fenced writes would be refused anyway.

A job that meets an error the source cannot get past (`FatalSourceError`: credentials
rejected) or the state database failing stops its source: the source's other downloads are
cancelled (they checkpoint and let their jobs go), nothing more of it is claimed, and the
pass waiting in `settle` raises the error. The next pass of the source starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING

from msgspec.structs import replace

from agent.engine.attempt import Attempts, Progress
from agent.engine.commit import COMMIT_BATCH, Committer, Finished, finish
from agent.engine.handoff import size_of
from agent.engine.heartbeat import LeaseSettings, heartbeat
from agent.engine.plan import Download
from agent.engine.tally import Tally
from agent.errors import (
    DiskSpaceError,
    DocumentError,
    LeaseLostError,
    PermanentError,
    SkipDocument,
    StateError,
    describe_error,
)
from agent.log import get_logger
from agent.models import DocState, JobSpec, RemoteDocument
from agent.state.documents import Mirrored
from agent.state.jobs import Claimed, JobLease
from agent.state.store import Store
from agent.transfer.download import Downloader
from agent.transfer.mirrorfs import Folder, MirrorFS
from agent.transfer.retry import next_retry_seconds

if TYPE_CHECKING:
    from agent.engine.sync import SourceRuntime

__all__ = ["Progress", "Workers"]

SETTLE_POLL = 1.0  # seconds between looks at the queue while a pass waits for it


class Workers:
    """Claims and runs download jobs of the sources it serves; an async context manager."""

    def __init__(
        self,
        store: Store,
        downloader: Downloader,
        runtimes: Mapping[str, SourceRuntime],
        leases: LeaseSettings,
        *,
        concurrency: int,
        fs: MirrorFS,
        staging: Folder,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.runtimes = runtimes
        self.leases = leases
        self.slots = asyncio.Semaphore(concurrency)
        # running, leased waiting for a slot, and a commit batch verified waiting for their
        # commit: small files fill whole batches instead of stalling the claims meanwhile
        self.capacity = concurrency * 2 + COMMIT_BATCH
        self.claim_at = max(1, self.capacity // 4)  # the room worth a claim
        self.fs = fs
        self.staging = staging
        self.attempts = Attempts(store, downloader, fs, staging, progress)
        self.tallies: dict[str, Tally] = {}
        self.held: dict[int, Claimed] = {}  # every job leased here, from claim to commit
        self.running: dict[int, tuple[str, asyncio.Task[None]]] = {}  # job id: source, task
        self.active: Counter[str] = Counter()  # running tasks per source
        self.started: set[int] = set()
        self.serving: Counter[str] = Counter()
        self.failures: dict[str, BaseException] = {}
        self.committers: dict[str, Committer] = {}
        self.closing = False
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Workers:
        self._tasks = [
            asyncio.create_task(self._feed(), name="workers:feed"),
            asyncio.create_task(self._heartbeat(), name="workers:heartbeat"),
        ]
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close(0.0)

    # ------------------------------------------------------------ what the engine calls

    def wake(self) -> None:
        """Work was queued: claim now rather than at the next poll (the wake-up hook)."""
        self._wake.set()

    def serve(self, source: str) -> None:
        """Claim jobs of `source` (counted: a pass and the daemon may both ask)."""
        self.serving[source] += 1
        self.wake()

    def unserve(self, source: str) -> None:
        self.serving[source] -= 1
        if self.serving[source] <= 0:
            del self.serving[source]

    def restart(self, source: str) -> None:
        """A new pass of `source`: forget the error that stopped the previous one, and the
        adoptions its listing hinted at that another replica's workers took."""
        self.failures.pop(source, None)
        self.attempts.forget_hints(source)

    def adoptable(self, source: str, items: Sequence[Download]) -> None:
        """These queued downloads may be adopted from the file already at their path."""
        self.attempts.adoptable(source, items)

    def tally(self, source: str) -> Tally:
        return self.tallies.setdefault(source, Tally())

    async def settle(self, source: str) -> None:
        """Wait until nothing of `source` is left for this replica to do: no job queued, none
        held here, none whose lease expired (jobs under another replica's live lease are
        its work). Raises the error that stopped the source, if one did."""
        while not self.closing:
            await self._raise_failure(source)
            local = any(c.spec.source == source for c in self.held.values())
            if not local and not await self.store.jobs.outstanding(source, self.leases.owner):
                await self._raise_failure(source)
                return
            self._settled.clear()
            self.wake()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SETTLE_POLL):
                    await self._settled.wait()

    async def fetch_one(
        self,
        rt: SourceRuntime,
        job: Claimed,
        *,
        attrs: Mapping[str, str],
        note: Mapping[str, object],
    ) -> list[Mirrored]:
        """Download and commit one job leased outside the feeder (an on-demand fetch) now,
        `attrs` added to this attempt's request and `note` to its journal entry; returns
        what was committed (nothing: the job was lost to another replica). A download error
        leaves the job held for the caller to record it failed; a commit that fails raises
        its error, the job given back with its verified file for the next pass."""
        self.held[job.lease.job_id] = job
        try:
            async with self.slots:
                finished = await self.attempts.download(rt, job, attrs)
        except DocumentError:
            self.held.pop(job.lease.job_id, None)
            raise
        except BaseException:
            await finish(asyncio.ensure_future(self._let_go(job)))
            raise
        committed: list[Mirrored] = []
        failures: list[BaseException] = []

        def flushed(batch: Sequence[Finished], done: Sequence[Mirrored]) -> None:
            committed.extend(done)
            self._flushed(batch, done)

        def failed(batch: Sequence[Finished], exc: BaseException) -> None:
            failures.append(exc)
            self._flush_failed(rt.config.name, batch, exc)

        committer = self._new_committer(rt, flushed, note, failed)
        committer.add(finished)
        await committer.close()
        if failures:
            raise failures[0]
        return committed

    async def drop_source(self, source: str) -> None:
        """The source was removed from the configuration: stop its downloads (they let
        their jobs go) and commit what is finished."""
        self.serving.pop(source, None)
        await self._cancel(self._tasks_of(source))
        committer = self.committers.pop(source, None)
        if committer is not None:
            await committer.close()
        await self._release_idle(source)

    def abort(self) -> None:
        """Cancel every running download now (they checkpoint and let their jobs go)."""
        for _, task in self.running.values():
            task.cancel()

    async def close(self, grace: float) -> None:
        """Stop claiming; give running downloads `grace` seconds to finish, then cancel
        them (they checkpoint and let their jobs go); commit what finished."""
        self.closing = True
        self._wake.set()
        self._settled.set()
        feeder, heartbeat = self._tasks or (None, None)
        if feeder is not None:
            await finish(feeder)
        if self.running and grace > 0:
            await asyncio.wait([t for _, t in self.running.values()], timeout=grace)
        await self._cancel([t for _, t in self.running.values()])
        for committer in list(self.committers.values()):
            await committer.close()
        await self._release_idle(None)
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        self._tasks = []

    # ------------------------------------------------------------ claiming

    async def _feed(self) -> None:
        while not self.closing:
            room = self.capacity - len(self.held)
            sources = [s for s in self.serving if s not in self.failures]
            claimed: list[Claimed] = []
            if sources and room >= self.claim_at:
                try:
                    claimed = await self.store.jobs.claim(
                        self.leases.owner, sources, room, self.leases.seconds, busy=list(self.held)
                    )
                except Exception as exc:  # the state failing: those passes raise it, not hang
                    for source in sources:
                        self._stop(source, exc)
            for job in claimed:
                self.held[job.lease.job_id] = job
                if job.spec.source in self.failures:  # stopped while the claim ran: not now
                    self._chore(self._give_back(job.spec.source, [(job.lease, job.spec.temp_name)]))
                else:
                    self._start(job)
            if not claimed:
                await self._nap()

    async def _nap(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.leases.poll):
                await self._wake.wait()
        self._wake.clear()

    async def _heartbeat(self) -> None:
        await heartbeat(self.store.jobs, self.leases, self._held_leases, self._lease_lost)

    def _held_leases(self) -> list[JobLease]:
        return [c.lease for c in self.held.values()]

    def _lease_lost(self, lease: JobLease) -> None:
        """A job's lease ran out or was taken while it was held: let the job go at once."""
        held = self.held.get(lease.job_id)
        if held is None or held.lease != lease:
            return  # committed (retired) or let go while the heartbeat ran: not lost
        get_logger().warning("job.lease_lost", job_id=lease.job_id)
        self.held.pop(lease.job_id, None)
        if lease.job_id in self.running:
            self.running[lease.job_id][1].cancel("lease lost")

    # ------------------------------------------------------------ one job

    def _start(self, job: Claimed) -> None:
        job_id = job.lease.job_id  # held since its claim
        task = asyncio.create_task(self._work(job), name=f"job:{job_id}")
        self.running[job_id] = (job.spec.source, task)
        self.active[job.spec.source] += 1
        task.add_done_callback(lambda ended: self._done(job, ended))

    def _done(self, job: Claimed, task: asyncio.Task[None]) -> None:
        """A job's task ended. One cancelled before it began never ran its own clean-up, and
        one that raised (the state database failed while it recorded how the job ended)
        could not finish it: its job goes back to the queue here. An error stops the source."""
        job_id, source = job.lease.job_id, job.spec.source
        if self.running.pop(job_id, None) is not None:
            self.active[source] -= 1
        error = None if task.cancelled() else task.exception()
        if error is not None:
            get_logger(source=source).error(
                "job.error",
                remote_id=job.doc.remote_id,
                error=str(error),
                error_type=type(error).__name__,
            )
            self._stop(source, error)
        if (job_id not in self.started or error is not None) and job_id in self.held:
            self._chore(self._give_back(source, [(job.lease, job.spec.temp_name)]))
        self.started.discard(job_id)
        self._after(source)

    async def _work(self, job: Claimed) -> None:
        source = job.spec.source
        self.started.add(job.lease.job_id)
        try:
            rt = self.runtimes.get(source)
            if rt is None:
                await self._let_go(job)
                return
            async with self.slots:
                finished = await self.attempts.run(rt, job)
            self._committer(rt).add(finished)
        except asyncio.CancelledError:
            await finish(asyncio.ensure_future(self._let_go(job)))
            raise
        except LeaseLostError:
            self.held.pop(job.lease.job_id, None)
            get_logger(source=source).warning("job.lease_lost", remote_id=job.doc.remote_id)
        except SkipDocument as exc:
            await self._skipped(job, exc)
        except DocumentError as exc:
            await self._failed(job, exc)
        except Exception as exc:  # stops the source: its pass raises it
            try:
                await self._let_go(job)
            finally:  # even when the state cannot take the job back (`_done` sees to it)
                self._stop(source, exc)

    async def _let_go(self, job: Claimed) -> None:
        """Give a job this replica still holds back to the queue, with its partial."""
        await self._release([(job.lease, job.spec.temp_name)])

    async def _release(self, items: Sequence[tuple[JobLease, str]]) -> None:
        """Give jobs this replica still holds back to the queue: (lease, staging file)."""
        mine = [(lease, temp) for lease, temp in items if self.held.pop(lease.job_id, None)]
        if mine:  # the others were lost already: another replica has them
            kept = [(lease, temp if size_of(self.staging, temp) else None) for lease, temp in mine]
            await self.store.jobs.release(kept)
            self._room_freed()

    async def _give_back(self, source: str, items: Sequence[tuple[JobLease, str]]) -> None:
        """`_release` where nobody waits for it: when the state database cannot take the jobs
        back, their leases run out (nothing renews them) and any replica claims them again."""
        try:
            await self._release(items)
        except StateError as exc:
            get_logger(source=source).warning("job.release_failed", jobs=len(items), error=str(exc))

    async def _skipped(self, job: Claimed, exc: SkipDocument) -> None:
        doc = replace(job.doc, external_url=exc.external_url or job.doc.external_url)
        await self.store.documents.record_states(
            job.spec.source, [(doc, DocState.SKIPPED, exc.message, None)]
        )
        self.held.pop(job.lease.job_id, None)  # held until recorded: else it goes back
        self.tally(job.spec.source).skipped += 1

    async def _failed(self, job: Claimed, exc: DocumentError) -> None:
        spec = job.spec
        permanent = isinstance(exc, PermanentError)
        attempts = await self.store.jobs.attempts(spec.job_id) + 1
        size = size_of(self.staging, spec.temp_name)
        retry_in = next_retry_seconds(attempts, permanent=permanent)
        if isinstance(exc, DiskSpaceError):
            retry_in = 0.0  # a local condition: the next pass resumes once space is freed
        mine = await self.store.jobs.failed(
            job.lease,
            kind=exc.kind,
            error=describe_error(exc),
            permanent=permanent,
            retry_in=retry_in,
            bytes_done=size or 0,
            temp_name=spec.temp_name if size else None,
        )
        self.held.pop(job.lease.job_id, None)  # held until recorded: else it goes back
        if not mine:
            return  # another replica holds the job now: its outcome is the one recorded
        await self._record_failure(job.doc, spec, exc, size or 0)

    async def _record_failure(
        self, doc: RemoteDocument, spec: JobSpec, exc: DocumentError, size: int
    ) -> None:
        tally = self.tally(spec.source)
        tally.failed += 1
        tally.errors.append(f"{spec.rel_path}: {describe_error(exc)}")
        await self.store.documents.record_states(
            spec.source, [(doc, DocState.FAILED, describe_error(exc), spec.rel_path)]
        )
        self.attempts.notify("failed", spec.rel_path, size, doc.size)
        get_logger(source=spec.source).warning(
            "download.failed",
            remote_id=doc.remote_id,
            path=spec.rel_path,
            kind=exc.kind,
            error=str(exc),
        )

    # ------------------------------------------------------------ commits and failures

    def _committer(self, rt: SourceRuntime) -> Committer:
        name = rt.config.name
        committer = self.committers.get(name)
        if committer is None:
            committer = self._new_committer(rt, self._flushed, {})
            self.committers[name] = committer
        return committer

    def _new_committer(
        self,
        rt: SourceRuntime,
        flushed: Callable[[Sequence[Finished], Sequence[Mirrored]], None],
        note: Mapping[str, object],
        failed: Callable[[Sequence[Finished], BaseException], None] | None = None,
    ) -> Committer:
        name = rt.config.name
        return Committer(
            self.store,
            self.fs,
            self.staging,
            name,
            rt.config.write_metadata,
            durability=self.attempts.downloader.durability,
            on_flushed=flushed,
            on_failed=failed or (lambda batch, exc: self._flush_failed(name, batch, exc)),
            note=note,
        )

    def _flushed(self, batch: Sequence[Finished], committed: Sequence[Mirrored]) -> None:
        done = {m.lease.job_id for m in committed}
        for finished in batch:
            self.held.pop(finished.lease.job_id, None)
            if finished.lease.job_id in done:
                tally = self.tally(finished.job.source)
                if finished.in_place:
                    tally.adopted += 1
                else:
                    tally.downloaded += 1
                    tally.bytes += finished.fetched.size
        self._room_freed()
        self._settled.set()

    def _flush_failed(self, source: str, batch: Sequence[Finished], exc: BaseException) -> None:
        """A batch could not be committed: let its jobs go (back to the queue, with their
        staging files when they were not renamed into place) and stop the source."""
        self._chore(self._give_back(source, [(f.lease, f.job.temp_name) for f in batch]))
        self._wake.set()
        self._stop(source, exc)

    def _stop(self, source: str, exc: BaseException) -> None:
        """Stop the source's work here: its pass reports `exc`."""
        self.failures.setdefault(source, exc)
        for task in self._tasks_of(source):
            task.cancel()
        self._settled.set()

    async def _raise_failure(self, source: str) -> None:
        """Raise what stopped the source, once its cancelled downloads have let go."""
        failure = self.failures.get(source)
        if failure is not None:
            await asyncio.gather(*self._tasks_of(source), return_exceptions=True)
            await asyncio.gather(*self._chores, return_exceptions=True)  # jobs given back
            raise failure

    def _after(self, source: str) -> None:
        """A job of `source` is done here: maybe room to claim; when it was the source's last
        running one, its pass may be settled and its committer need wait for nothing more."""
        self._room_freed()
        if self.active[source] <= 0:
            self.active.pop(source, None)
            self._settled.set()
            committer = self.committers.get(source)
            if committer is not None:
                committer.hurry()

    def _room_freed(self) -> None:
        """Jobs left `held`: wake the feeder once there is room worth a claim (not for every
        job, each wake-up a turn of its loop)."""
        if self.capacity - len(self.held) >= self.claim_at:
            self._wake.set()

    def _tasks_of(self, source: str) -> list[asyncio.Task[None]]:
        return [task for name, task in self.running.values() if name == source]

    async def _release_idle(self, source: str | None) -> None:
        """Let go of jobs held here that nothing works on any more (of `source`, or all)."""
        await asyncio.gather(*self._chores, return_exceptions=True)
        idle = [
            job
            for job_id, job in self.held.items()
            if job_id not in self.running and source in (None, job.spec.source)
        ]
        for job in idle:
            await self._let_go(job)

    def _chore(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
