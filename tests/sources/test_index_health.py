"""The Index Health source against the running IndexHealthSandbox and StorageHost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.config import (
    AgentConfig,
    IndexHealthSettings,
    IndexHealthUser,
    Secret,
    SourceConfig,
)
from agent.errors import (
    AuthenticationError,
    ExpiredUrlError,
    PermanentError,
    SkipDocument,
    TransientError,
)
from agent.models import JobSpec, RemoteDocument
from agent.sandbox.index_health import RICH, IndexHealthSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.index_health import (
    URL_ONLY,
    Envelope,
    IndexHealthSource,
    collection_folders,
    file_name,
    read_envelope,
)
from agent.state.source_state import MemorySourceState
from agent.transfer.contract import Answer, DownloadTarget, ResponseHead, Verdict
from agent.transfer.download import Downloader, Endpoint
from agent.transfer.pacing import RateLimiter

START = 1_700_000_000.0
USER = IndexHealthUser(
    first_name="Ada", last_name="Lovelace", email="ada@example.org", group_name="north-clinic"
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 20
TXT = b"plain words\n" * 50
MAX_ATTEMPTS = 3
ID_REQUIRED = "Document ID is required"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


async def no_sleep(_: float) -> None:
    return None


@dataclass
class Env:
    sandbox: IndexHealthSandbox
    storage: StorageHost
    clock: FakeClock
    base: str
    session: aiohttp.ClientSession
    state: MemorySourceState

    def source(
        self,
        *,
        user: IndexHealthUser = USER,
        secret: str = "demo-secret",
        state: MemorySourceState | None = None,
        **settings: Any,
    ) -> IndexHealthSource:
        config = SourceConfig(
            name="ih",
            type="index-health",
            base_url=self.base,
            poll_interval=60.0,
            requests_per_minute=None,
            enabled=True,
            client_id="demo-client",
            client_secret=Secret(secret),
            write_metadata=True,
            settings=IndexHealthSettings(user=user, **settings),
        )
        agent = AgentConfig(
            mirror_dir=Path("/nonexistent"),
            state_dir=Path("/nonexistent"),
            state_url="sqlite+aiosqlite:///:memory:",
        )
        client = ApiClient(
            self.session, RateLimiter(None), source="ih", max_attempts=MAX_ATTEMPTS, sleep=no_sleep
        )
        return IndexHealthSource(SourceContext(config, agent, client, state or self.state))

    async def fetch(self, target: DownloadTarget) -> tuple[Answer, bytes]:
        """The transfer layer's first hop: GET the target; the answer as the source sees it."""
        async with self.session.get(target.url, headers=dict(target.headers)) as response:
            body = await response.read()
            head = ResponseHead(response.status, str(response.url), dict(response.headers))
        return Answer.of(head, body), body


async def check(source: IndexHealthSource, answer: Answer) -> None:
    """The source's verdict on a download answer, raised as its error unless it is content."""
    outcome = await source.check_download(answer)
    if outcome.verdict is not Verdict.CONTENT:
        raise outcome.failure()


@asynccontextmanager
async def running(clock: Callable[[], float] | None = None, **options: Any) -> AsyncIterator[Env]:
    fake = FakeClock()
    storage = StorageHost(clock=fake)
    sandbox = IndexHealthSandbox(storage, clock=clock or fake, **{**RICH, **options})
    async with storage.running(), sandbox.running() as base, open_session() as session:
        yield Env(sandbox, storage, fake, base, session, MemorySourceState())


def add_reports(sandbox: IndexHealthSandbox) -> tuple[str, str, str]:
    """A collection with a PDF whose name lacks its extension, a text file and a URL page."""
    collection = sandbox.add_collection("Reports")
    pdf = sandbox.add_document(
        collection, "Quarterly report", PDF, file_path="docs/q3.pdf", tags=["audit"]
    )
    txt = sandbox.add_document(collection, "notes.txt", TXT, description="Ward notes")
    page = sandbox.add_document(collection, "Guide", None, url="https://example.org/guide")
    return pdf, txt, page


async def listing(source: IndexHealthSource) -> list[RemoteDocument]:
    return [doc async for doc in source.list_documents()]


