"""The OpenCDE source and its browser flows against the running OpenCdeSandbox and StorageHost."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from agent.config import AgentConfig, OpenCdeSettings, Secret, SourceConfig
from agent.errors import AuthenticationError, FatalSourceError
from agent.models import JobSpec, RemoteDocument
from agent.sandbox.opencde import RICH, OpenCdeSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.opencde import VERSIONS, OpenCdeSource
from agent.sources.opencde_auth import DISCOVERY, REFRESH_SEED, discover
from agent.sources.opencde_flows import (
    BrowserFlowError,
    BrowserTimeout,
    SelectionCancelled,
    list_selection,
    login,
    remove_selection,
    select,
)
from agent.sources.opencde_model import (
    SelectedDocument,
    Selection,
    VersionInfo,
    latest_per_document,
    load_selection,
    previous_versions,
    save_selection,
    versioned_name,
)
from agent.state.source_state import MemorySourceState
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.pacing import RateLimiter

API = "/documents/1.0"
IFC = b"ISO-10303-21;\nHEADER;\n" + bytes(range(256)) * 8


async def no_sleep(_: float) -> None:
    return None


@dataclass
class Env:
    sandbox: OpenCdeSandbox
    storage: StorageHost
    base: str
    session: aiohttp.ClientSession
    browser: aiohttp.ClientSession
    tmp: Path
    state: MemorySourceState = field(default_factory=MemorySourceState)
    printed: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)

    def ctx(
        self,
        *,
        keep_versions: int = 1,
        seed: str | None = None,
        state: MemorySourceState | None = None,
    ) -> SourceContext:
        config = SourceConfig(
            name="cde",
            type="opencde",
            base_url=self.base,
            poll_interval=300.0,
            requests_per_minute=None,
            enabled=True,
            client_id="demo-client",
            client_secret=Secret("demo-secret"),
            write_metadata=False,
            settings=OpenCdeSettings(
                refresh_token=Secret(seed) if seed else None, keep_versions=keep_versions
            ),
        )
        agent = AgentConfig(mirror_dir=self.tmp / "mirror", state_dir=self.tmp, state_url="x://")
        client = ApiClient(self.session, RateLimiter(None), source="cde", sleep=no_sleep)
        return SourceContext(config, agent, client, state or self.state)

    def source(self, clock: Callable[[], float] = time.time, **options: Any) -> OpenCdeSource:
        return OpenCdeSource(self.ctx(**options), clock=clock)

    async def browse(self, url: str) -> None:
        """A scripted browser: follow every redirect, which ends at the agent's listener."""
        self.opened.append(url)
        async with self.browser.get(url) as response:
            await response.read()

    async def login(self, **options: Any) -> None:
        await login(self.ctx(**options), listen=None, open_url=self.browse, out=self.printed.append)

    async def select(self, chosen: list[str], **options: Any) -> list[str]:
        self.sandbox.auto_select = chosen
        ctx = self.ctx(**options)
        return await select(ctx, listen=None, open_url=self.browse, out=self.printed.append)

    async def sign_in_directly(self) -> None:
        """Tokens as a login would leave them, without the browser."""
        await self.state.save_token("refresh", self.sandbox.issue_tokens().refresh_token)

    def requests(self, method: str, path: str) -> int:
        return len(self.sandbox.log.matching(method, path))


@pytest.fixture
def sandbox_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def env(sandbox_options: dict[str, Any], tmp_path: Path) -> AsyncIterator[Env]:
    storage = StorageHost()
    sandbox = OpenCdeSandbox(storage, **{**RICH, **sandbox_options})
    async with (
        storage.running(),
        sandbox.running() as base,
        open_session() as session,
        aiohttp.ClientSession() as browser,
    ):
        yield Env(sandbox, storage, base, session, browser, tmp_path)


