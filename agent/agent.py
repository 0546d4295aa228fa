"""The assembled agent: state store, downloader, engine and source runtimes in one exit stack.

One process is one replica (`agent.state.replica`). With SQLite it holds the state folder's
lock, so it is the only one, and at start-up it lets go of whatever its previous life held.
With PostgreSQL any number of replicas run on the same configuration; whatever a stopped one
held moves on when its leases run out.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agent.config import Config, SourceConfig
from agent.engine.heartbeat import LeaseSettings
from agent.engine.ondemand import FetchResult, fetch_now
from agent.engine.sync import Engine, Progress, SourceRuntime
from agent.errors import (
    AgentError,
    AlreadyRunningError,
    AuthenticationError,
    ConfigError,
    FatalSourceError,
)
from agent.events.hooks import Command, Hooks, on_change_hooks
from agent.events.webhooks import outbox_endpoint
from agent.log import get_logger
from agent.models import JobSpec, PassStats
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.registry import build_source
from agent.state import replica
from agent.state.database import sqlite_file
from agent.state.store import Store
from agent.state.wakeup import Wakeup, open_wakeup
from agent.transfer.digests import algorithm_of
from agent.transfer.download import READ_BUFFER, Downloader
from agent.transfer.files import remove_stale_temps
from agent.transfer.mirrorfs import Folder, MirrorFS, off_loop
from agent.transfer.pacing import BandwidthLimiter, request_limiter

STALE_AFTER = 3600.0  # seconds a staging file no job owns is left alone, with replicas
PassOutcome = PassStats | BaseException
Sleep = Callable[[float], Awaitable[None]]
SHARED_POLL = 5.0  # seconds between claims when idle, with replicas (their hints wake it sooner)
ALONE_POLL = 30.0  # seconds between claims when idle, as the only process (it wakes itself)

# Source types that keep credentials only in the state database, and what to do once a
# damaged database was set aside and they are gone.
LOST_WITH_THE_DATABASE = {
    "huddle": (
        "its rotated refresh token lived only there: put a new refresh_token in its configuration"
    ),
    "opencde": (
        "its sign-in and document selection lived only there: run `sync-agent login {name}`, "
        "then `sync-agent select {name}`"
    ),
}


def acquire_lock(state_dir: Path) -> IO[str]:
    """Hold the state folder's lock for the life of the process (one instance per folder)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = (state_dir / "agent.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunningError(
            f"another sync-agent is already running with the state folder {state_dir}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _placed(fs: MirrorFS, rel_path: str, size: int, digest: str) -> int | None:
    """The mtime_ns of the regular file at `rel_path` when it has exactly `size` bytes and
    the recorded `digest` (hashed with the algorithm that digest names)."""
    folder = fs.parent(rel_path, repair=False)
    if folder is None:
        return None
    with folder:
        name = rel_path.rpartition("/")[2]
        found = folder.lstat(name)
        if found is None or found.st_size != size:
            return None
        hashed = folder.digest(name, algorithm_of(digest))
    return hashed[1].st_mtime_ns if hashed is not None and hashed[0] == digest else None