def doc_ref(remote_id: str) -> RemoteDocument:
    return RemoteDocument(remote_id=remote_id, version="v1", name="x")


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("http", "body", "expected"),
    [
        (200, b'{"statusCode":437,"data":{},"message":"Document not found"}', 437),
        (500, b'{"status":200,"data":{"auth_token":"t"}}', 200),
        (403, b'{"statusCode":"403","data":{},"message":"UNAUTHORIZED"}', 403),
        (502, b"<html>bad gateway</html>", 502),
        (200, b"", 200),
    ],
)
def test_read_envelope_prefers_the_body_status(http: int, body: bytes, expected: int) -> None:
    """The body's statusCode/status wins over the HTTP status; without one, HTTP decides."""
    assert read_envelope(http, body).status == expected


@pytest.mark.parametrize(
    ("name", "path", "expected"),
    [
        ("Quarterly report", "docs/q3.PDF", "Quarterly report.pdf"),
        ("notes.txt", "docs/notes.pdf", "notes.txt"),
        ("Guide", None, "Guide"),
        ("Scan", "uploads.v2/scan", "Scan"),
    ],
)
def test_file_name_borrows_the_path_extension_only_when_missing(
    name: str, path: str | None, expected: str
) -> None:
    """The document name is kept; the file path's extension is added only if it has none."""
    assert file_name(name, path) == expected


def test_collection_folders_disambiguate_only_clashing_names() -> None:
    """Unique names are folders as is; clashing names get their id; nameless use the id."""
    folders = collection_folders({"a": "Reports", "b": "Reports", "c": "Ops", "d": None})
    assert folders == {"a": "Reports (a)", "b": "Reports (b)", "c": "Ops", "d": "d"}


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("token_key", "status_key"), [("auth_token", "status"), ("access_token", "statusCode")]
)
async def test_both_token_body_shapes_are_accepted(token_key: str, status_key: str) -> None:
    """Either documented token body authenticates; the user carries only the keys set."""
    async with running(token_key=token_key, status_key=status_key) as env:
        add_reports(env.sandbox)
        docs = await listing(env.source())
        assert len(docs) == 3
        assert env.sandbox.tokens_issued == 1
        sent = env.sandbox.auth_requests[0]
        assert sent.client_id == "demo-client"
        assert sent.user == {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.org",
            "group_name": "north-clinic",
        }


@pytest.mark.parametrize("as_http", [True, False])
async def test_bad_client_credentials_raise_authentication_error(as_http: bool) -> None:
    """A 401 "Invalid client credentials" (HTTP or body status) is an AuthenticationError."""
    async with running(errors_as_http_status=as_http) as env:
        add_reports(env.sandbox)
        with pytest.raises(AuthenticationError, match="Invalid client credentials"):
            await listing(env.source(secret="wrong"))


async def test_missing_field_400_is_authentication_error_with_server_message() -> None:
    """A 400 for a missing user field names it, so the user can fix the configuration."""
    user = IndexHealthUser(first_name="Ada", last_name="Lovelace", email="ada@example.org")
    async with running() as env:
        with pytest.raises(AuthenticationError, match="group_name"):
            await listing(env.source(user=user))


@pytest.mark.parametrize("as_http", [True, False])
async def test_token_expiring_mid_listing_is_renewed(as_http: bool) -> None:
    """A token that expires between two collections is renewed once and the pass completes."""
    holder: list[IndexHealthSandbox] = []

    def clock() -> float:  # moves 100 s forward with every /get-documents request
        return START + 100.0 * len(holder[0].log.matching(path_prefix="/get-documents"))

    async with running(clock, token_lifetime=150.0, errors_as_http_status=as_http) as env:
        holder.append(env.sandbox)
        add_reports(env.sandbox)
        ops = env.sandbox.add_collection("Operations")
        env.sandbox.add_document(ops, "rota.txt", TXT)
        docs = await listing(env.source())
        assert len(docs) == 4
        assert env.sandbox.tokens_issued == 2
        # the refused call was repeated once, with the new token
        assert len(env.sandbox.log.matching(path_prefix="/get-documents")) == 3


