"""Tests for the Huddle source, against a running HuddleSandbox and StorageHost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import AgentConfig, HuddleSettings, Secret, SourceConfig
from agent.errors import AuthenticationError, PermanentError, SkipDocument, TransientError
from agent.models import JobSpec, RemoteDocument
from agent.sandbox.huddle import RICH, HuddleSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.huddle import HuddleSource, with_page_size
from agent.sources.huddle_auth import pick_refresh_token, seed_fingerprint
from agent.sources.huddle_content import check_content, poll_delays
from agent.sources.huddle_items import canonical_date, change_key, rendition_name
from agent.state.source_state import MemorySourceState
from agent.transfer.contract import DownloadTarget, ResponseHead
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.pacing import RateLimiter

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """An injected sleep that records its pauses and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(clock: FakeClock) -> AsyncIterator[StorageHost]:
    host = StorageHost(clock=clock)
    async with host.running():
        yield host


@pytest.fixture
async def sandbox(storage: StorageHost, clock: FakeClock) -> AsyncIterator[HuddleSandbox]:
    sb = HuddleSandbox(storage, clock=clock, **RICH)
    async with sb.running():
        yield sb


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_session(total_timeout=10) as s:
        yield s


@pytest.fixture
def state() -> MemorySourceState:
    return MemorySourceState()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


SourceFactory = Callable[..., HuddleSource]


@pytest.fixture
def make_source(
    sandbox: HuddleSandbox,
    session: aiohttp.ClientSession,
    state: MemorySourceState,
    clock: FakeClock,
    sleeps: Sleeps,
    tmp_path: Path,
) -> SourceFactory:
    def build(
        *,
        workspaces: tuple[str, ...] = (),
        folders: tuple[str, ...] = (),
        formats: tuple[str, ...] = (),
        scheme: str = "Bearer",
        seed: str = "demo-refresh-0",
        source_state: MemorySourceState | None = None,
        sb: HuddleSandbox | None = None,
        trust: bool = False,
    ) -> HuddleSource:
        sb = sb or sandbox
        settings = HuddleSettings(
            token_url=sb.token_url,
            refresh_token=Secret(seed),
            workspaces=workspaces,
            folders=folders,
            download_reason="offline-file",
            auth_scheme=scheme,
            formats=formats,
            trust_folder_times=trust,
        )
        config = SourceConfig(
            name="huddle",
            type="huddle",
            base_url=sb.base_url,
            poll_interval=300.0,
            requests_per_minute=None,
            enabled=True,
            client_id="demo-client",
            client_secret=None,
            write_metadata=False,
            settings=settings,
        )
        agent = AgentConfig(mirror_dir=tmp_path / "m", state_dir=tmp_path / "s", state_url="")
        client = ApiClient(session, RateLimiter(None), source="huddle", sleep=sleeps)
        ctx = SourceContext(config, agent, client, source_state or state)
        return HuddleSource(ctx, clock=clock, sleep=sleeps)

    return build


async def listing(source: HuddleSource) -> list[RemoteDocument]:
    return [doc async for doc in source.list_documents()]


def by_id(docs: list[RemoteDocument]) -> dict[str, RemoteDocument]:
    return {d.remote_id: d for d in docs}


async def fetch(session: aiohttp.ClientSession, target: DownloadTarget) -> tuple[int, bytes]:
    """GET a target the way the transfer layer would: its headers on the first hop only."""
    async with session.get(target.url, headers=dict(target.headers)) as response:
        return response.status, await response.read()


def tree(sb: HuddleSandbox) -> dict[str, str]:
    """A workspace: root doc; Projects/ with Alpha/ (300 docs) and Beta/ (one doc)."""
    ws = sb.add_workspace("Site Works")
    root = sb.root_folder_id(ws)
    projects = sb.add_folder(root, "Projects")
    alpha = sb.add_folder(projects, "Alpha")
    beta = sb.add_folder(projects, "Beta")
    top = sb.add_document(root, "readme.txt", b"hello", mime="text/plain")
    plan = sb.add_document(beta, "plan.docx", b"plan v1", mime=DOCX)
    sb.populate_bulk(alpha, 300)
    return {
        "ws": ws,
        "root": root,
        "projects": projects,
        "alpha": alpha,
        "beta": beta,
        "top": top,
        "plan": plan,
    }


# -- listing -----------------------------------------------------------------------------------


