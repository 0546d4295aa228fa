"""One pass over a source: lease -> list, plan and queue (streamed) -> the queue settles.

A pass has two halves that run at once. The listing half (`agent.engine.listing`) runs on
the one replica holding the source's pass lease: it plans the listing a window at a time
and queues downloads as jobs. The downloading half is every replica's workers
(`agent.engine.workers`), which claim queued jobs under leases. A pass returns when the
source's queue has settled for this replica: no job queued, none held here, none under an
expired lease; jobs under another replica's live lease are that replica's to finish.

A replica that finds the pass lease taken says who holds it and works the queue only. On
SQLite (one process per state folder) the same code runs with a single owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from agent.config import AgentConfig, SourceConfig
from agent.engine.commit import finish
from agent.engine.heartbeat import LeaseSettings
from agent.engine.listing import Listed, Lister
from agent.engine.tally import Tally
from agent.engine.workers import Progress, Workers
from agent.errors import StateError
from agent.log import get_logger
from agent.models import PassStats
from agent.sources.base import Source
from agent.state.store import Store
from agent.state.wakeup import LocalWakeup, Wakeup, Work
from agent.transfer.download import Downloader
from agent.transfer.mirrorfs import Folder, MirrorFS
from agent.transfer.pacing import Pacer

__all__ = ["Engine", "Progress", "SourceRuntime"]


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
class _PassLease:
    """The pass lease this replica holds for one source, kept alive by a renewal task.

    `until` is how long the last renewal that succeeded (or the take) guarantees the lease,
    on the monotonic clock and counted from before its statement was sent. The lease is
    held while renewals are not refused and `until` has not passed: a renewal task that
    fails or hangs cannot keep a lease another replica may take."""

    until: float
    alive: bool = True

    def held(self) -> bool:
        return self.alive and time.monotonic() < self.until


class Engine:
    """Runs passes and the download workers; shared by every source, so the concurrency
    limit is global. An async context manager (the workers run while it is open)."""

    def __init__(
        self,
        agent: AgentConfig,
        store: Store,
        downloader: Downloader,
        leases: LeaseSettings,
        *,
        staging: Folder,
        wakeup: Wakeup | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.agent = agent
        self.store = store
        self.leases = leases
        self.wakeup: Wakeup = wakeup or LocalWakeup()
        self.fs = MirrorFS(agent.mirror_dir)
        self.staging = staging  # kept open by the agent for its whole life
        self.runtimes: dict[str, SourceRuntime] = {}
        self._hints: asyncio.Task[None] | None = None
        self.workers = Workers(
            store,
            downloader,
            self.runtimes,
            leases,
            concurrency=agent.max_concurrent_downloads,
            fs=self.fs,
            staging=self.staging,
            progress=progress,
        )

    async def __aenter__(self) -> Engine:
        await self.workers.__aenter__()
        self._hints = asyncio.create_task(self._hear(), name="engine:hints")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._hints is not None:
            self._hints.cancel()
            await asyncio.gather(self._hints, return_exceptions=True)
        await self.workers.close(0.0)

    async def _hear(self) -> None:
        """Claim at once when any replica hints that it queued jobs (polling stays the
        fallback: the workers also claim every `leases.poll` seconds)."""
        with self.wakeup.subscribe(Work.JOBS) as inbox:
            while True:
                if await inbox.wait(self.leases.poll):
                    self.workers.wake()

    async def _queued(self, name: str) -> None:
        """A pass queued jobs of `name`: wake the workers here, and hint every replica."""
        self.workers.wake()
        await self.wakeup.notify(name, Work.JOBS)

    async def run_pass(self, rt: SourceRuntime) -> PassStats:
        """A pass over the source: listed here when this replica gets its pass lease; its
        queue worked here in any case, until it settles (see the module docstring)."""
        name = rt.config.name
        rt.log.debug("pass.started")
        self.workers.restart(name)
        self.workers.serve(name)
        before = self.workers.tally(name).copy()
        leased = False
        try:
            async with self._pass_lease(name) as lease:
                leased = lease is not None
                listed = Listed() if lease is None else await self._listed(rt, lease)
            await self.workers.settle(name)
        except Exception as exc:
            if leased:
                await self.store.status.pass_finished(name, False, str(exc))
            raise
        finally:
            self.workers.unserve(name)
        stats = _stats(listed, before, self.workers.tally(name))
        ok = stats.failed == 0
        if leased:  # what its listing had to say is told in the summary and in status
            stats = dataclasses.replace(stats, warnings=tuple(rt.source.notices))
            error = "; ".join(stats.errors[:3]) if not ok else None
            warning = "; ".join(stats.warnings) or None
            await self.store.status.pass_finished(name, ok, error, warning)
        await self.store.journal.pass_completed(name, stats, ok=ok)  # events: the pass's counts
        summary = {k: v for k, v in dataclasses.asdict(stats).items() if k != "errors"}
        rt.log.info("pass.done", listed_here=leased, **summary)
        return stats

    async def _listed(self, rt: SourceRuntime, lease: _PassLease) -> Listed:
        await self.store.status.pass_started(rt.config.name, rt.config.type)
        lister = Lister(
            self.store,
            rt,
            fs=self.fs,
            staging=self.staging,
            queued=lambda: self._queued(rt.config.name),
            adoptable=self.workers.adoptable,
            still_leased=lease.held,
        )
        return await lister.run()

    @asynccontextmanager
    async def _pass_lease(self, name: str) -> AsyncIterator[_PassLease | None]:
        """The source's pass lease for the listing, renewed meanwhile; None when another
        replica holds it (then this pass only works the queue). A listing answers the passes
        asked for (`POST /sync` on any replica) before it started."""
        owner, seconds = self.leases.owner, self.leases.seconds
        since = self.store.db.clock()
        asked = time.monotonic()
        holder = await self.store.leases.take(name, owner, seconds)
        if holder is not None:
            get_logger(source=name).info(
                "pass.listed_elsewhere", holder=holder.owner, lease_until=holder.lease_until
            )
            await self.store.requests.answered(name, holder.taken_at)  # that listing answers
            yield None
            return
        lease = _PassLease(asked + seconds)
        renewing = asyncio.create_task(self._renew(name, lease), name=f"pass-lease:{name}")
        try:
            yield lease
        except Exception:  # a failed listing answers the requests too: asking again fails again
            await self.store.requests.answered(name, since)
            raise
        else:  # (a cancelled one does not: its requests wait for the next pass)
            await self.store.requests.answered(name, since)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await finish(asyncio.ensure_future(self.store.leases.release(name, owner)))

    async def _renew(self, name: str, lease: _PassLease) -> None:
        """Renew the lease every third of its length. A renewal the state database fails
        (locked, unreachable) is tried again while the lease still runs at the next try;
        otherwise, or when a renewal is refused (another replica took the lease over), the
        lease is lost and the listing stops at its next step."""
        interval = self.leases.seconds / 3
        while lease.alive:
            await asyncio.sleep(interval)
            asked = time.monotonic()
            try:
                lease.alive = await self.store.leases.renew(
                    name, self.leases.owner, self.leases.seconds
                )
            except StateError as exc:
                lease.alive = time.monotonic() + interval < lease.until
                get_logger(source=name).warning(
                    "pass.lease_renewal_failed", error=str(exc), retrying=lease.alive
                )
                continue
            if lease.alive:
                lease.until = asked + self.leases.seconds
        get_logger(source=name).warning("pass.lease_lost")


def _stats(listed: Listed, before: Tally, after: Tally) -> PassStats:
    failed = after.failed - before.failed
    return PassStats(
        listed=listed.listed,
        downloaded=after.downloaded - before.downloaded,
        adopted=after.adopted - before.adopted,
        moved=listed.moved,
        skipped=listed.skipped + after.skipped - before.skipped,
        removed=listed.removed,
        failed=failed,
        unchanged=listed.unchanged,
        bytes=after.bytes - before.bytes,
        errors=tuple(after.errors)[len(after.errors) - min(failed, len(after.errors)) :],
    )