async def test_token_refused_right_after_renewal_is_authentication_error() -> None:
    """When even a fresh token is refused, the source stops with AuthenticationError."""
    async with running() as env:
        add_reports(env.sandbox)
        refusal: dict[str, object] = {"statusCode": 403, "data": {}, "message": "UNAUTHORIZED"}
        env.sandbox.faults.add("/get-plans", 403, times=2, body=refusal)
        with pytest.raises(AuthenticationError, match="freshly issued"):
            await listing(env.source())
        assert env.sandbox.tokens_issued == 2


async def test_saved_token_is_reused_by_a_new_instance() -> None:
    """The token lives in the state: a second instance does not ask for another."""
    async with running() as env:
        add_reports(env.sandbox)
        await listing(env.source())
        await listing(env.source())
        assert env.sandbox.tokens_issued == 1


async def test_generated_fingerprint_is_stable_across_instances_sharing_a_state() -> None:
    """Without a configured fingerprint one uuid4 is made, stored and reused forever."""
    async with running() as env:
        add_reports(env.sandbox)
        await listing(env.source())
        env.sandbox.expire_all_tokens()  # the second instance must authenticate again
        await listing(env.source())
        other = MemorySourceState()
        await listing(env.source(state=other))
        prints = [r.fingerprint for r in env.sandbox.auth_requests]
        assert len(prints) == 3
        assert prints[0] == prints[1] == env.state.cursors["fingerprint"]
        assert uuid.UUID(str(prints[0])).version == 4
        assert prints[2] != prints[0]


async def test_configured_fingerprint_is_sent_and_nothing_is_stored() -> None:
    """A fingerprint from the configuration is used as is."""
    async with running() as env:
        add_reports(env.sandbox)
        await listing(env.source(fingerprint="kiosk-7"))
        assert env.sandbox.auth_requests[0].fingerprint == "kiosk-7"
        assert "fingerprint" not in env.state.cursors


# --------------------------------------------------------------------------- listing


async def test_listing_with_configured_collections_skips_discovery() -> None:
    """Given collections are listed alone, without asking /get-plans."""
    async with running() as env:
        add_reports(env.sandbox)
        ops = env.sandbox.add_collection("Operations")
        rota = env.sandbox.add_document(ops, "rota.txt", TXT)
        docs = await listing(env.source(collections=(ops,)))
        assert [d.remote_id for d in docs] == [rota]
        assert docs[0].folder == ("Operations",)
        assert env.sandbox.log.matching(path_prefix="/get-plans") == []


async def test_listing_discovers_collections_through_plans() -> None:
    """Without configured collections every plan's collection is listed once, by name."""
    async with running() as env:
        pdf, txt, page = add_reports(env.sandbox)
        ops = env.sandbox.add_collection("Operations")
        env.sandbox.add_plan("Second plan", ops)  # two plans, one collection
        rota = env.sandbox.add_document(ops, "rota.txt", TXT)
        docs = {d.remote_id: d for d in await listing(env.source())}
        assert set(docs) == {pdf, txt, page, rota}
        assert len(env.sandbox.log.matching(path_prefix="/get-documents")) == 2
        assert docs[pdf].name == "Quarterly report.pdf"
        assert docs[pdf].folder == ("Reports",)
        assert docs[rota].folder == ("Operations",)
        listed = env.sandbox.document_json(pdf)
        assert docs[pdf].version == listed["updated_at"]
        modified = docs[pdf].modified
        assert modified is not None
        assert modified.timestamp() == pytest.approx(START)


async def test_collections_with_the_same_name_get_distinct_folders() -> None:
    """Two collections called alike never share a folder."""
    async with running() as env:
        first = env.sandbox.add_collection("Reports")
        second = env.sandbox.add_collection("Reports")
        env.sandbox.add_document(first, "a.txt", TXT)
        env.sandbox.add_document(second, "a.txt", TXT)
        folders = {d.folder for d in await listing(env.source())}
        assert folders == {(f"Reports ({first})",), (f"Reports ({second})",)}


async def test_changed_document_gets_a_new_version() -> None:
    """updated_at is the change key: new bytes change the version, other docs keep theirs."""
    async with running() as env:
        pdf, txt, _ = add_reports(env.sandbox)
        source = env.source()
        before = {d.remote_id: d.version for d in await listing(source)}
        env.clock.now += 60
        env.sandbox.update_document(pdf, PDF + b"more")
        after = {d.remote_id: d.version for d in await listing(source)}
        assert after[pdf] != before[pdf]
        assert after[txt] == before[txt]


