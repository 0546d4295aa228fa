"""Rotating refresh tokens renewed by several replicas at once are spent once, never twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from agent.config import HuddleSettings, parse_config
from agent.sandbox.huddle import HuddleSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient
from agent.sources.huddle_auth import HuddleAuth
from agent.state.store import Store
from agent.transfer.pacing import RateLimiter

SOURCE = "hd"
SEED = "demo-refresh-0"


@dataclass
class TokenServer:
    """A refresh-token endpoint in miniature: each token may be spent once."""

    spent: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    async def spend(self, token: str) -> str:
        if token in self.spent:
            self.reused.append(token)
        self.spent.append(token)
        await asyncio.sleep(0.005)  # the round trip: time for another renewer to step in
        return f"r{len(self.spent)}"


async def open_stores(url: str, state_dir: Path, count: int, stack: AsyncExitStack) -> list[Store]:
    """`count` replicas' stores: one database, each its own connection pool, one token key."""
    return [await stack.enter_async_context(Store.open(url, state_dir)) for _ in range(count)]


async def test_concurrent_renewers_in_separate_connections_spend_each_token_once(
    pg_migrated_url: str, tmp_path: Path
) -> None:
    """Under the renewal lock each renewer reads the token its predecessor saved."""
    server = TokenServer()
    async with AsyncExitStack() as stack:
        stores = await open_stores(pg_migrated_url, tmp_path / "state", 4, stack)
        await stores[0].credentials.save_token(SOURCE, "refresh", "r0", None)

        async def renew(store: Store, times: int) -> None:
            for _ in range(times):
                async with store.credentials.renewal(SOURCE):
                    current = await store.credentials.load_token(SOURCE, "refresh")
                    assert current is not None
                    fresh = await server.spend(current.value)
                    await store.credentials.save_token(SOURCE, "refresh", fresh, None)

        await asyncio.gather(*(renew(s, 5) for s in stores for _ in range(2)))
    assert server.reused == []
    assert server.spent == ["r0", *(f"r{i}" for i in range(1, 40))]


async def test_renewals_of_different_sources_do_not_wait_for_each_other(
    pg_migrated_url: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        first, second = await open_stores(pg_migrated_url, tmp_path / "state", 2, stack)
        async with first.credentials.renewal("a"):
            async with asyncio.timeout(5):
                async with second.credentials.renewal("b"):
                    pass
            entered = asyncio.Event()

            async def same_source() -> None:
                async with second.credentials.renewal("a"):
                    entered.set()

            waiting = asyncio.create_task(same_source())
            await asyncio.sleep(0.3)
            assert not entered.is_set()
        await asyncio.wait_for(waiting, 5)


# ---------------------------------------------------------------- Huddle, replica by replica


@dataclass
class Replicas:
    sandbox: HuddleSandbox
    auths: list[HuddleAuth]


@pytest.fixture
async def huddle(pg_migrated_url: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    """Four replicas' HuddleAuth, each with its own store and client, on one database."""
    storage = StorageHost()
    sandbox = HuddleSandbox(storage, refresh_token=SEED, refresh_revokes_access=True)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(storage.running())
        await stack.enter_async_context(sandbox.running())
        session = await stack.enter_async_context(aiohttp.ClientSession())
        stores = await open_stores(pg_migrated_url, tmp_path / "state", 4, stack)
        auths = [_huddle_auth(sandbox, session, store, tmp_path) for store in stores]
        yield Replicas(sandbox, auths)


def _huddle_auth(
    sandbox: HuddleSandbox, session: aiohttp.ClientSession, store: Store, tmp: Path
) -> HuddleAuth:
    source = {
        "name": SOURCE,
        "type": "huddle",
        "base_url": sandbox.base_url,
        "token_url": sandbox.token_url,
        "client_id": "demo-client",
        "refresh_token": SEED,
        "workspaces": ["1"],
    }
    config = parse_config({"agent": {"mirror_dir": str(tmp / "m")}, "sources": [source]}, env={})
    (cfg,) = config.sources
    assert isinstance(cfg.settings, HuddleSettings)
    client = ApiClient(session, RateLimiter(None), source=SOURCE)
    context = SourceContext(cfg, config.agent, client, store.for_source(SOURCE))
    return HuddleAuth(context, cfg.settings)


async def worked(auth: HuddleAuth) -> str:
    """One request that the API accepted; the header it carried."""
    lease = await auth.lease()
    await lease.ready()
    lease.settle(True)
    return lease.header


async def test_replicas_starting_together_spend_the_seed_once(huddle: Replicas) -> None:
    """The first replica spends the configured refresh token; the others take its result."""
    headers = await asyncio.gather(*(auth.authorization() for auth in huddle.auths))
    assert len(set(headers)) == 1
    assert len(huddle.sandbox.issued_refresh_tokens) == 2  # the seed and its one successor
    assert huddle.sandbox.reused_refresh_tokens == []


async def test_a_token_refused_everywhere_is_renewed_once_for_all_replicas(
    huddle: Replicas,
) -> None:
    """Round after round every replica's token dies at once and every replica renews: one
    refresh per round, the others find the newer token and use it without renewing."""
    for round_ in range(1, 6):
        headers = await asyncio.gather(*(worked(auth) for auth in huddle.auths))
        huddle.sandbox.expire_all_tokens()
        await asyncio.gather(*(a.renew(h) for a, h in zip(huddle.auths, headers, strict=True)))
        assert len(huddle.sandbox.issued_refresh_tokens) == round_ + 2
    renewed = await asyncio.gather(*(auth.authorization() for auth in huddle.auths))
    assert len(set(renewed)) == 1
    assert huddle.sandbox.reused_refresh_tokens == []