@dataclass
class _Slot:
    runtime: SourceRuntime
    stack: AsyncExitStack
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Agent:
    """Owns every resource; passes over sources run through it."""

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: Engine,
        stack: AsyncExitStack,
        staging: Folder,
        *,
        sleep: Sleep = asyncio.sleep,
        rate_window: float = 60.0,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.stack = stack
        self.staging = staging
        self.fs = MirrorFS(config.agent.mirror_dir)
        self.sleep = sleep  # retry back-off waits (tests inject a fast one)
        self.rate_window = rate_window  # the request budget's window (tests shorten it)
        self.slots: dict[str, _Slot] = {}
        self.signed_in_since_rebuild: set[str] = set()
        self.hooks: Hooks | None = None  # the on_change commands, once open
        self.log = get_logger()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: Config,
        *,
        progress: Progress | None = None,
        sleep: Sleep = asyncio.sleep,
        rate_window: float = 60.0,
    ) -> AsyncIterator[Agent]:
        """Open every resource; `sleep` and `rate_window` are test hooks, not user settings."""
        agent_cfg = config.agent
        alone = sqlite_file(agent_cfg.state_url) is not None
        async with AsyncExitStack() as stack:
            if alone:  # one process per SQLite state; replicas share a server database
                lock = acquire_lock(agent_cfg.state_dir)
                stack.callback(lock.close)
            store = await stack.enter_async_context(
                Store.open(
                    agent_cfg.state_url,
                    agent_cfg.state_dir,
                    repair=alone,  # the lock holder may set a damaged SQLite file aside
                    connections=agent_cfg.max_concurrent_downloads + 4,
                )
            )
            staging = await off_loop(MirrorFS(agent_cfg.mirror_dir).open_staging)
            stack.callback(staging.close)
            session = await stack.enter_async_context(
                open_session(
                    limit=agent_cfg.max_concurrent_downloads * 2,
                    limit_per_host=agent_cfg.max_connections_per_host,
                    total_timeout=None,
                    read_bufsize=READ_BUFFER,
                )
            )
            downloader = await stack.enter_async_context(
                Downloader(
                    session,
                    staging.path,
                    bandwidth=BandwidthLimiter(agent_cfg.bandwidth_limit),
                    min_free_space=agent_cfg.min_free_space,
                    threads=agent_cfg.max_concurrent_downloads,
                    algorithm=agent_cfg.hash_algorithm,
                    proxies=config.proxies,
                    sleep=sleep,
                )
            )
            me = replica.current()
            await stack.enter_async_context(store.replicas.registered(me, time.time()))
            wakeup = await stack.enter_async_context(
                open_wakeup(store.db, agent_cfg.state_listen_url)
            )
            leases = LeaseSettings(
                str(me), agent_cfg.lease_duration, poll=ALONE_POLL if alone else SHARED_POLL
            )
            engine = Engine(
                agent_cfg,
                store,
                downloader,
                leases,
                staging=staging,
                wakeup=wakeup,
                progress=progress,
            )
            agent = cls(config, store, engine, stack, staging, sleep=sleep, rate_window=rate_window)
            # events: endpoints known before any pass journals, so they miss none of it
            await store.outbox.register([outbox_endpoint(h) for h in config.webhooks])
            agent.hooks = await stack.enter_async_context(
                on_change_hooks(store.journal, agent.on_change, agent_cfg.on_change_timeout)
            )
            await agent.reconcile(alone=alone)
            await stack.enter_async_context(agent.engine)
            for source in config.sources:
                if source.enabled:
                    await agent.add_source(source)
            try:
                yield agent
            finally:
                for name in list(agent.slots):
                    await agent.remove_source(name)

    async def reconcile(self, *, alone: bool) -> None:
        """At start-up: let go of what a previous process held (when `alone`: the SQLite
        instance lock proves it gone), forget temp files no job owns (partials of live jobs
        are kept; with replicas, only files old enough that no replica is writing them), and
        adopt files a crash left renamed into place before their rows were committed."""
        if alone:
            await self.store.jobs.release_all()
            await self.store.leases.release_all()
        quiet = 0.0 if alone else STALE_AFTER
        removed = await off_loop(
            remove_stale_temps, self.staging, await self.store.jobs.temp_names(), older_than=quiet
        )
        if removed:
            self.log.info("reconcile.removed_stale_temps", count=len(removed))
        await self.prune_journal()
        for job, size, digest in await self.store.jobs.verified():
            await self._adopt(job, size, digest)

    async def _adopt(self, job: JobSpec, size: int, digest: str) -> None:
        """A verified job whose temp file is gone and whose final file holds exactly the
        verified bytes was renamed into place before its row was committed: it is done."""
        if self.staging.lstat(job.temp_name) is not None:
            return  # not renamed yet: the next pass places it
        found = await off_loop(_placed, self.fs, job.rel_path, size, digest)
        if found is None:
            return
        if await self.store.documents.adopt_placed(job, size, digest, found):
            self.log.info("reconcile.adopted", source=job.source, path=job.rel_path, bytes=size)

    async def prune_journal(self) -> None:
        """Forget journal entries older than `journal_retention`."""
        cutoff = self.store.db.clock() - self.config.agent.journal_retention
        pruned = await self.store.journal.prune(cutoff)
        if pruned:
            self.log.info("journal.pruned", entries=pruned)

    def on_change(self, name: str) -> Command:
        """The command to run after a pass of `name` changed the mirror (() for none)."""
        try:
            return self.config.on_change(self.config.source(name))
        except ConfigError:  # a source no longer configured
            return ()

    async def fetch_now(self, name: str, remote_id: str, reason: str) -> FetchResult:
        """Download one document now (after a pass of the source that is running ends).

        KeyError for a source not configured or not enabled."""
        slot = self.slots[name]
        async with slot.lock:
            return await fetch_now(self.engine, slot.runtime, remote_id, reason)

    async def add_source(self, cfg: SourceConfig) -> None:
        stack = AsyncExitStack()
        await stack.__aenter__()
        session = await stack.enter_async_context(open_session(limit=8, limit_per_host=8))
        limiter = request_limiter(
            cfg.requests_per_minute, self.store, cfg.name, window=self.rate_window
        )
        client = ApiClient(
            session, limiter, source=cfg.name, proxies=self.config.proxies, sleep=self.sleep
        )
        ctx = SourceContext(cfg, self.config.agent, client, self.store.for_source(cfg.name))
        runtime = SourceRuntime(cfg, build_source(ctx), limiter)
        self.slots[cfg.name] = _Slot(runtime, stack)
        self.engine.runtimes[cfg.name] = runtime

    async def remove_source(self, name: str) -> None:
        slot = self.slots.pop(name)
        async with slot.lock:
            await self.engine.workers.drop_source(name)
            self.engine.runtimes.pop(name, None)
            await slot.stack.aclose()

    @property
    def wakeup(self) -> Wakeup:
        """Hints between replicas that work is waiting (see `agent.state.wakeup`)."""
        return self.engine.wakeup

    async def run_pass(self, name: str) -> PassStats:
        """One pass over a source; never two at once for the same source."""
        slot = self.slots[name]
        async with slot.lock:
            try:
                stats = await self.engine.run_pass(slot.runtime)
            except AuthenticationError as exc:
                explained = self._explained(slot.runtime.config, exc)
                if explained is exc:
                    raise
                raise explained from exc
            self.signed_in_since_rebuild.add(name)
            return stats

    def _explained(self, cfg: SourceConfig, exc: AuthenticationError) -> AuthenticationError:
        """The refusal, with its likely cause while credentials lost with the state are not
        replaced yet (no pass of the source succeeded since the rebuild)."""
        rebuilt = self.store.db.rebuilt_from
        hint = LOST_WITH_THE_DATABASE.get(cfg.type)
        if rebuilt is None or hint is None or cfg.name in self.signed_in_since_rebuild:
            return exc
        return AuthenticationError(
            cfg.name,
            f"the state database was damaged and rebuilt at start-up (the damaged file is "
            f"kept at {rebuilt}), and {hint.format(name=cfg.name)} (the server said: "
            f"{exc.message})",
        )

    async def sync_once(self, names: Sequence[str] | None = None) -> dict[str, PassOutcome]:
        """A pass over each named (default: every enabled) source, concurrently."""
        chosen = list(names) if names else list(self.slots)
        results = await asyncio.gather(*(self._guarded(n) for n in chosen), return_exceptions=True)
        return dict(zip(chosen, results, strict=True))

    async def _guarded(self, name: str) -> PassStats:
        try:
            return await self.run_pass(name)
        except FatalSourceError as exc:
            self.log.error("pass.fatal", source=name, error=str(exc))
            raise
        except AgentError as exc:
            self.log.error("pass.failed", source=name, error=str(exc))
            raise