async def test_url_only_document_is_skipped_with_its_url_kept() -> None:
    """A document with document_url and no file path is listed as skipped, URL kept."""
    async with running() as env:
        pdf, _, page = add_reports(env.sandbox)
        docs = {d.remote_id: d for d in await listing(env.source())}
        assert docs[page].skip_reason == URL_ONLY
        assert docs[page].external_url == "https://example.org/guide"
        assert docs[pdf].skip_reason is None
        assert docs[pdf].external_url is None


# --------------------------------------------------------------------------- downloads


async def test_presigned_target_fetches_the_bytes_without_authorization() -> None:
    """The presigned target is unpaced, carries no headers and serves the document."""
    async with running() as env:
        pdf, _, _ = add_reports(env.sandbox)
        source = env.source()
        target = await source.download_target(doc_ref(pdf), {})
        assert target.paced is False
        assert dict(target.headers) == {}
        answer, body = await env.fetch(target)
        await check(source, answer)
        assert body == PDF
        assert env.storage.authorization_seen == []


async def test_expired_presigned_url_asks_the_api_again() -> None:
    """A storage 403 after an hour is ExpiredUrlError; the next target is a working URL."""
    async with running(token_lifetime=86400.0) as env:
        pdf, _, _ = add_reports(env.sandbox)
        source = env.source()
        target = await source.download_target(doc_ref(pdf), {})
        env.clock.now += 3601
        answer, _ = await env.fetch(target)
        with pytest.raises(ExpiredUrlError):
            await check(source, answer)
        await source.renew("")  # no token was sent: nothing to renew
        fresh = await source.download_target(doc_ref(pdf), {})
        answer, body = await env.fetch(fresh)
        await check(source, answer)
        assert body == PDF
        assert env.sandbox.download_calls[pdf] == 2
        assert env.sandbox.tokens_issued == 1


async def test_direct_target_fetches_the_bytes_with_the_bearer_token() -> None:
    """The direct target is a paced GET with the token, tracked as the request's credential."""
    async with running() as env:
        _, txt, _ = add_reports(env.sandbox)
        source = env.source(download_method="direct")
        target = await source.download_target(doc_ref(txt), {})
        assert target.url == f"{env.base}/download/{txt}"
        assert target.paced is True
        assert target.credential is not None
        assert target.headers["Authorization"].startswith("Bearer ")
        answer, body = await env.fetch(target)
        await check(source, answer)
        assert body == TXT
        assert 'filename="notes.txt"' in answer.head.headers["Content-Disposition"]


ENVELOPE_CASES = ["no-file-path", "id-required", "not-found", "server-fault"]


async def _provoke(env: Env, case: str, method: str, as_http: bool) -> str:
    """Arrange for the next download call of a document to fail as `case`; return its id."""
    pdf, _, page = add_reports(env.sandbox)
    if case == "no-file-path":
        return page
    if case == "not-found":
        env.sandbox.remove_document(pdf)
    elif case == "server-fault":
        env.sandbox.fail_document(pdf, 500, times=MAX_ATTEMPTS)
    else:
        body: dict[str, object] = {"statusCode": 435, "data": {}, "message": ID_REQUIRED}
        verb = "GET" if method == "direct" else "POST"
        env.sandbox.faults.add("/download", 435 if as_http else 200, body=body, method=verb)
    return pdf


def _assert_outcome(case: str, error: BaseException) -> None:
    if case == "no-file-path":
        assert isinstance(error, SkipDocument)
        assert error.message == URL_ONLY
    elif case == "id-required":
        assert type(error) is PermanentError
        assert "Document ID is required" in str(error)
    elif case == "not-found":
        assert type(error) is PermanentError
        assert error.message == "document not found"
    else:
        assert isinstance(error, TransientError)


@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
@pytest.mark.parametrize("case", ENVELOPE_CASES)
async def test_presigned_body_status_maps_to_the_right_outcome(case: str, as_http: bool) -> None:
    """POST /download errors (435 both kinds, 437, 500) raise the documented outcome."""
    async with running(errors_as_http_status=as_http) as env:
        doc = await _provoke(env, case, "presigned", as_http)
        with pytest.raises((SkipDocument, PermanentError, TransientError)) as caught:
            await env.source().download_target(doc_ref(doc), {})
        _assert_outcome(case, caught.value)
        expected_calls = MAX_ATTEMPTS if case == "server-fault" else 1
        assert len(env.sandbox.log.matching("POST", "/download")) == expected_calls