async def test_nested_tree_with_more_than_one_page_in_a_folder_is_listed_completely(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ids = tree(sandbox)
    docs = await listing(make_source(workspaces=(ids["ws"],)))
    alpha_docs = [d for d in docs if d.folder == ("Site Works", "Projects", "Alpha")]
    assert len(alpha_docs) == 300
    assert len({d.remote_id for d in alpha_docs}) == 300
    names = {d.name: d.folder for d in docs}
    assert names["readme.txt"] == ("Site Works",)
    assert names["plan.docx"] == ("Site Works", "Projects", "Beta")
    assert len(docs) == 302
    pages = sandbox.log.matching("GET", f"/files/pagedfolders/{ids['alpha']}")
    assert len(pages) == 2  # 250 + 50, following `next`
    assert all("size=250" in p.query for p in pages)


async def test_unchanged_tree_costs_one_request_on_the_next_pass_when_folder_times_are_trusted(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],), trust=True)
    first = await listing(source)
    sandbox.log.clear()
    second = await listing(source)
    assert len(sandbox.log.records) == 1
    assert sandbox.log.records[0].headers.get("if-modified-since")
    assert second == first


async def test_a_nested_change_is_picked_up_and_unchanged_siblings_cost_one_request(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    """With trusted folder times, a sibling whose time did not move is replayed from cache."""
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],), trust=True)
    before = {d.name: d for d in await listing(source)}
    sandbox.update_document(sandbox_doc_id(before["plan.docx"]), b"plan v2")
    sandbox.log.clear()
    after = {d.name: d for d in await listing(source)}
    assert after["plan.docx"].version != before["plan.docx"].version
    assert after["plan.docx"].version.startswith("2@")
    assert after["bulk-000123.txt"] == before["bulk-000123.txt"]
    alpha_requests = [r for r in sandbox.log.records if ids["alpha"] in r.path]
    assert [r.path for r in alpha_requests] == [f"/files/folders/{ids['alpha']}"]


async def test_an_interrupted_pass_does_not_hide_a_change_from_the_next_one(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],))
    await listing(source)
    sandbox.update_document(ids["plan"], b"plan v2")
    sandbox.faults.add(f"/files/pagedfolders/{ids['beta']}", 500, times=5)
    with pytest.raises(TransientError):
        await listing(source)  # Projects and the root were not cached as seen
    docs = {d.name: d for d in await listing(source)}
    assert docs["plan.docx"].version.startswith("2@")


async def test_locked_folder_is_replayed_from_its_cache(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],))
    first = await listing(source)
    sandbox.set_locked(ids["projects"])
    sandbox.add_document(ids["root"], "new.txt", b"new")  # the root must be read again
    sandbox.update_document(ids["plan"], b"plan v2")  # below the locked folder
    docs = await listing(source)
    assert {d.remote_id for d in docs} == {d.remote_id for d in first} | {
        d.remote_id for d in docs if d.name == "new.txt"
    }
    assert len(docs) == len(first) + 1
    assert by_id(docs)[ids["plan"]].version.startswith("2@")  # its children are still listed


def sandbox_doc_id(doc: RemoteDocument) -> str:
    return doc.remote_id.partition("#")[0]


async def test_document_without_download_permission_is_listed_with_a_skip_reason(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ws = sandbox.add_workspace("W")
    root = sandbox.root_folder_id(ws)
    secret = sandbox.add_document(root, "secret.pdf", b"x", mime=PDF, downloadable=False)
    open_doc = sandbox.add_document(root, "open.pdf", b"y", mime=PDF)
    docs = by_id(await listing(make_source(workspaces=(ws,), formats=("text/plain",))))
    assert docs[secret].skip_reason == "no download permission"
    assert docs[secret].locator is None
    assert docs[open_doc].skip_reason is None
    assert f"{secret}#text/plain" not in docs  # nothing to convert without permission
    assert f"{open_doc}#text/plain" in docs


async def test_folder_answering_410_is_treated_as_deleted_and_its_cache_dropped(
    sandbox: HuddleSandbox, make_source: SourceFactory, state: MemorySourceState
) -> None:
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],))
    await listing(source)
    cached_before = len(state.cursors)
    sandbox.delete_folder(ids["projects"])
    docs = await listing(source)
    assert [d.name for d in docs] == ["readme.txt"]
    assert len(state.cursors) == cached_before - 3  # Projects, Alpha and Beta dropped


