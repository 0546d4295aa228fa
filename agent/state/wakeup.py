"""Wake-ups: hints between replicas that work is waiting (jobs queued, a pass asked for).

    notify(source, work)      "there is `work` for `source`" to every replica (this one too)
    subscribe(work) -> Inbox  an inbox of such hints; `await inbox.wait(poll)` returns the
                              sources hinted since the last wait, or an empty set after `poll`
                              seconds without one: an empty set means "look at everything"

On PostgreSQL a hint is a NOTIFY on one channel, heard by one dedicated LISTEN connection
per replica (outside the pool; it needs a direct or session-pooled connection, see
docs/replicas.md) that reconnects when it is lost and then wakes every inbox, since hints
sent meanwhile are gone. On SQLite (one process) hints stay in the process. Hints only
shorten waits: whoever waits also polls, so a lost hint costs at most one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

from sqlalchemy import func as sql
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent.log import get_logger
from agent.state.database import Database
from agent.state.replicas import shared

CHANNEL = "sync_agent_work"
PING_EVERY = 30.0  # seconds between checks that the LISTEN connection still answers
PING_TIMEOUT = 10.0
RECONNECT_CAP = 30.0  # the longest wait between attempts to listen again
Sleep = Callable[[float], Awaitable[None]]


class Work(enum.StrEnum):
    """What a hint announces."""

    JOBS = "jobs"  # download jobs were queued
    SYNC = "sync"  # a pass was asked for (POST /sync)


class Inbox:
    """Hints of one kind of work for one waiter (a worker loop, the daemon's request loop)."""

    def __init__(self) -> None:
        self._sources: set[str] = set()
        self._woken = asyncio.Event()

    def put(self, source: str | None) -> None:
        """A hint for `source`; None wakes the waiter without one (look at everything)."""
        if source is not None:
            self._sources.add(source)
        self._woken.set()

    async def wait(self, poll: float) -> frozenset[str]:
        """The sources hinted since the last wait, waiting up to `poll` seconds for one."""
        if not self._woken.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._woken.wait()
        hinted = frozenset(self._sources)
        self._sources.clear()
        self._woken.clear()
        return hinted


class Wakeup(Protocol):
    """Hints that work is waiting, to every replica (see the module)."""

    async def notify(self, source: str, work: Work = Work.JOBS) -> None: ...

    def subscribe(self, work: Work) -> contextlib.AbstractContextManager[Inbox]: ...


class LocalWakeup:
    """Hints within this process: the wake-up of a single process (SQLite), and the fake."""

    def __init__(self) -> None:
        self._inboxes: dict[Work, set[Inbox]] = {work: set() for work in Work}

    async def notify(self, source: str, work: Work = Work.JOBS) -> None:
        self.deliver(work, source)

    @contextlib.contextmanager
    def subscribe(self, work: Work) -> Iterator[Inbox]:
        inbox = Inbox()
        self._inboxes[work].add(inbox)
        try:
            yield inbox
        finally:
            self._inboxes[work].discard(inbox)

    def deliver(self, work: Work, source: str | None) -> None:
        for inbox in self._inboxes[work]:
            inbox.put(source)

    def wake_all(self) -> None:
        """Wake every inbox without a hint: hints may have been lost."""
        for work in Work:
            self.deliver(work, None)


class PgWakeup(LocalWakeup):
    """Hints through PostgreSQL's NOTIFY, heard by this replica's LISTEN connection."""

    def __init__(
        self, db: Database, *, listen_url: str | None = None, sleep: Sleep = asyncio.sleep
    ) -> None:
        super().__init__()
        self.db = db
        self.listen_url = listen_url  # a direct or session-pooled URL; default: the state's
        self.sleep = sleep
        self.listening = asyncio.Event()  # set while the LISTEN connection is up
        self.log = get_logger()

    async def notify(self, source: str, work: Work = Work.JOBS) -> None:
        async with self.db.begin() as conn:
            await conn.execute(select(sql.pg_notify(CHANNEL, f"{work}:{source}")))

    async def listen(self) -> None:
        """Listen until cancelled, reconnecting with a growing pause when the link is lost."""
        engine = create_async_engine(self.listen_url or self.db.engine.url, poolclass=NullPool)
        failures = 0
        try:
            while True:
                failures = 0 if await self._listen_once(engine) else failures + 1
                self.wake_all()  # hints sent while nobody listened are lost
                await self.sleep(min(RECONNECT_CAP, 2.0**failures))
        finally:
            await engine.dispose()

    async def _listen_once(self, engine: AsyncEngine) -> bool:
        """Listen until the link is lost; True when it was up before that."""
        try:
            async with engine.connect() as conn:
                await self._listen_on(conn)
        except Exception as exc:  # any loss of the link, in whatever words the driver says it
            self.log.warning("wakeup.listen_lost", error=type(exc).__name__)
        heard = self.listening.is_set()
        self.listening.clear()
        return heard

    async def _listen_on(self, conn: AsyncConnection) -> None:
        raw: Any = (await conn.get_raw_connection()).driver_connection  # an asyncpg connection
        lost = asyncio.Event()
        raw.add_termination_listener(lambda *_: lost.set())
        await raw.add_listener(CHANNEL, self._heard)
        self.listening.set()
        self.wake_all()  # whatever was hinted before we listened
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_EVERY):
                    await lost.wait()
            if not lost.is_set():
                await asyncio.wait_for(raw.execute("SELECT 1"), PING_TIMEOUT)
        raise OSError("the LISTEN connection was closed")

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        work, _, source = payload.partition(":")
        if work in Work.__members__.values():
            self.deliver(Work(work), source)


@contextlib.asynccontextmanager
async def open_wakeup(db: Database, listen_url: str | None = None) -> AsyncIterator[LocalWakeup]:
    """The wake-up for this database: NOTIFY/LISTEN on PostgreSQL (listening on
    `listen_url` when given), in-process on SQLite."""
    if not shared(db):
        yield LocalWakeup()
        return
    wakeup = PgWakeup(db, listen_url=listen_url)
    listener = asyncio.create_task(wakeup.listen(), name="wakeup:listen")
    try:
        yield wakeup
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