@pytest.mark.parametrize("error_type", ["json", "document"])
@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
@pytest.mark.parametrize("case", ENVELOPE_CASES)
async def test_direct_body_status_maps_to_the_right_outcome(
    case: str, as_http: bool, error_type: str
) -> None:
    """GET /download/{id} error envelopes map alike, typed as JSON or as the document's file."""
    async with running(errors_as_http_status=as_http, download_error_type=error_type) as env:
        doc = await _provoke(env, case, "direct", as_http)
        source = env.source(download_method="direct")
        answer, _ = await env.fetch(await source.download_target(doc_ref(doc), {}))
        with pytest.raises((SkipDocument, PermanentError, TransientError)) as caught:
            await check(source, answer)
        _assert_outcome(case, caught.value)


@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
async def test_presigned_unauthorized_renews_once_and_retries(as_http: bool) -> None:
    """A 403 UNAUTHORIZED on POST /download renews the token and the retry succeeds."""
    async with running(errors_as_http_status=as_http) as env:
        pdf, _, _ = add_reports(env.sandbox)
        source = env.source()
        await listing(source)
        env.sandbox.expire_all_tokens()
        target = await source.download_target(doc_ref(pdf), {})
        assert (await env.fetch(target))[1] == PDF
        assert env.sandbox.tokens_issued == 2


@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
async def test_direct_unauthorized_renews_and_the_next_target_is_renewed(
    as_http: bool,
) -> None:
    """A refused direct GET asks for renewal; refusals of the same old token renew it once.

    The second refusal is reported after the first retry already renewed the token, as
    happens when downloads run concurrently.
    """
    async with running(errors_as_http_status=as_http) as env:
        pdf, txt, _ = add_reports(env.sandbox)
        source = env.source(download_method="direct")
        targets = [await source.download_target(doc_ref(d), {}) for d in (pdf, txt)]
        env.sandbox.expire_all_tokens()
        answers = await asyncio.gather(*(env.fetch(t) for t in targets))
        fresh = []
        for (answer, _), doc, target in zip(answers, (pdf, txt), targets, strict=True):
            with pytest.raises(TransientError) as caught:
                await check(source, answer)
            assert caught.value.status == 403
            assert (await source.check_download(answer)).verdict is Verdict.RENEW
            await source.renew(target.headers["Authorization"])
            fresh.append(await source.download_target(doc_ref(doc), {}))
        assert fresh[0].headers != targets[0].headers
        assert [(await env.fetch(t))[1] for t in fresh] == [PDF, TXT]
        assert env.sandbox.tokens_issued == 2


async def test_renew_renews_the_refused_token_once() -> None:
    """The contract's renew renews; a second call with the same stale header does not."""
    async with running() as env:
        pdf, _, _ = add_reports(env.sandbox)
        source = env.source(download_method="direct")
        stale = await source.download_target(doc_ref(pdf), {})
        env.sandbox.expire_all_tokens()
        answer, _ = await env.fetch(stale)
        assert answer.head.status == 403
        await source.renew(stale.headers["Authorization"])
        await source.renew(stale.headers["Authorization"])
        assert env.sandbox.tokens_issued == 2
        answer, body = await env.fetch(await source.download_target(doc_ref(pdf), {}))
        await check(source, answer)
        assert body == PDF


async def _downloaded(env: Env, source: IndexHealthSource, doc: str, staging: Path) -> bytes:
    """The bytes the shared Downloader fetches for `doc` through this source."""
    job = JobSpec(1, "ih", doc, "v1", "x", temp_name=f"{doc}.part")
    endpoint = Endpoint(source, doc_ref(doc), {}, RateLimiter(None))

    async def checkpoint(_job: int, _offset: int, _validator: str | None) -> None:
        return None

    async with Downloader(env.session, staging, sleep=no_sleep) as downloader:
        fetched = await downloader.fetch(job, endpoint, checkpoint)
    return Path(fetched.temp_path).read_bytes()