async def listing(source: OpenCdeSource) -> list[RemoteDocument]:
    return [doc async for doc in source.list_documents()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- discovery ---------------------------------------------------------------------------


async def test_discovery_finds_the_documents_api_and_token_endpoint_and_caches_them(
    env: Env,
) -> None:
    endpoints = await discover(env.ctx())
    assert endpoints.api == f"{env.base}{API}"
    assert endpoints.token_url == f"{env.base}/oauth/token"
    assert endpoints.auth_url == f"{env.base}/oauth/authorize"
    assert await discover(env.ctx()) == endpoints
    assert env.requests("GET", "/foundation/") == 2  # versions + auth, once
    await discover(env.ctx(), fresh=True)
    assert env.requests("GET", "/foundation/") == 4


async def test_discovery_without_a_documents_api_is_a_fatal_source_error(env: Env) -> None:
    env.sandbox.faults.add("/foundation/versions", 200, body={"versions": []})
    with pytest.raises(FatalSourceError, match=r"Documents API 1\.0"):
        await discover(env.ctx())


# ---- login -------------------------------------------------------------------------------


async def test_login_runs_the_authorization_code_flow_and_stores_both_tokens(env: Env) -> None:
    await env.login()
    (authorize,) = env.sandbox.log.matching("GET", "/oauth/authorize")
    query = URL(f"/?{authorize.query}").query
    assert query["redirect_url"] == query["redirect_uri"]
    assert query["redirect_url"].endswith("/callback/login")
    assert query["response_type"] == "code"
    assert len(query["state"]) >= 20
    assert any(env.opened[0] in line for line in env.printed)  # the URL is always printed
    refresh = env.state.tokens["refresh"].value
    assert refresh == env.sandbox.issued_refresh_tokens[-1]
    assert env.state.tokens["access"].value == env.sandbox.oauth.issued_access_tokens[-1]
    token_posts = env.requests("POST", "/oauth/token")
    await save_selection(env.state, Selection((SelectedDocument("nothing"),)))
    await listing(env.source())
    assert env.requests("POST", "/oauth/token") == token_posts  # the login's token is used


@pytest.mark.parametrize("sandbox_options", [{"token_status": 201, "expires_in_as_string": True}])
async def test_login_accepts_201_created_with_expires_in_as_a_string(env: Env) -> None:
    await env.login()
    access = env.state.tokens["access"]
    assert access.expires_at is not None
    assert abs(access.expires_at.timestamp() - (time.time() + 3600)) < 60


async def test_login_listens_on_the_agents_address_and_opens_the_browser_in_a_thread(
    env: Env,
) -> None:
    port = free_port()
    opened: list[str] = []
    pages: list[bytes] = []
    closed = threading.Event()

    def text_browser(url: str) -> bool:  # blocks like a foreground BROWSER would
        opened.append(url)
        with urllib.request.urlopen(url, timeout=5) as page:
            pages.append(page.read())
        closed.set()
        return True

    await login(
        env.ctx(), listen=f"127.0.0.1:{port}", open_url=text_browser, out=env.printed.append
    )
    redirect = URL(opened[0]).query["redirect_url"]
    assert redirect == f"http://127.0.0.1:{port}/callback/login"
    assert await asyncio.to_thread(closed.wait, 5)
    assert b"You can close this window" in pages[0]
    assert "refresh" in env.state.tokens


async def test_login_falls_back_to_an_ephemeral_port_when_the_listen_address_is_busy(
    env: Env,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        await login(env.ctx(), listen=taken, open_url=env.browse, out=env.printed.append)
    assert any("in use" in line for line in env.printed)
    assert taken not in URL(env.opened[0]).query["redirect_url"]
    assert "refresh" in env.state.tokens


async def test_login_refuses_a_callback_whose_state_does_not_match(env: Env) -> None:
    async def forger(url: str) -> None:
        callback = URL(URL(url).query["redirect_url"]).with_query(code="stolen", state="other")
        async with env.browser.get(callback) as page:
            assert page.status == 200
            assert "Sign-in failed" in await page.text()

    with pytest.raises(AuthenticationError, match="state"):
        await login(env.ctx(), listen=None, open_url=forger, out=env.printed.append)
    assert env.requests("POST", "/oauth/token") == 0
    assert env.state.tokens == {}


async def test_login_gives_up_after_the_timeout_with_a_clear_message(env: Env) -> None:
    async def ignore(url: str) -> None:
        return None

    with pytest.raises(BrowserTimeout, match="no answer from the browser"):
        await login(env.ctx(), listen=None, open_url=ignore, timeout=0.2, out=env.printed.append)


# ---- select ------------------------------------------------------------------------------


async def test_select_stores_the_picked_documents_with_titles_and_server_context(
    env: Env,
) -> None:
    await env.sign_in_directly()
    plan = env.sandbox.add_document("Ground floor plan", "plan.pdf", b"%PDF")
    model = env.sandbox.add_document("Structural model", "model.ifc", IFC)
    env.sandbox.add_document("Not picked", "other.txt", b"no")
    assert await env.select([plan, model]) == [plan, model]
    assert await list_selection(env.ctx()) == [
        SelectedDocument(plan, "Ground floor plan", "plan.pdf"),
        SelectedDocument(model, "Structural model", "model.ifc"),
    ]
    selection = await load_selection(env.state)
    assert selection.server_context == "project=demo-project;folder=root"
    assert env.opened[0].startswith(f"{env.base}/ui/select/")
    assert any(env.opened[0] in line for line in env.printed)


async def test_select_cancelled_in_the_browser_raises_and_changes_nothing(env: Env) -> None:
    await env.sign_in_directly()
    kept = env.sandbox.add_document("Kept", "kept.pdf", b"%PDF")
    await env.select([kept])
    env.sandbox.auto_cancel = True
    with pytest.raises(SelectionCancelled, match="selection cancelled in the browser"):
        await env.select([])
    assert (await load_selection(env.state)).ids() == [kept]


@pytest.mark.parametrize("sandbox_options", [{"callback_param": "selected_url"}])
async def test_select_accepts_the_older_selected_url_callback_parameter(env: Env) -> None:
    await env.sign_in_directly()
    doc = env.sandbox.add_document("Site survey", "survey.pdf", b"%PDF")
    assert await env.select([doc]) == [doc]


async def test_repeated_selections_add_and_send_the_stored_server_context(env: Env) -> None:
    await env.sign_in_directly()
    first = env.sandbox.add_document("First", "first.pdf", b"1")
    second = env.sandbox.add_document("Second", "second.pdf", b"2")
    assert await env.select([first]) == [first]
    stored = await load_selection(env.state)
    await save_selection(env.state, replace(stored, server_context="project=42"))
    assert await env.select([second, first]) == [second]
    selection = await load_selection(env.state)
    assert selection.ids() == [first, second]
    assert selection.server_context == "project=42"  # the CDE echoes what we sent


async def test_list_and_remove_manage_the_selection(env: Env) -> None:
    ctx = env.ctx()
    docs = (SelectedDocument("a", "A", "a.pdf"), SelectedDocument("b", "B", "b.pdf"))
    await save_selection(env.state, Selection(docs, "ctx"))
    assert await remove_selection(ctx, "a") is True
    assert await remove_selection(ctx, "a") is False
    assert await list_selection(ctx) == [docs[1]]
    assert (await load_selection(env.state)).server_context == "ctx"


async def test_select_without_a_login_says_how_to_sign_in(env: Env) -> None:
    with pytest.raises(AuthenticationError, match="sync-agent login cde"):
        await env.select([])
    assert env.requests("POST", f"{API}/select-documents") == 0
    assert env.opened == []


async def test_select_refuses_a_selection_url_on_a_foreign_host(env: Env) -> None:
    await env.sign_in_directly()
    port = free_port()

    async def forger(url: str) -> None:
        callback = URL(f"http://127.0.0.1:{port}/callback/select")
        forged = callback.with_query(selected_documents_url="http://127.0.0.2:9/steal")
        async with env.browser.get(forged) as page:
            await page.read()

    with pytest.raises(BrowserFlowError, match="foreign host"):
        await select(env.ctx(), listen=f"127.0.0.1:{port}", open_url=forger, out=env.printed.append)
    assert (await load_selection(env.state)).ids() == []


# ---- polling -----------------------------------------------------------------------------


async def test_polling_keeps_the_highest_version_index_and_downloads_it_without_auth_upstream(
    env: Env,
) -> None:
    await env.sign_in_directly()
    model = env.sandbox.add_document("Model", "model.ifc", b"v1")
    env.sandbox.publish_version(model, b"v2")
    last = env.sandbox.publish_version(model, IFC)
    env.sandbox.publish_version(env.sandbox.add_document("Other", "o.txt", b"o"), b"o2")
    await save_selection(env.state, Selection((SelectedDocument(model),)))
    source = env.source()
    (doc,) = await listing(source)
    assert (doc.remote_id, doc.version, doc.name, doc.size) == (
        model,
        str(last),
        "model.ifc",
        len(IFC),
    )
    assert doc.metadata is not None
    assert doc.metadata["version_number"] == "v3.0"
    target = await source.download_target(doc, doc.attrs)
    async with env.session.get(
        target.url, headers=dict(target.headers), allow_redirects=False
    ) as r:
        assert r.status == 302
        location = r.headers["Location"]
    async with env.session.get(location) as r:
        assert await r.read() == IFC
    assert env.storage.authorization_seen == []


@pytest.mark.parametrize(
    "sandbox_options",
    [{"redirect_status": 302}, {"redirect_status": 303}, {"direct_download": True}],
)
async def test_the_downloader_fetches_the_latest_through_a_rejected_token_and_any_redirect(
    env: Env,
) -> None:
    await env.sign_in_directly()
    doc_id = env.sandbox.add_document("Model", "model.ifc", b"old")
    env.sandbox.publish_version(doc_id, IFC)
    await save_selection(env.state, Selection((SelectedDocument(doc_id),)))
    source = env.source()
    (doc,) = await listing(source)
    env.sandbox.expire_all_tokens()  # the download's first hop answers 401 once
    renewals = env.requests("POST", "/oauth/token")
    job = JobSpec(
        1, "cde", doc.remote_id, doc.version, doc.name, dict(doc.attrs), doc.size, temp_name="p"
    )
    endpoint = Endpoint(source, doc, doc.attrs, RateLimiter(None))

    async def checkpoint(_job: int, _offset: int, _validator: str | None) -> None:
        return None

    async with Downloader(env.session, env.tmp / "staging", sleep=no_sleep) as downloader:
        fetched = await downloader.fetch(job, endpoint, checkpoint)
    assert Path(fetched.temp_path).read_bytes() == IFC
    assert env.requests("POST", "/oauth/token") == renewals + 1  # one renewal after the 401
    assert env.storage.authorization_seen == []
    assert env.sandbox.reused_refresh_tokens == []


async def test_eight_downloads_in_flight_when_the_token_dies_renew_it_once(env: Env) -> None:
    """Expiry under concurrency renews the rotating refresh token once and fails nothing."""
    await env.sign_in_directly()
    ids = [env.sandbox.add_document(f"D{i}", f"d{i}.ifc", b"%d" % i) for i in range(8)]
    await save_selection(env.state, Selection(tuple(SelectedDocument(i) for i in ids)))
    source = env.source()
    docs = await listing(source)
    env.sandbox.expire_all_tokens()
    renewals = env.requests("POST", "/oauth/token")

    async def one(downloader: Downloader, n: int, doc: RemoteDocument) -> bytes:
        job = JobSpec(n, "cde", doc.remote_id, doc.version, doc.name, temp_name=f"{n}.part")
        endpoint = Endpoint(source, doc, doc.attrs, RateLimiter(None))
        fetched = await downloader.fetch(job, endpoint, no_checkpoint)
        return Path(fetched.temp_path).read_bytes()

    async with Downloader(env.session, env.tmp / "staging", sleep=no_sleep) as downloader:
        bodies = await asyncio.gather(*(one(downloader, n, doc) for n, doc in enumerate(docs)))
    assert bodies == [b"%d" % i for i in range(8)]
    assert env.requests("POST", "/oauth/token") == renewals + 1
    assert env.sandbox.reused_refresh_tokens == []


async def no_checkpoint(_job: int, _offset: int, _validator: str | None) -> None:
    return None


async def test_second_poll_sends_if_none_match_and_reuses_the_cached_result_on_304(
    env: Env,
) -> None:
    await env.sign_in_directly()
    doc_id = env.sandbox.add_document("Plan", "plan.pdf", b"%PDF")
    await save_selection(env.state, Selection((SelectedDocument(doc_id),)))
    first = await listing(env.source())
    cached = json.loads(env.state.cursors[VERSIONS])
    cached["latest"][0]["name"] = "from-cache.pdf"  # visible only if the 304 path is taken
    env.state.cursors[VERSIONS] = json.dumps(cached)
    env.sandbox.log.clear()
    (again,) = await listing(env.source())
    assert env.sandbox.versions_calls == 2
    (poll,) = env.sandbox.log.records  # one request, nothing else
    assert poll.headers["if-none-match"] == cached["etag"]
    assert again.name == "from-cache.pdf"
    assert msgspec.structs.replace(again, name="plan.pdf") == first[0]


async def test_a_running_source_follows_selection_changes_and_new_versions(env: Env) -> None:
    await env.sign_in_directly()
    a = env.sandbox.add_document("A", "a.pdf", b"a1")
    b = env.sandbox.add_document("B", "b.pdf", b"b1")
    source = env.source()
    await save_selection(env.state, Selection((SelectedDocument(a),)))
    assert [d.remote_id for d in await listing(source)] == [a]
    await save_selection(env.state, Selection((SelectedDocument(a), SelectedDocument(b))))
    assert [d.remote_id for d in await listing(source)] == [a, b]
    assert "if-none-match" not in env.sandbox.log.matching("POST", f"{API}/document-")[-1].headers
    newer = env.sandbox.publish_version(b, b"b2")
    assert [d.version for d in await listing(source)] == ["1", str(newer)]
    env.sandbox.remove_document(a)
    assert [d.remote_id for d in await listing(source)] == [b]


async def test_a_404_from_the_api_makes_the_next_pass_discover_it_again(env: Env) -> None:
    await env.sign_in_directly()
    doc_id = env.sandbox.add_document("Plan", "plan.pdf", b"%PDF")
    await save_selection(env.state, Selection((SelectedDocument(doc_id),)))
    source = env.source()
    env.sandbox.faults.add(f"{API}/document-versions", 404, body={"message": "moved"})
    with pytest.raises(FatalSourceError, match="HTTP 404"):
        await listing(source)
    assert DISCOVERY not in env.state.cursors
    assert [d.remote_id for d in await listing(source)] == [doc_id]
    assert env.requests("GET", "/foundation/versions") == 2


async def test_polling_with_nothing_selected_yields_nothing_and_asks_nothing(env: Env) -> None:
    await env.sign_in_directly()
    assert await listing(env.source()) == []
    assert env.sandbox.versions_calls == 0


# ---- tokens ------------------------------------------------------------------------------


async def test_rotated_refresh_tokens_are_persisted_before_use_and_never_spent_twice(
    env: Env,
) -> None:
    await env.login()
    await save_selection(env.state, Selection((SelectedDocument("x"),)))
    env.sandbox.expire_all_tokens()
    source = env.source()
    rejected = await source.auth.authorization()
    await asyncio.gather(*(source.renew(rejected) for _ in range(5)))
    assert len(env.sandbox.issued_refresh_tokens) == 2  # the login's, one rotation
    history = env.state.token_history
    new_refresh = history.index(("refresh", env.sandbox.issued_refresh_tokens[-1]))
    new_access = history.index(("access", env.sandbox.oauth.issued_access_tokens[-1]))
    assert new_refresh < new_access
    later = env.source(clock=lambda: time.time() + 7200)  # a new process, token long expired
    await listing(later)
    assert len(env.sandbox.issued_refresh_tokens) == 3
    assert env.sandbox.reused_refresh_tokens == []
    assert env.state.tokens["refresh"].value == env.sandbox.issued_refresh_tokens[-1]


async def test_a_configured_refresh_token_is_spent_once_then_the_stored_one_is_used(
    env: Env,
) -> None:
    seed = env.sandbox.issue_tokens().refresh_token
    await save_selection(env.state, Selection((SelectedDocument("x"),)))
    await listing(env.source(seed=seed))
    assert REFRESH_SEED in env.state.cursors
    await listing(env.source(seed=seed, clock=lambda: time.time() + 7200))
    assert env.sandbox.reused_refresh_tokens == []
    assert env.requests("POST", "/oauth/token") == 2


async def test_a_login_wins_over_an_old_configured_refresh_token(env: Env) -> None:
    await env.login(seed="rt_spent-long-ago")
    await save_selection(env.state, Selection((SelectedDocument("x"),)))
    await listing(env.source(seed="rt_spent-long-ago", clock=lambda: time.time() + 7200))
    assert env.state.tokens["refresh"].value == env.sandbox.issued_refresh_tokens[-1]
    assert len(env.sandbox.issued_refresh_tokens) == 2


async def test_a_refused_configured_refresh_token_is_not_tried_again(env: Env) -> None:
    await env.sign_in_directly()
    await save_selection(env.state, Selection((SelectedDocument("x"),)))
    with pytest.raises(AuthenticationError, match="refresh token was refused"):
        await listing(env.source(seed="rt_bogus"))
    await listing(env.source(seed="rt_bogus"))  # the stored token from the last login
    assert env.requests("POST", "/oauth/token") == 2


async def test_a_revoked_refresh_token_is_an_authentication_error(env: Env) -> None:
    await env.sign_in_directly()
    await save_selection(env.state, Selection((SelectedDocument("x"),)))
    env.sandbox.revoke_refresh_tokens()
    with pytest.raises(AuthenticationError, match=r"invalid_grant.*sync-agent login cde"):
        await listing(env.source())


async def test_polling_before_any_login_tells_the_user_to_sign_in(env: Env) -> None:
    await save_selection(env.state, Selection((SelectedDocument("x"),)))
    with pytest.raises(AuthenticationError, match="not signed in: run `sync-agent login cde`"):
        await listing(env.source())


# ---- keep_versions -----------------------------------------------------------------------


async def test_keep_versions_yields_previous_versions_with_suffixed_names_and_prunes_older(
    env: Env,
) -> None:
    await env.sign_in_directly()
    doc_id = env.sandbox.add_document("Model", "model.ifc", b"one")
    second = env.sandbox.publish_version(doc_id, b"two")
    third = env.sandbox.publish_version(doc_id, b"three")
    await save_selection(env.state, Selection((SelectedDocument(doc_id),)))
    source = env.source(keep_versions=2)
    latest, previous = await listing(source)
    assert (latest.remote_id, latest.name, latest.version) == (doc_id, "model.ifc", str(third))
    assert previous.remote_id == f"{doc_id}@{second}"
    assert previous.name == "model (v2.0).ifc"
    assert previous.size == 3
    versions_path = f"{API}/documents/{doc_id}/versions"
    assert env.requests("GET", versions_path) == 1
    await listing(source)  # unchanged: the history comes from the cache
    assert env.requests("GET", versions_path) == 1
    fourth = env.sandbox.publish_version(doc_id, b"four")
    ids = [(d.remote_id, d.name) for d in await listing(source)]
    assert ids == [(doc_id, "model.ifc"), (f"{doc_id}@{third}", "model (v3.0).ifc")]
    assert fourth > third
    assert env.requests("GET", versions_path) == 2


# ---- pure helpers ------------------------------------------------------------------------


@given(
    stem=st.text(st.characters(blacklist_characters="./\\\0"), min_size=1, max_size=20),
    ext=st.sampled_from(["", ".pdf", ".ifc", ".ifczip"]),
    number=st.text(min_size=1, max_size=10),
)
def test_versioned_name_keeps_the_extension_last_and_names_the_version(
    stem: str, ext: str, number: str
) -> None:
    name = versioned_name(stem + ext, number)
    assert name.endswith(ext)
    assert name.startswith(stem)
    assert "/" not in name.removeprefix(stem)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 50)), min_size=1), st.randoms())
def test_latest_per_document_keeps_the_highest_index_in_any_order(
    pairs: list[tuple[str, int]], rng: random.Random
) -> None:
    versions = [VersionInfo(doc, index) for doc, index in pairs]
    rng.shuffle(versions)
    latest = latest_per_document(versions)
    assert {d: v.index for d, v in latest.items()} == {
        d: max(i for e, i in pairs if e == d) for d, _ in pairs
    }


def test_previous_versions_are_the_newest_older_ones_of_the_same_document() -> None:
    latest = VersionInfo("d", 7)
    versions = [VersionInfo("d", i) for i in (1, 7, 3, 4, 9)] + [VersionInfo("e", 6)]
    assert [v.index for v in previous_versions(versions, latest, 3)] == [4, 3]
    assert previous_versions(versions, latest, 1) == []
