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
from agent.engine.ondemand import FetchResult, FilteredOutError, NotListedError
from agent.errors import MirrorError, TransientError
from agent.metrics import Metrics
from agent.state.journal import Event
from agent.web import (
    Access,
    base_url,
    bearer_matches,
    build_app,
    cross_site_reason,
    events_query,
    fetch_reason,
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
    journal: list[Event] = field(default_factory=list)
    waits: list[tuple[int, int, float]] = field(default_factory=list)
    fetched: list[tuple[str, str, str]] = field(default_factory=list)

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

    async def events(self, since: int, limit: int, wait: float) -> list[Event]:
        self.waits.append((since, limit, wait))
        return [e for e in self.journal if e.seq > since][:limit]

    async def fetch(self, source: str, remote_id: str, reason: str) -> FetchResult:
        self.fetched.append((source, remote_id, reason))
        if source not in self.sources:
            raise KeyError(source)
        if remote_id == "missing":
            raise NotListedError(source, remote_id, "is not in the source's listing")
        if remote_id == "unplaced":
            raise MirrorError(f"{source}: {source}/unplaced.pdf was downloaded but not placed")
        if remote_id == "drafted":
            raise FilteredOutError(source, remote_id, "drafts/a.pdf", 'exclude "drafts/**"')
        if remote_id == "broken":
            raise TransientError("the server answered 503", url="https://h/x?sig=s3cr3t")
        return FetchResult(source, remote_id, "v2", f"{source}/{remote_id}.pdf", 3, "ab" * 32)


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
    assert controller.triggered == []


@pytest.mark.parametrize("path", ["/status", "/events"])
async def test_status_and_events_name_documents_so_off_loopback_they_need_the_token(
    public_url: str, token_url: str, session: aiohttp.ClientSession, path: str
) -> None:
    async with session.get(f"{public_url}{path}") as resp:
        assert resp.status == 403
    async with session.get(f"{token_url}{path}") as resp:
        assert resp.status == 401
    async with session.get(f"{token_url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    for probe in ("/healthz", "/readyz", "/metrics"):
        async with session.get(f"{public_url}{probe}") as resp:
            assert resp.status == 200


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


# ---------------------------------------------------------------- events and fetch


def entry(seq: int) -> Event:
    return Event(seq, f"evt_{seq}", 1714564803.0, "document.added", "alpha", "d", "v1",
                 f"alpha/{seq}.pdf", 1, "ab" * 32, {})  # fmt: skip


async def test_events_are_replayed_after_since_with_the_last_seq(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    controller.journal = [entry(3), entry(5), entry(9)]
    async with session.get(f"{url}/events?since=3&limit=10&timeout=2.5") as resp:
        body = await resp.json()
    assert [e["seq"] for e in body["events"]] == [5, 9]
    assert body["events"][0]["path"] == "alpha/5.pdf"
    assert body["last_seq"] == 9
    assert controller.waits == [(3, 10, 2.5)]
    async with session.get(f"{url}/events?since=9") as resp:
        assert await resp.json() == {"events": [], "last_seq": 9}


@pytest.mark.parametrize(
    "query", ["since=-1", "since=x", "limit=0", "limit=1001", "timeout=301", "timeout=soon"]
)
async def test_bad_event_queries_are_400_naming_the_parameter(
    url: str, session: aiohttp.ClientSession, query: str
) -> None:
    async with session.get(f"{url}/events?{query}") as resp:
        assert resp.status == 400
        assert query.split("=", maxsplit=1)[0] in (await resp.json())["error"]


def test_event_queries_default_to_everything_retained_without_waiting() -> None:
    assert events_query({}) == (0, 100, 0.0)


async def test_fetch_downloads_with_the_asked_reason_or_opening_in_another_app(
    url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{url}/documents/alpha/d%2F1/fetch") as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == "alpha/d/1.pdf"
    body = {"reason": "file-preview"}
    async with session.post(f"{url}/documents/alpha/d7/fetch", json=body) as resp:
        assert resp.status == 200
    assert controller.fetched == [
        ("alpha", "d/1", "open-file-other-app"),
        ("alpha", "d7", "file-preview"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/documents/gamma/d/fetch", None, 404),
        ("/documents/alpha/missing/fetch", None, 404),
        ("/documents/alpha/drafted/fetch", None, 409),  # listed, but filtered out
        ("/documents/alpha/unplaced/fetch", None, 503),  # the commit failed
        ("/documents/alpha/broken/fetch", None, 502),
        ("/documents/alpha/d/fetch", {"reason": "curiosity"}, 400),
        ("/documents/alpha/d/fetch", ["reason"], 400),
    ],
)
async def test_fetch_failures_are_named_and_never_show_a_signature(
    url: str, session: aiohttp.ClientSession, path: str, body: object, status: int
) -> None:
    async with session.post(f"{url}{path}", json=body) as resp:
        assert resp.status == status
        text = await resp.text()
    assert "error" in text
    assert "s3cr3t" not in text


async def test_fetch_needs_the_token_off_loopback(
    token_url: str, session: aiohttp.ClientSession, controller: FakeController
) -> None:
    async with session.post(f"{token_url}/documents/alpha/d/fetch") as resp:
        assert resp.status == 401
    assert controller.fetched == []


def test_a_fetch_reason_outside_huddles_list_is_refused() -> None:
    assert fetch_reason({}) == "open-file-other-app"
    assert fetch_reason({"reason": "other/indexing"}) == "other/indexing"
    with pytest.raises(ValueError, match="reason"):
        fetch_reason({"reason": "because"})