async def test_configured_folder_that_is_gone_lists_nothing(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ids = tree(sandbox)
    url = sandbox.url(f"/files/folders/{ids['beta']}")
    source = make_source(folders=(url,))
    assert [d.folder for d in await listing(source)] == [("Beta",)]
    sandbox.delete_folder(ids["beta"])
    assert await listing(source) == []


async def test_two_workspaces_with_the_same_title_do_not_share_a_mirror_folder(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    one, two = sandbox.add_workspace("Team"), sandbox.add_workspace("Team")
    sandbox.add_document(sandbox.root_folder_id(one), "a.txt", b"1")
    sandbox.add_document(sandbox.root_folder_id(two), "a.txt", b"2")
    source = make_source(workspaces=(one, two))
    for _ in range(2):  # the second pass replays from cache and must label the same way
        folders = sorted(d.folder for d in await listing(source))
        assert folders == [("Team",), (f"Team ({two})",)]


async def test_iso_and_rfc1123_dates_give_the_same_version(
    sandbox: HuddleSandbox,
    make_source: SourceFactory,
    session: aiohttp.ClientSession,
    state: MemorySourceState,
) -> None:
    ids = tree(sandbox)
    iso = by_id(await listing(make_source(workspaces=(ids["ws"],))))
    sandbox.options.rfc1123_dates = True
    assert (await raw_json(session, sandbox, f"/files/documents/{ids['top']}"))["updated"].endswith(
        " GMT"
    )
    fresh_state = MemorySourceState(tokens=dict(state.tokens))  # no cache: all is read again
    rfc = by_id(await listing(make_source(workspaces=(ids["ws"],), source_state=fresh_state)))
    assert {k: d.version for k, d in rfc.items()} == {k: d.version for k, d in iso.items()}


async def raw_json(session: aiohttp.ClientSession, sb: HuddleSandbox, path: str) -> Any:
    headers = {"Authorization": f"Bearer {sb.issue_access_token()}"}
    async with session.get(sb.url(path), headers=headers) as response:
        assert response.status == 200
        return await response.json(content_type=None)


# -- auth --------------------------------------------------------------------------------------


async def test_token_rotated_mid_pass_is_persisted_first_and_the_old_one_never_reused(
    sandbox: HuddleSandbox, make_source: SourceFactory, state: MemorySourceState
) -> None:
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],))
    seen = 0
    async for _ in source.list_documents():
        seen += 1
        if seen in (1, 150):
            sandbox.expire_all_tokens()  # the API now answers 401 to our token
    assert seen == 302
    assert len(sandbox.log.matching("POST", "/token")) == 3
    assert sandbox.reused_refresh_tokens == []
    newest = sandbox.issued_refresh_tokens[-1]
    saved = state.tokens["refresh"].value
    assert saved.endswith(":" + newest)
    kinds = [kind for kind, _ in state.token_history]
    assert kinds == ["refresh", "access"] * 3  # each new refresh token saved before use
    # A new process with the same state spends the saved token, not the configured seed.
    sandbox.expire_all_tokens()
    restarted = make_source(workspaces=(ids["ws"],))
    assert len(await listing(restarted)) == 302
    assert sandbox.reused_refresh_tokens == []


