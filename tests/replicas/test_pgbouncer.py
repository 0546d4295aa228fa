"""Behind a transaction-pooling PgBouncer, with the URL docs/replicas.md gives, the state
works for several replicas: migrations, grants, renewals under the lock, registration; and
hints travel over a LISTEN connection of its own (`state_listen_url`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.state.budget import BudgetShape, SharedBudget
from agent.state.replica import ReplicaId
from agent.state.store import Store
from agent.state.wakeup import Work, open_wakeup
from tests.pg import PgCluster
from tests.replicas.bouncer import Bouncer
from tests.replicas.test_renewal import SOURCE, TokenServer

REPLICAS = 3


@pytest.fixture
async def database(postgres: PgCluster) -> str:
    return await postgres.create_database()  # empty: the first store migrates it, bounced


@pytest.fixture
async def stores(pgbouncer: Bouncer, database: str, tmp_path: Path) -> AsyncIterator[list[Store]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(Store.open(pgbouncer.url(database), tmp_path))
            for _ in range(REPLICAS)
        ]


async def test_replicas_share_the_state_through_transaction_pooling(stores: list[Store]) -> None:
    """More clients than server connections: every statement's prepared statement lives
    and dies within its transaction, whichever server connection runs it."""
    server = TokenServer()
    await stores[0].credentials.save_token(SOURCE, "refresh", "r0", None)
    counted = BudgetShape(40, 60.0, 40, 60.0, 0.25, 1.0, 8)

    async def replica(store: Store, n: int) -> int:
        async with store.replicas.registered(ReplicaId(f"r{n}", "host", n), 0.0):
            budget, granted = SharedBudget(store.db, "sm", counted), 0
            for _ in range(5):
                granted += (await budget.grant(3)).permits
                async with store.credentials.renewal(SOURCE):
                    current = await store.credentials.load_token(SOURCE, "refresh")
                    assert current is not None
                    fresh = await server.spend(current.value)
                    await store.credentials.save_token(SOURCE, "refresh", fresh, None)
                await store.requests.ask(["sm"])
            assert len(await store.replicas.views()) >= 1
            return granted

    granted = await asyncio.gather(*(replica(s, n) for n, s in enumerate(stores)))
    assert sum(granted) == counted.capacity
    assert server.reused == []
    assert len(server.spent) == REPLICAS * 5
    assert await stores[0].replicas.views() == []
    assert set(await stores[0].requests.pending()) == {"sm"}


async def test_hints_travel_over_the_listen_url_beside_the_pool(
    stores: list[Store], postgres: PgCluster, database: str
) -> None:
    """NOTIFY goes through the pool (it is sent at commit); LISTEN needs a session of its
    own, so it goes to `state_listen_url`, here the server itself."""
    direct = postgres.url(database)
    async with open_wakeup(stores[0].db) as sender, open_wakeup(stores[1].db, direct) as receiver:
        with receiver.subscribe(Work.JOBS) as inbox:
            await asyncio.wait_for(receiver.listening.wait(), 10)  # type: ignore[attr-defined]
            await inbox.wait(0)
            await sender.notify("sm")
            assert await inbox.wait(10) == {"sm"}
