"""Wake-ups: a hint that work is waiting reaches every replica's waiters, and polling stays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from agent.state.store import Store
from agent.state.wakeup import LocalWakeup, PgWakeup, Work, open_wakeup
from tests.pg import PgCluster


async def test_a_hint_reaches_every_waiter_of_its_kind_only() -> None:
    wakeup = LocalWakeup()
    with (
        wakeup.subscribe(Work.JOBS) as first,
        wakeup.subscribe(Work.JOBS) as second,
        wakeup.subscribe(Work.SYNC) as passes,
    ):
        await wakeup.notify("sm")
        await wakeup.notify("hd", Work.JOBS)
        assert await first.wait(5) == {"sm", "hd"}
        assert await second.wait(5) == {"sm", "hd"}
        assert await passes.wait(0.01) == frozenset()  # no hint: after `poll`, look at all


async def test_a_hint_sent_between_two_waits_is_kept_for_the_next() -> None:
    """A waiter busy claiming work when the hint comes still sees it (no lost wake-up)."""
    wakeup = LocalWakeup()
    with wakeup.subscribe(Work.JOBS) as inbox:
        await wakeup.notify("sm")
        await asyncio.sleep(0)
        assert await inbox.wait(0.01) == {"sm"}
        assert await inbox.wait(0.01) == frozenset()


async def test_sqlite_hints_stay_in_the_process(tmp_path: Path) -> None:
    async with (
        Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", tmp_path) as store,
        open_wakeup(store.db) as wakeup,
    ):
        assert type(wakeup) is LocalWakeup


# ---------------------------------------------------------------- PostgreSQL LISTEN/NOTIFY


@pytest.fixture
async def stores(pg_migrated_url: str, tmp_path: Path) -> AsyncIterator[list[Store]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(Store.open(pg_migrated_url, tmp_path / f"r{i}"))
            for i in range(2)
        ]


async def listening(wakeup: PgWakeup) -> None:
    await asyncio.wait_for(wakeup.listening.wait(), 10)


async def test_a_hint_from_one_replica_wakes_the_waiters_of_another(stores: list[Store]) -> None:
    async with open_wakeup(stores[0].db) as sender, open_wakeup(stores[1].db) as receiver:
        assert isinstance(receiver, PgWakeup)
        with receiver.subscribe(Work.SYNC) as inbox:
            await listening(receiver)
            await inbox.wait(0)  # forget the wake-up that listening starts with
            await sender.notify("sm", Work.SYNC)
            assert await inbox.wait(10) == {"sm"}


async def test_a_lost_listen_connection_is_opened_again(
    stores: list[Store], postgres: PgCluster
) -> None:
    """When the server drops the LISTEN connection, the waiters are woken (hints may have
    been lost meanwhile) and hints reach them again once it listens anew."""
    receiver = PgWakeup(stores[1].db, sleep=lambda _: asyncio.sleep(0.05))
    task = asyncio.create_task(receiver.listen())
    try:
        with receiver.subscribe(Work.JOBS) as inbox:
            await listening(receiver)
            await inbox.wait(0)
            await terminate_listeners(postgres, stores[1])
            assert await inbox.wait(10) == frozenset()  # woken without a hint
            await listening(receiver)
            await inbox.wait(0)
            await PgWakeup(stores[0].db).notify("sm")
            assert await inbox.wait(10) == {"sm"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def terminate_listeners(postgres: PgCluster, store: Store) -> None:
    database = store.db.engine.url.database
    conn = await asyncpg.connect(postgres.url("postgres", driver="postgresql"))
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND query LIKE 'LISTEN%'",
            database,
        )
    finally:
        await conn.close()
    assert killed == 1