async def test_concurrent_rejections_renew_the_token_once(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ids = tree(sandbox)
    source = make_source(workspaces=(ids["ws"],))
    await listing(source)
    sandbox.expire_all_tokens()
    sandbox.log.clear()
    url = sandbox.url(f"/files/folders/{ids['beta']}")
    responses = await asyncio.gather(*(source._get(url) for _ in range(6)))
    assert {r.status for r in responses} == {200}
    assert len(sandbox.log.matching("POST", "/token")) == 1
    assert sandbox.reused_refresh_tokens == []


async def test_expired_token_refused_with_403_and_oauth2_scheme_renews(
    storage: StorageHost, clock: FakeClock, make_source: SourceFactory
) -> None:
    old_docs = HuddleSandbox(
        storage, clock=clock, **{**RICH, "expired_status": 403, "auth_scheme": "OAuth2"}
    )
    async with old_docs.running():
        ws = old_docs.add_workspace("W")
        old_docs.add_document(old_docs.root_folder_id(ws), "a.txt", b"a")
        source = make_source(workspaces=(ws,), scheme="OAuth2", sb=old_docs)
        assert len(await listing(source)) == 1
        old_docs.expire_all_tokens()
        old_docs.update_document(next(iter(old_docs.tree.documents)), b"b")
        assert len(await listing(source)) == 1
        gets = old_docs.log.matching("GET")
        assert all(r.headers["authorization"].startswith("OAuth2 ") for r in gets)
        assert len(old_docs.log.matching("POST", "/token")) == 2
        assert old_docs.reused_refresh_tokens == []


async def test_revoked_refresh_token_raises_authentication_error(
    sandbox: HuddleSandbox, make_source: SourceFactory
) -> None:
    ws = sandbox.add_workspace("W")
    source = make_source(workspaces=(ws,))
    await listing(source)
    sandbox.revoke_refresh_tokens()
    sandbox.expire_all_tokens()
    with pytest.raises(AuthenticationError) as caught:
        await listing(source)
    assert caught.value.source == "huddle"
    assert "invalid_grant" in str(caught.value)


async def test_proactive_renewal_before_the_twenty_minutes_run_out(
    sandbox: HuddleSandbox, make_source: SourceFactory, clock: FakeClock
) -> None:
    ws = sandbox.add_workspace("W")
    source = make_source(workspaces=(ws,))
    await listing(source)
    clock.advance(1200 - 60)  # still valid at the server, but inside the early window
    sandbox.log.clear()
    await listing(source)
    methods = [r.method for r in sandbox.log.records]
    assert methods[0] == "POST"  # renewed first,
    assert methods.count("POST") == 1  # and never refused (a refusal would renew again)


def test_a_new_seed_in_the_config_replaces_the_saved_rotation() -> None:
    saved = f"{seed_fingerprint('seed-1')}:rotated-7"
    assert pick_refresh_token("seed-1", saved) == "rotated-7"
    assert pick_refresh_token("seed-2", saved) == "seed-2"
    assert pick_refresh_token("seed-1", None) == "seed-1"


# -- downloads ---------------------------------------------------------------------------------


async def test_download_target_sends_the_jobs_reason_and_no_accept(
    sandbox: HuddleSandbox, make_source: SourceFactory, session: aiohttp.ClientSession
) -> None:
    ws = sandbox.add_workspace("W")
    doc_id = sandbox.add_document(sandbox.root_folder_id(ws), "a.txt", b"abc", mime="text/plain")
    source = make_source(workspaces=(ws,))
    (doc,) = await listing(source)
    assert doc.attrs == {"x-download-reason": "offline-file"}
    target = await source.download_target(doc, {"x-download-reason": "file-preview"})
    assert target.url == sandbox.url(f"/files/documents/{doc_id}/content")
    assert target.headers["x-download-reason"] == "file-preview"
    assert "Accept" not in target.headers
    assert target.headers["Authorization"].startswith("Bearer ")
    assert await fetch(session, target) == (200, b"abc")
    assert sandbox.download_reasons[-1] == (doc_id, "file-preview")


def rendition(docs: list[RemoteDocument], name: str) -> RemoteDocument:
    return next(d for d in docs if d.name == name)


@pytest.fixture
async def report(sandbox: HuddleSandbox) -> tuple[str, str]:
    ws = sandbox.add_workspace("W")
    doc_id = sandbox.add_document(
        sandbox.root_folder_id(ws), "report.docx", b"words", mime=DOCX, supported=(PDF,)
    )
    return ws, doc_id


async def test_renditions_are_listed_beside_the_original(
    make_source: SourceFactory, report: tuple[str, str]
) -> None:
    ws, doc_id = report
    docs = await listing(make_source(workspaces=(ws,), formats=(PDF, DOCX)))
    assert sorted(d.name for d in docs) == ["report.docx", "report.pdf"]  # DOCX is the original
    pdf = rendition(docs, "report.pdf")
    assert pdf.remote_id == f"{doc_id}#{PDF}"
    assert pdf.version == rendition(docs, "report.docx").version
    assert pdf.attrs == {"accept": PDF, "x-download-reason": "offline-file-preview"}


async def test_existing_conversion_is_fetched_without_polling(
    sandbox: HuddleSandbox,
    make_source: SourceFactory,
    session: aiohttp.ClientSession,
    report: tuple[str, str],
) -> None:
    ws, doc_id = report
    sandbox.add_rendition(doc_id, PDF)
    source = make_source(workspaces=(ws,), formats=(PDF,))
    pdf = rendition(await listing(source), "report.pdf")
    target = await source.download_target(pdf, pdf.attrs)
    assert target.headers["Accept"] == PDF
    assert sandbox.log.matching(path_prefix=f"/files/documents/{doc_id}/versions") == []
    status, body = await fetch(session, target)
    assert (status, body) == (200, b"%PDF-sandbox words")


async def test_conversion_answering_202_is_polled_until_complete_then_fetched(
    sandbox: HuddleSandbox,
    make_source: SourceFactory,
    session: aiohttp.ClientSession,
    sleeps: Sleeps,
    report: tuple[str, str],
) -> None:
    ws, doc_id = report
    source = make_source(workspaces=(ws,), formats=(PDF,))
    pdf = rendition(await listing(source), "report.pdf")
    target = await source.download_target(pdf, pdf.attrs)
    polls = sandbox.log.matching("GET", f"/files/documents/{doc_id}/versions")
    assert len(polls) == 3  # InProgress, InProgress, Complete
    assert len(sleeps.pauses) == 3
    assert sleeps.pauses == sorted(sleeps.pauses)
    status, body = await fetch(session, target)
    assert (status, body) == (200, b"%PDF-sandbox words")


async def test_unsupported_format_is_skipped_with_the_supported_list(
    sandbox: HuddleSandbox, make_source: SourceFactory, report: tuple[str, str]
) -> None:
    ws, _ = report
    source = make_source(workspaces=(ws,), formats=("video/mp4",))
    video = rendition(await listing(source), "report.mp4")
    with pytest.raises(SkipDocument) as caught:
        await source.download_target(video, video.attrs)
    assert caught.value.message == f"format not supported (supported: {DOCX}, {PDF})"


async def test_failed_conversion_is_transient_and_succeeds_on_a_later_pass(
    sandbox: HuddleSandbox, make_source: SourceFactory, report: tuple[str, str]
) -> None:
    ws, doc_id = report
    sandbox.fail_conversion(doc_id, PDF)
    source = make_source(workspaces=(ws,), formats=(PDF,))
    pdf = rendition(await listing(source), "report.pdf")
    with pytest.raises(TransientError) as caught:
        await source.download_target(pdf, pdf.attrs)
    assert caught.value.message.startswith("conversion failed")
    sandbox.fail_conversion(doc_id, PDF, fail=False)
    target = await source.download_target(pdf, pdf.attrs)
    assert target.headers["Accept"] == PDF


async def test_conversion_that_never_finishes_gives_up_within_its_budget(
    storage: StorageHost, clock: FakeClock, make_source: SourceFactory, sleeps: Sleeps
) -> None:
    slow = HuddleSandbox(storage, clock=clock, **RICH, conversion_polls=10_000)
    async with slow.running():
        ws = slow.add_workspace("W")
        slow.add_document(slow.root_folder_id(ws), "r.docx", b"w", mime=DOCX)
        source = make_source(workspaces=(ws,), formats=(PDF,), sb=slow)
        pdf = rendition(await listing(source), "r.pdf")
        with pytest.raises(TransientError, match="still running"):
            await source.download_target(pdf, pdf.attrs)
    assert 100 <= sum(sleeps.pauses) <= 120


async def test_moving_document_is_a_transient_failure(
    sandbox: HuddleSandbox, make_source: SourceFactory, report: tuple[str, str]
) -> None:
    ws, doc_id = report
    source = make_source(workspaces=(ws,), formats=(PDF,))
    pdf = rendition(await listing(source), "report.pdf")
    sandbox.set_moving(doc_id)
    with pytest.raises(TransientError, match="moved") as caught:
        await source.download_target(pdf, pdf.attrs)
    assert caught.value.status == 409


async def download(
    session: aiohttp.ClientSession, source: HuddleSource, doc: RemoteDocument, staging: Path
) -> bytes:
    """The bytes the shared Downloader fetches for `doc` through this source."""
    job = JobSpec(1, "huddle", doc.remote_id, doc.version, doc.name, dict(doc.attrs), temp_name="p")
    endpoint = Endpoint(source, doc, doc.attrs, RateLimiter(None))

    async def checkpoint(_job: int, _offset: int, _validator: str | None) -> None:
        return None

    async with Downloader(session, staging, sleep=Sleeps()) as downloader:
        fetched = await downloader.fetch(job, endpoint, checkpoint)
    return Path(fetched.temp_path).read_bytes()


async def test_the_downloader_fetches_original_and_polled_rendition_through_an_expired_token(
    storage: StorageHost,
    clock: FakeClock,
    make_source: SourceFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    old_docs = HuddleSandbox(storage, clock=clock, **{**RICH, "expired_status": 403})
    async with old_docs.running():
        ws = old_docs.add_workspace("W")
        doc_id = old_docs.add_document(old_docs.root_folder_id(ws), "r.docx", b"w", mime=DOCX)
        source = make_source(workspaces=(ws,), formats=(PDF,), sb=old_docs)
        original, pdf = await listing(source)
        old_docs.expire_all_tokens()  # the content request is refused with 403 first
        assert await download(session, source, original, tmp_path / "a") == b"w"
        assert len(old_docs.log.matching("POST", "/token")) == 2  # renewed once on the 403
        assert await download(session, source, pdf, tmp_path / "b") == b"%PDF-sandbox w"
        assert old_docs.reused_refresh_tokens == []
        reasons = {reason for doc, reason in old_docs.download_reasons if doc == doc_id}
        assert reasons == {"offline-file", "offline-file-preview"}


async def test_the_downloader_records_a_document_without_content_as_skipped(
    sandbox: HuddleSandbox,
    make_source: SourceFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    ws = sandbox.add_workspace("W")
    sandbox.add_document(sandbox.root_folder_id(ws), "empty.txt", b"", has_content=False)
    source = make_source(workspaces=(ws,))
    (doc,) = await listing(source)
    with pytest.raises(SkipDocument, match="no content"):
        await download(session, source, doc, tmp_path)


@pytest.mark.parametrize(
    ("status", "headers", "error", "message"),
    [
        (409, {}, TransientError, "document is being moved"),
        (204, {}, SkipDocument, "no content"),
        (404, {}, SkipDocument, "no content"),
        (
            406,
            {"supported-accept": "text/plain, application/pdf"},
            SkipDocument,
            "format not supported (supported: text/plain, application/pdf)",
        ),
        (202, {}, TransientError, "conversion not ready yet"),
        (410, {}, PermanentError, "gone"),
    ],
)
def test_check_response_maps_content_statuses(
    status: int, headers: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        check_content(ResponseHead(status, "http://127.0.0.1/content", headers))
    assert getattr(caught.value, "message", None) == message


def test_check_response_lets_bytes_through() -> None:
    check_content(ResponseHead(200, "http://127.0.0.1/c", {}))
    check_content(ResponseHead(206, "http://127.0.0.1/c", {}))


# -- pure helpers ------------------------------------------------------------------------------


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)))
def test_iso_and_rfc1123_spellings_of_an_instant_are_one_canonical_date(moment: datetime) -> None:
    moment = moment.replace(tzinfo=UTC)
    iso = moment.isoformat().replace("+00:00", "Z")
    rfc = format_datetime(moment, usegmt=True)
    assert canonical_date(iso) == canonical_date(rfc)
    assert change_key(3, iso) == change_key("3", rfc)


def test_poll_delays_grow_are_capped_and_fit_the_budget() -> None:
    delays = poll_delays(120.0, 0.5, 15.0)
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert max(delays) == 15.0
    assert sum(delays) <= 120.0
    assert delays == sorted(delays)


def test_rendition_names_replace_the_extension() -> None:
    assert rendition_name("report.docx", PDF) == "report.pdf"
    assert rendition_name("notes", "text/plain") == "notes.txt"
    assert rendition_name("a.b.docx", PDF) == "a.b.pdf"


def test_page_size_is_set_without_touching_the_rest_of_the_link() -> None:
    assert with_page_size("http://h/p/1", 250) == "http://h/p/1?size=250"
    assert with_page_size("http://h/p/1?size=50&x=1", 250) == "http://h/p/1?x=1&size=250"


@pytest.mark.parametrize("expired_status", [401, 403])
async def test_eight_downloads_in_flight_when_the_token_dies_renew_it_once(
    storage: StorageHost,
    clock: FakeClock,
    make_source: SourceFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    expired_status: int,
) -> None:
    """Expiry under concurrency is renewed once and fails nothing (issue 11)."""
    sb = HuddleSandbox(storage, clock=clock, expired_status=expired_status)
    async with sb.running():
        ws = sb.add_workspace("W")
        for i in range(8):
            sb.add_document(sb.root_folder_id(ws), f"d{i}.txt", b"body %d" % i, mime="text/plain")
        source = make_source(workspaces=(ws,), sb=sb)
        docs = await listing(source)
        sb.expire_all_tokens()  # every first hop in flight is refused
        bodies = await asyncio.gather(
            *(download(session, source, doc, tmp_path / str(n)) for n, doc in enumerate(docs))
        )
        assert sorted(bodies) == [b"body %d" % i for i in range(8)]
        assert len(sb.log.matching("POST", "/token")) == 2  # the listing's, one renewal
        assert sb.reused_refresh_tokens == []
