"""Token refusal under load: expiry renews as often as needed, only rejection is fatal.

A small loopback API in Standard Metrics' shape issues tokens that work for a few requests
each. It answers a refusal at once and a success only after a pause, so a token's refusals
reach the agent before the successes that proved it: the order that eight concurrent
downloads produce against a server that limits how often a token may be used.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.config import parse_config
from agent.errors import AuthenticationError
from agent.models import JobSpec, RemoteDocument
from agent.sandbox.server import serve
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.standard_metrics import StandardMetricsSource
from agent.state.source_state import MemorySourceState
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.pacing import RateLimiter

DOCUMENTS = 24
CONCURRENCY = 8


def content(doc_id: str) -> bytes:
    return hashlib.sha256(doc_id.encode()).digest() * 64


@dataclass
class UseLimitedApi:
    """Tokens good for `uses` requests each; `refuse_client` refuses the client itself."""

    uses: int
    success_delay: float = 0.02
    refuse_client: bool = False
    remaining: dict[str, int] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)
    refused: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/o/token/", self.token)
        app.router.add_get("/v1/documents/{doc}/download/", self.download)
        return app

    async def token(self, request: web.Request) -> web.Response:
        if self.refuse_client:
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        self.remaining[token] = self.uses
        return web.json_response({"access_token": token, "expires_in": 3600})

    async def download(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.remaining.get(token, 0) <= 0:
            self.refused += 1
            return web.json_response({"detail": "Invalid token."}, status=401)
        self.remaining[token] -= 1
        await asyncio.sleep(self.success_delay)
        return web.Response(body=content(request.match_info["doc"]))


@dataclass
class Env:
    api: UseLimitedApi
    base: str
    session: aiohttp.ClientSession
    tmp: Path

    def source(self) -> StandardMetricsSource:
        source = {
            "name": "sm",
            "type": "standard-metrics",
            "base_url": f"{self.base}/v1",
            "token_url": f"{self.base}/o/token/",
            "client_id": "demo-client",
            "client_secret": "demo-secret",
        }
        config = parse_config({"agent": {"mirror_dir": str(self.tmp)}, "sources": [source]}, env={})
        client = ApiClient(self.session, RateLimiter(None), source="sm", sleep=no_sleep)
        ctx = SourceContext(config.sources[0], config.agent, client, MemorySourceState())
        return StandardMetricsSource(ctx)

    async def download_all(self, source: StandardMetricsSource) -> dict[str, bytes]:
        """Every document through the shared Downloader, eight at a time."""
        slots = asyncio.Semaphore(CONCURRENCY)
        limiter = RateLimiter(None)

        async def one(downloader: Downloader, doc_id: str) -> tuple[str, bytes]:
            doc = RemoteDocument(remote_id=doc_id, version="1", name=doc_id)
            job = JobSpec(1, "sm", doc_id, "1", doc_id, temp_name=f"{doc_id}.part")
            async with slots:
                fetched = await downloader.fetch(job, Endpoint(source, doc, {}, limiter), noop)
            return doc_id, Path(fetched.temp_path).read_bytes()

        ids = [f"doc-{i:02d}" for i in range(DOCUMENTS)]
        async with Downloader(self.session, self.tmp / "staging", sleep=no_sleep) as downloader:
            return dict(await asyncio.gather(*(one(downloader, i) for i in ids)))


async def no_sleep(_: float) -> None:
    return None


async def noop(_job: int, _offset: int, _validator: str | None) -> None:
    return None


@pytest.fixture
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    api: UseLimitedApi = request.param
    async with serve(api.app()) as base, open_session(total_timeout=30) as session:
        yield Env(api, base, session, tmp_path)


@pytest.mark.parametrize("env", [UseLimitedApi(uses=3)], indirect=True)
async def test_tokens_that_die_after_a_few_uses_never_fail_eight_concurrent_downloads(
    env: Env,
) -> None:
    downloaded = await env.download_all(env.source())
    assert downloaded == {doc_id: content(doc_id) for doc_id in downloaded}
    assert len(downloaded) == DOCUMENTS
    assert env.api.refused > 0  # tokens really died under the downloads
    assert len(env.api.issued) >= DOCUMENTS // 3


@pytest.mark.parametrize("env", [UseLimitedApi(uses=0)], indirect=True)
async def test_a_fresh_token_refused_before_it_ever_worked_rejects_the_credentials(
    env: Env,
) -> None:
    with pytest.raises(AuthenticationError, match="freshly issued"):
        await env.download_all(env.source())
    assert len(env.api.issued) == 2  # the first token, then one renewal that never worked


@pytest.mark.parametrize("env", [UseLimitedApi(uses=3, refuse_client=True)], indirect=True)
async def test_a_token_endpoint_refusing_the_client_rejects_the_credentials(env: Env) -> None:
    with pytest.raises(AuthenticationError, match="rejected the client credentials"):
        await env.download_all(env.source())
    assert env.api.issued == []
