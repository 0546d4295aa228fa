"""Tests for agent.web: every route and the token policy, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import Secret
from agent.metrics import Metrics
from agent.web import (
    Access,
    base_url,
    bearer_matches,
    build_app,
    cross_site_reason,
    is_loopback,
    mutation_access,
    serve_app,
    serve_web,
    split_listen,
)

TOKEN = "s3cret-token"


@dataclass
class FakeController:
    sources: tuple[str, ...] = ("alpha", "beta")
    is_ready: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    triggered: list[str | None] = field(default_factory=list)

    def ready(self) -> bool:
        return self.is_ready

    async def status(self) -> dict[str, Any]:
        last = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        return {"ready": self.is_ready, "sources": {"alpha": {"last_pass": last}}}

    async def trigger(self, source: str | None) -> list[str]:
        if source is not None and source not in self.sources:
            raise KeyError(source)
        self.triggered.append(source)
        return list(self.sources) if source is None else [source]


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


@pytest.fixture
async def url(controller: FakeController) -> AsyncIterator[str]:
    async with serve_web(controller, "127.0.0.1:0", None) as base:
        yield base


async def serve_policy(
    controller: FakeController, listen: str, token: str | Secret | None
) -> AsyncIterator[str]:
    """Serve with the policy `listen` implies, but bound to loopback as tests must be."""
    app = build_app(controller, listen=listen, api_token=token)
    async with serve_app(app, "127.0.0.1", 0) as base:
        yield base


@pytest.fixture
async def public_url(controller: FakeController) -> AsyncIterator[str]:
    async for base in serve_policy(controller, "0.0.0.0:8749", None):
        yield base


@pytest.fixture
async def token_url(controller: FakeController) -> AsyncIterator[str]:
    async for base in serve_policy(controller, "0.0.0.0:8749", Secret(TOKEN)):
        yield base


# ---------------------------------------------------------------- read-only routes


async def test_serve_web_binds_an_ephemeral_port(url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
    assert not url.endswith(":0")


async def test_healthz_says_ok(url: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


async def test_readyz_follows_the_controller(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.get(f"{url}/readyz") as resp:
        assert resp.status == 200
    controller.is_ready = False
    async with session.get(f"{url}/readyz") as resp:
        assert resp.status == 503


async def test_metrics_serve_the_controllers_registry_as_prometheus_text(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    controller.metrics.add_download("alpha", 2048)
    controller.metrics.set_queue_depth(3)
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("sync_agent_downloaded_bytes_total", (("source", "alpha"),))] == 2048
    assert values[("sync_agent_queue_depth", ())] == 3


async def test_status_is_the_controllers_report_as_json(
    url: str, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{url}/status") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body == {"ready": True, "sources": {"alpha": {"last_pass": "2024-05-01 12:00:00+00:00"}}}


# ---------------------------------------------------------------- triggers


async def test_post_sync_triggers_every_source(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{url}/sync") as resp:
        assert resp.status == 202
        assert await resp.json() == {"accepted": ["alpha", "beta"]}
    assert controller.triggered == [None]


async def test_post_sync_source_triggers_that_source(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{url}/sync/beta") as resp:
        assert resp.status == 202
        assert await resp.json() == {"accepted": ["beta"]}
    assert controller.triggered == ["beta"]


async def test_unknown_source_is_404(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{url}/sync/gamma") as resp:
        assert resp.status == 404
        assert "gamma" in (await resp.json())["error"]
    assert controller.triggered == []


async def test_sync_is_post_only(url: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{url}/sync") as resp:
        assert resp.status == 405


# ---------------------------------------------------------------- access policy


async def test_loopback_without_token_refuses_cross_site_browser_requests(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{url}/sync", headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403
    async with session.post(f"{url}/sync", headers={"Host": "evil.example:8749"}) as resp:
        assert resp.status == 403
    async with session.post(f"{url}/sync", headers={"Origin": "http://localhost:8749"}) as resp:
        assert resp.status == 202
    assert controller.triggered == [None]


async def test_non_loopback_without_token_refuses_mutations_and_says_why(
    public_url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{public_url}/sync/alpha") as resp:
        assert resp.status == 403
        assert "api_token" in (await resp.json())["error"]
    async with session.post(
        f"{public_url}/sync", headers={"Authorization": "Bearer anything"}
    ) as resp:
        assert resp.status == 403
    async with session.get(f"{public_url}/status") as resp:
        assert resp.status == 200
    assert controller.triggered == []


async def test_token_is_required_when_configured(
    token_url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{token_url}/sync") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with session.post(f"{token_url}/sync", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
    async with session.post(f"{token_url}/sync", headers={"Authorization": f"Basic {TOKEN}"}) as r:
        assert r.status == 401
    assert controller.triggered == []
    async with session.post(f"{token_url}/sync", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 202
    assert controller.triggered == [None]


async def test_token_is_required_even_on_loopback_when_configured(
    controller: FakeController, session: aiohttp.ClientSession
) -> None:
    async with serve_web(controller, "127.0.0.1:0", TOKEN) as base:
        async with session.post(f"{base}/sync/alpha") as resp:
            assert resp.status == 401
        auth = {"Authorization": f"bearer {TOKEN}"}
        async with session.post(f"{base}/sync/alpha", headers=auth) as resp:
            assert resp.status == 202
    assert controller.triggered == ["alpha"]


async def test_authorization_is_checked_before_the_source_lookup(
    token_url: str, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{token_url}/sync/gamma") as resp:
        assert resp.status == 401


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_mutation_access_policy() -> None:
    assert mutation_access("127.0.0.1:8749", None) is Access.OPEN
    assert mutation_access("localhost:8749", "") is Access.OPEN
    assert mutation_access("[::1]:8749", None) is Access.OPEN
    assert mutation_access("0.0.0.0:8749", None) is Access.REFUSED
    assert mutation_access("0.0.0.0:8749", "t") is Access.BEARER
    assert mutation_access("127.0.0.1:8749", "t") is Access.BEARER


def test_split_listen_and_base_url() -> None:
    assert split_listen("127.0.0.1:8749") == ("127.0.0.1", 8749)
    assert split_listen("[::1]:0") == ("::1", 0)
    assert base_url(("0.0.0.0", 8749)) == "http://127.0.0.1:8749"
    assert base_url(("::", 8749, 0, 0)) == "http://[::1]:8749"
    assert base_url(("127.0.0.1", 1234)) == "http://127.0.0.1:1234"


def test_bearer_matches_only_the_exact_token() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN)
    assert bearer_matches(f"  bearer   {TOKEN} ", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN}x", TOKEN)
    assert not bearer_matches(TOKEN, TOKEN)
    assert not bearer_matches(None, TOKEN)


def test_cross_site_reason() -> None:
    assert cross_site_reason("127.0.0.1:8749", None) is None
    assert cross_site_reason("localhost:8749", "http://127.0.0.1:8749") is None
    assert cross_site_reason(None, None) is None
    assert cross_site_reason("attacker.example", None) is not None
    assert cross_site_reason("127.0.0.1:8749", "null") is not None
