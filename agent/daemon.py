"""`sync-agent run`: the long-running service around the agent.

It schedules one APScheduler job per source, serves the HTTP endpoint, speaks the systemd
notify protocol, reloads its configuration on SIGHUP and stops cleanly on SIGTERM/SIGINT.
Every resource sits in one AsyncExitStack, so shutdown is the reverse of start-up.

Between passes its workers keep serving every source's download queue: with replicas on
PostgreSQL a pass listed elsewhere, or a stopped replica's jobs, are worked here too. A
stop cancels the passes (everything they queued is durable), gives running downloads
`shutdown_timeout` to finish, then cancels them: they checkpoint and let their jobs go.

As one replica among several on a shared PostgreSQL state (registered by the agent,
`agent.state.replicas`) it answers passes asked of any replica: `POST /sync`
records a request and hints every replica (`agent.state.wakeup`), and each looks at the
requests on a hint or every REQUEST_POLL seconds and starts the passes asked for; the one
that takes the pass lease lists the source, which answers the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.agent import Agent
from agent.config import Config, SourceConfig, load_config
from agent.engine.ondemand import FetchResult
from agent.errors import EXIT_STATE, AgentError, ConfigError, CorruptStateError, StateError
from agent.events.webhooks import deliveries
from agent.log import get_logger
from agent.metrics import Metrics
from agent.models import PassStats
from agent.notify import Notifier, watchdog_interval, watchdog_loop
from agent.state import replica
from agent.state.journal import Event
from agent.state.wakeup import Work
from agent.transfer.files import reserve, volume
from agent.web import serve_web, status_json, status_report

REQUEST_POLL = 5.0  # seconds between looks at the passes asked for, when no hint comes

PRUNE_INTERVAL = 3600.0  # seconds between prunings of the change journal
HOOK_GRACE = 10.0  # seconds a running on_change command gets when the daemon stops


class Daemon:
    """The service: owns the agent, the schedule, the web endpoint and the notify socket."""

    def __init__(self, config: Config, path: Path) -> None:
        self.config = config
        self.path = path
        self.metrics_registry = Metrics()
        self.log = get_logger()
        self.stop_requested = asyncio.Event()
        self.signals = 0
        self.running: dict[str, asyncio.Task[None]] = {}
        self.again: set[str] = set()  # sources whose running pass is to be followed by another
        self.scheduler: AsyncIOScheduler | None = None
        self.agent: Agent | None = None
        self.notifier = Notifier()
        self._reloading: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[int] | None = None  # until ready: what a stop cancels
        self._reload_when_ready = False
        self.exit_code = 0
        self.replica = replica.current()

    # ------------------------------------------------------------ Controller (web.py)

    @property
    def metrics(self) -> Metrics:
        return self.metrics_registry

    def ready(self) -> bool:
        return self.agent is not None and self.scheduler is not None and self.scheduler.running

    async def status(self) -> dict[str, Any]:
        assert self.agent is not None
        report = await status_report(self.agent.store, self._configured())
        return {"replica": str(self.replica), **report}

    def _configured(self) -> list[str]:
        return [s.name for s in self.config.sources]

    async def trigger(self, source: str | None) -> list[str]:
        """Ask for a pass of one or every source; whichever replica runs it next answers."""
        assert self.agent is not None
        names = [source] if source is not None else list(self.agent.slots)
        for name in names:
            if name not in self.agent.slots:
                raise KeyError(name)
        await self.agent.store.requests.ask(names)
        for name in names:
            await self.agent.wakeup.notify(name, Work.SYNC)
        return names

    async def events(self, since: int, limit: int, wait: float) -> list[Event]:
        assert self.agent is not None
        return await self.agent.store.journal.wait(since, limit, wait)

    async def fetch(self, source: str, remote_id: str, reason: str) -> FetchResult:
        assert self.agent is not None
        return await self.agent.fetch_now(source, remote_id, reason)

    # ------------------------------------------------------------ life cycle

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; a stop while starting (migrations, a slow database)
        cancels the start-up and is as clean an exit as one after it."""
        loop = asyncio.get_running_loop()
        self._starting = asyncio.current_task()
        self._install_signals(loop)
        try:
            return await self._serve(loop)
        except asyncio.CancelledError:
            if not self.stop_requested.is_set() or self._starting is None:
                raise
            self._starting.uncancel()
            self.log.info("daemon.stopped", while_starting=True)
            return self.exit_code
        finally:
            self._remove_signals(loop)

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> int:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.notifier)
            self.agent = await stack.enter_async_context(Agent.open(self.config))
            self.metrics.set_replica(str(self.replica), self.replica.host, self.replica.pid)
            mirror = self.config.agent.mirror_dir
            setting = self.config.agent.min_free_space
            self.metrics.watch_free_space(
                lambda: volume(mirror).free, reserve(volume(mirror).size, setting)
            )
            await stack.enter_async_context(  # events: a worker per webhook endpoint
                deliveries(self.agent.store, self.config.webhooks, self.metrics)
            )
            self.scheduler = AsyncIOScheduler()
            self.scheduler.start()
            stack.callback(self.scheduler.shutdown, wait=False)
            for cfg in self.agent.slots.values():
                self.schedule(cfg.runtime.config)
            self.scheduler.add_job(
                self._prune, IntervalTrigger(seconds=PRUNE_INTERVAL), id="journal:prune"
            )
            requests = asyncio.create_task(self._answer_requests(), name="requests")
            stack.push_async_callback(_cancelled, requests)
            url = await stack.enter_async_context(
                serve_web(self, self.config.agent.listen, self.config.agent.api_token)
            )
            watchdog = self._start_watchdog()
            self._starting = None  # from here a stop drains the running work
            await self.notifier.ready(f"watching {len(self.agent.slots)} source(s)")
            self.log.info(
                "daemon.ready",
                listen=url,
                sources=sorted(self.agent.slots),
                replica=self.agent.engine.leases.owner,
            )
            if self._reload_when_ready:  # a SIGHUP came while starting
                self._on_reload_signal()
            await self.stop_requested.wait()
            await self.notifier.stopping()
            # however long shutdown_timeout is, systemd waits for the drain (+ margin)
            await self.notifier.extend_timeout(self.config.agent.shutdown_timeout + 15)
            self.log.info("daemon.stopping")
            if watchdog is not None:
                watchdog.cancel()
            self.scheduler.remove_all_jobs()
            await self._drain()
            if self.agent.hooks is not None:
                await self.agent.hooks.stop(HOOK_GRACE)
        self.log.info("daemon.stopped")
        return self.exit_code

    def schedule(self, cfg: SourceConfig) -> None:
        assert self.scheduler is not None
        assert self.agent is not None
        self.agent.engine.workers.serve(cfg.name)  # its queue, between passes too
        self.metrics.set_poll_interval(cfg.name, cfg.poll_interval)
        self.scheduler.add_job(
            self._scheduled,
            IntervalTrigger(seconds=cfg.poll_interval),
            args=[cfg.name],
            id=cfg.name,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now().astimezone(),
        )

    async def _prune(self) -> None:
        assert self.agent is not None
        try:
            await self.agent.prune_journal()
        except StateError as exc:
            self.log.error("journal.prune_failed", error=str(exc))

    async def _scheduled(self, name: str) -> None:
        """The job APScheduler runs: a coroutine, so it runs on the loop, not in a thread."""
        self.start_pass(name)

    def start_pass(self, name: str, *, after_running: bool = False) -> None:
        """Start a pass unless one of this source is already running; then, `after_running`
        starts one as soon as it ends (a reload's pass: the running one, even when all but
        finished, was planned under the old configuration)."""
        task = self.running.get(name)
        if task is not None and not task.done():
            if after_running:
                self.again.add(name)
            return
        task = asyncio.create_task(self._pass(name), name=f"pass:{name}")
        self.running[name] = task
        task.add_done_callback(lambda _: self._ended(name))

    def _ended(self, name: str) -> None:
        """A pass task ended: start the one asked to follow it, if the source still runs."""
        if name not in self.again:
            return
        self.again.discard(name)
        if self.agent is not None and name in self.agent.slots and not self.stop_requested.is_set():
            self.start_pass(name)

    async def _answer_requests(self) -> None:
        """Start the passes asked of any replica, on a hint or every REQUEST_POLL seconds."""
        assert self.agent is not None
        with self.agent.wakeup.subscribe(Work.SYNC) as inbox:
            while True:
                await inbox.wait(REQUEST_POLL)
                try:
                    asked = await self.agent.store.requests.pending()
                except StateError as exc:
                    self.log.error("requests.failed", error=str(exc))
                    continue
                for name in asked.keys() & self.agent.slots.keys():
                    self.start_pass(name)

    async def _pass(self, name: str) -> None:
        assert self.agent is not None
        slot = self.agent.slots.get(name)
        if slot is None or self.stop_requested.is_set():
            return
        started = time.monotonic()
        waited_before = slot.runtime.limiter.waited
        ok = False
        try:
            stats = await self.agent.run_pass(name)
            ok = stats.failed == 0
            self._record(name, stats)
        except AgentError as exc:
            self.metrics.add_failure(name, type(exc).__name__)
            self.log.error("pass.failed", source=name, error=str(exc))
            if isinstance(exc, CorruptStateError):  # a restart sets it aside and rebuilds
                self.exit_code = EXIT_STATE
                self.stop_requested.set()
        finally:
            self.metrics.observe_pass(name, time.monotonic() - started, ok)
            self.metrics.add_rate_wait(name, slot.runtime.limiter.waited - waited_before)
        try:
            await self._publish_status()
        except StateError as exc:
            self.log.error("status.failed", error=str(exc))

    def _record(self, name: str, stats: PassStats) -> None:
        if stats.downloaded:
            self.metrics.add_download(name, stats.bytes, files=stats.downloaded)
        for _ in range(stats.failed):
            self.metrics.add_failure(name, "document")

    async def _publish_status(self) -> None:
        assert self.agent is not None
        sources = status_json(await self.agent.store.status.sources(self._configured()))
        for s in sources:
            counts = {k: s[k] for k in ("mirrored", "pending", "failed", "skipped", "removed")}
            self.metrics.set_documents(s["name"], counts)
        self.metrics.set_queue_depth(await self.agent.store.jobs.queued())
        mirrored = sum(s["mirrored"] for s in sources)
        failed = sum(s["failed"] for s in sources)
        await self.notifier.status(f"{mirrored} documents mirrored, {failed} failed")

    async def _drain(self) -> None:
        """Stop the passes, let running downloads finish within shutdown_timeout, then cancel
        them (they checkpoint)."""
        assert self.agent is not None
        passes = [t for t in self.running.values() if not t.done()]
        for task in passes:
            task.cancel()
        timeout = self.config.agent.shutdown_timeout if self.signals < 2 else 0.0
        await self.agent.engine.workers.close(timeout)
        await asyncio.gather(*passes, return_exceptions=True)

    # ------------------------------------------------------------ signals and reload

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop_signal(self) -> None:
        self.signals += 1
        self.stop_requested.set()
        if self._starting is not None:
            self._starting.cancel()
            return
        if self.signals >= 2 and self.agent is not None:  # at once (jobs stay resumable)
            self.agent.engine.workers.abort()

    def _on_reload_signal(self) -> None:
        if self._starting is not None:  # the file may have changed after it was read
            self._reload_when_ready = True
            return
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self.reload())

    async def reload(self) -> None:
        """Apply a new configuration file; an invalid one is refused and the old one kept."""
        await self.notifier.reloading()
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            self.log.error("reload.refused", error=str(exc))
            await self.notifier.ready("reload refused: configuration error")
            return
        await self._apply(new)
        await self.notifier.ready(f"reloaded: {len(new.sources)} source(s)")

    async def _apply(self, new: Config) -> None:
        assert self.agent is not None
        assert self.scheduler is not None
        if new.agent != self.config.agent:
            self.log.warning("reload.agent_settings_need_restart")
        if new.webhooks != self.config.webhooks:
            self.log.warning("reload.webhooks_need_restart")
        old = {s.name: s for s in self.config.sources if s.enabled}
        wanted = {s.name: s for s in new.sources if s.enabled}
        for name, cfg in old.items():
            if wanted.get(name) != cfg:
                if self.scheduler.get_job(name):
                    self.scheduler.remove_job(name)
                await self.agent.remove_source(name)
                self.metrics.remove_source(name)
        for name, cfg in wanted.items():
            if old.get(name) != cfg:
                await self.agent.add_source(cfg)
                self.schedule(cfg)
                self.start_pass(name, after_running=True)  # now, or once the old one ends
        self.agent.config = self.config = dataclasses.replace(
            self.config, sources=new.sources, path=new.path, raw_sources=new.raw_sources
        )
        self.log.info("reload.applied", sources=sorted(wanted))

    def _start_watchdog(self) -> asyncio.Task[None] | None:
        interval = watchdog_interval(os.environ)
        if interval is None:
            return None
        return asyncio.create_task(
            watchdog_loop(self.notifier, interval, self.ready, on_lag=self.metrics.set_loop_lag)
        )


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run_daemon(config: Config, path: Path) -> int:
    return await Daemon(config, path).run()