@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
async def test_downloader_renews_a_refused_token_on_direct_downloads(
    as_http: bool, tmp_path: Path
) -> None:
    """Through the real transfer layer a refused direct GET renews the token and succeeds."""
    async with running(errors_as_http_status=as_http) as env:
        pdf, _, _ = add_reports(env.sandbox)
        source = env.source(download_method="direct")
        await listing(source)
        env.sandbox.expire_all_tokens()
        assert await _downloaded(env, source, pdf, tmp_path) == PDF
        assert env.sandbox.tokens_issued == 2


async def test_downloader_retries_a_failed_direct_download_typed_as_the_file(
    tmp_path: Path,
) -> None:
    """A 500 envelope sent as HTTP 200 with the PDF's Content-Type is retried, never kept."""
    async with running(errors_as_http_status=False, download_error_type="document") as env:
        pdf, _, _ = add_reports(env.sandbox)
        env.sandbox.fail_document(pdf, 500, times=1)
        source = env.source(download_method="direct")
        assert await _downloaded(env, source, pdf, tmp_path) == PDF
        assert env.sandbox.download_calls[pdf] == 2


async def test_downloader_asks_again_when_the_presigned_url_expires(tmp_path: Path) -> None:
    """Through the real transfer layer an expired signed URL leads to a fresh POST /download."""
    async with running() as env:
        pdf, _, _ = add_reports(env.sandbox)
        env.storage.faults.expire_times = 1
        assert await _downloaded(env, env.source(), pdf, tmp_path) == PDF
        assert env.sandbox.download_calls[pdf] == 2
        assert env.storage.authorization_seen == []


@pytest.mark.parametrize("method", ["direct", "presigned"])
@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
async def test_eight_downloads_in_flight_when_the_token_dies_renew_it_once(
    method: str, as_http: bool, tmp_path: Path
) -> None:
    """A token that dies under eight concurrent downloads is expiry, never exit 77 (issue 11)."""
    async with running(errors_as_http_status=as_http) as env:
        collection = env.sandbox.add_collection("Bulk")
        docs = [env.sandbox.add_document(collection, f"d{i}.txt", b"%d" % i) for i in range(8)]
        source = env.source(download_method=method)
        await listing(source)
        env.sandbox.expire_all_tokens()
        bodies = await asyncio.gather(*(_downloaded(env, source, d, tmp_path) for d in docs))
        assert bodies == [b"%d" % i for i in range(8)]
        assert env.sandbox.tokens_issued == 2


# --------------------------------------------------------------------------- metadata


async def test_describe_returns_details_with_plans() -> None:
    """describe() maps /get-document-details into the agent's own keys."""
    async with running() as env:
        collection = env.sandbox.add_collection("Reports", plan_name="Basic Plan")
        doc = env.sandbox.add_document(
            collection,
            "q3.pdf",
            PDF,
            description="Third quarter",
            priority="high",
            tags=["audit", "reference"],
        )
        plan = env.sandbox.plans[0]
        meta = await env.source().describe(doc_ref(doc))
        assert meta is not None
        assert meta["description"] == "Third quarter"
        assert meta["type"] == "PDF"
        assert meta["priority"] == "high"
        assert meta["tags"] == ["audit", "reference"]
        assert meta["collection"] == "Reports"
        assert meta["plans"] == [{"id": plan.plan_id, "name": "Basic Plan", "color": plan.color}]
        assert env.sandbox.details_calls[doc] == 1


@pytest.mark.parametrize("as_http", [True, False], ids=["http-status", "http-200-body"])
async def test_describe_of_a_vanished_document_is_permanent(as_http: bool) -> None:
    """A 437 from /get-document-details says the document is gone."""
    async with running(errors_as_http_status=as_http) as env:
        pdf, _, _ = add_reports(env.sandbox)
        env.sandbox.remove_document(pdf)
        with pytest.raises(PermanentError, match="document not found"):
            await env.source().describe(doc_ref(pdf))


def test_envelope_data_is_the_body_data() -> None:
    """An envelope's data is the body's `data`, and its message is empty when absent."""
    assert read_envelope(200, b'{"statusCode":200,"data":[1]}') == Envelope(200, "", [1])
