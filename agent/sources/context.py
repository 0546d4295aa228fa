"""A single source's context outside a pass (for `login` and `select`): store, client, state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent.config import Config, SourceConfig
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.state.store import Store
from agent.transfer.pacing import request_limiter


@asynccontextmanager
async def source_context(config: Config, source: SourceConfig) -> AsyncIterator[SourceContext]:
    async with (
        Store.open(config.agent.state_url, config.agent.state_dir) as store,
        open_session() as session,
    ):
        limiter = request_limiter(source.requests_per_minute, store, source.name)
        client = ApiClient(session, limiter, source=source.name, proxies=config.proxies)
        yield SourceContext(source, config.agent, client, store.for_source(source.name))
