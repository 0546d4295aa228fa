"""Tests for the Standard Metrics sandbox, driven over HTTP with a real aiohttp client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from yarl import URL

from agent.sandbox.standard_metrics import RICH, StandardMetricsKnobs, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


BASIC = {"Authorization": basic("demo-client", "demo-secret")}
GRANT = {"grant_type": "client_credentials"}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(clock: FakeClock) -> AsyncIterator[StorageHost]:
    host = StorageHost(clock=clock)
    async with host.running():
        yield host


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        yield client


@pytest.fixture
async def sandbox(storage: StorageHost, clock: FakeClock) -> AsyncIterator[StandardMetricsSandbox]:
    sb = StandardMetricsSandbox(storage, clock=clock, **RICH)
    async with sb.running():
        yield sb


async def get_token(session: aiohttp.ClientSession, sb: StandardMetricsSandbox) -> str:
    async with session.post(sb.token_url, headers=BASIC, data=GRANT) as response:
        assert response.status == 200
        token: str = (await response.json())["access_token"]
        return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def list_all(
    session: aiohttp.ClientSession, sb: StandardMetricsSandbox, token: str, **query: str
) -> list[dict[str, object]]:
    """Follow `next` from the first page to the end and return every result."""
    url: str | None = str(URL(f"{sb.api_url}/documents/").with_query(query))
    results: list[dict[str, object]] = []
    while url is not None:
        async with session.get(url, headers=bearer(token)) as response:
            assert response.status == 200
            page = await response.json()
        results.extend(page["results"])
        url = page["next"]
    return results


async def download(
    session: aiohttp.ClientSession, sb: StandardMetricsSandbox, token: str, doc_id: str
) -> tuple[str, bytes]:
    """Ask for the redirect, then fetch its Location without Authorization."""
    url = f"{sb.api_url}/documents/{doc_id}/download/"
    async with session.get(url, headers=bearer(token), allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    async with session.get(location) as blob:
        assert blob.status == 200
        return location, await blob.read()


# ---- tokens --------------------------------------------------------------------------------


async def test_token_endpoint_issues_bearer_token_for_basic_client_credentials(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    async with session.post(sandbox.token_url, headers=BASIC, data=GRANT) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    assert sandbox.token_is_valid(body["access_token"])
    assert sandbox.tokens_issued == 1


async def test_token_endpoint_accepts_credentials_in_the_form_body(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    form = {**GRANT, "client_id": "demo-client", "client_secret": "demo-secret"}
    async with session.post(sandbox.token_url, data=form) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    "auth",
    [basic("demo-client", "wrong"), basic("other", "demo-secret"), "Basic !!notbase64", None],
)
async def test_token_endpoint_rejects_bad_credentials_with_invalid_client(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    async with session.post(sandbox.token_url, headers=headers, data=GRANT) as response:
        assert response.status == 401
        assert await response.json() == {"error": "invalid_client"}
    assert sandbox.tokens_issued == 0


async def test_token_endpoint_rejects_other_grant_types(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    form = {"grant_type": "password", "username": "u", "password": "p"}
    async with session.post(sandbox.token_url, headers=BASIC, data=form) as response:
        assert response.status == 400
        assert await response.json() == {"error": "unsupported_grant_type"}


async def test_token_lifetime_is_configurable_and_tokens_expire_by_the_clock(
    storage: StorageHost, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    sb = StandardMetricsSandbox(storage, token_lifetime=36000, clock=clock, **RICH)
    async with sb.running():
        async with session.post(sb.token_url, headers=BASIC, data=GRANT) as response:
            body = await response.json()
        assert body["expires_in"] == 36000
        listing = f"{sb.api_url}/documents/"
        clock.advance(35999)
        async with session.get(listing, headers=bearer(body["access_token"])) as response:
            assert response.status == 200
        clock.advance(1)
        async with session.get(listing, headers=bearer(body["access_token"])) as response:
            assert response.status == 401
            assert await response.json() == {"detail": "Invalid token."}


async def test_expire_all_tokens_forces_401_until_a_new_token_is_fetched(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    token = await get_token(session, sandbox)
    listing = f"{sandbox.api_url}/documents/"
    sandbox.expire_all_tokens()
    async with session.get(listing, headers=bearer(token)) as response:
        assert response.status == 401
        assert await response.json() == {"detail": "Invalid token."}
    fresh = await get_token(session, sandbox)
    async with session.get(listing, headers=bearer(fresh)) as response:
        assert response.status == 200
    assert sandbox.tokens_issued == 2


@pytest.mark.parametrize("header", [None, "Basic ZGVtbzpkZW1v", "Bearer "])
async def test_v1_calls_without_a_bearer_token_get_401(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession, header: str | None
) -> None:
    doc_id = sandbox.add_document("a.pdf", b"abc")
    headers = {"Authorization": header} if header else {}
    for path in ("/documents/", f"/documents/{doc_id}/download/"):
        url = sandbox.api_url + path
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            body = await response.json()
        assert body == {"detail": "Authentication credentials were not provided."}


async def test_unknown_bearer_token_gets_invalid_token(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.api_url}/documents/"
    async with session.get(url, headers=bearer("made-up")) as response:
        assert response.status == 401
        assert await response.json() == {"detail": "Invalid token."}


# ---- listing -------------------------------------------------------------------------------


async def test_paging_follows_absolute_next_links_and_returns_each_document_once_in_order(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    ids = [sandbox.add_document(f"doc {i}.pdf", bytes([i])) for i in range(23)]
    token = await get_token(session, sandbox)
    results = await list_all(session, sandbox, token, page_size="5")
    assert [r["id"] for r in results] == ids
    url = f"{sandbox.api_url}/documents/?page_size=5&page=2"
    async with session.get(url, headers=bearer(token)) as response:
        page = await response.json()
    assert page["count"] == 23
    assert page["next"] == f"{sandbox.api_url}/documents/?page_size=5&page=3"
    assert page["previous"] == f"{sandbox.api_url}/documents/?page_size=5"  # DRF drops page=1


async def test_first_and_last_pages_have_null_previous_and_next(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    for i in range(3):
        sandbox.add_document(f"{i}.pdf", b"x")
    token = await get_token(session, sandbox)
    async with session.get(f"{sandbox.api_url}/documents/", headers=bearer(token)) as response:
        page = await response.json()
    assert page["previous"] is None
    assert page["next"] is None
    assert page["count"] == 3


async def test_listing_serialises_the_documented_fields_and_nothing_else(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    doc_id = sandbox.add_document("x.pdf", b"12345", company_id="c1", uploaded_at=when)
    token = await get_token(session, sandbox)
    [result] = await list_all(session, sandbox, token)
    assert set(result) == {
        "id",
        "name",
        "link",
        "company_id",
        "information_request_id",
        "parse_state",
        "parsed_at",
        "uploaded_at",
        "source",
        "submitted_date",
    }
    assert result["id"] == doc_id
    assert result["uploaded_at"] == "2024-05-01T12:30:00Z"
    assert result["information_request_id"] is None
    assert result["submitted_date"] == "2024-05-01"


async def test_page_size_is_clamped_to_100_and_bad_values_fall_back_to_the_default(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.add_listing_only(150)
    token = await get_token(session, sandbox)
    for size, expected in (("500", 100), ("0", 100), ("abc", 100), ("7", 7)):
        url = f"{sandbox.api_url}/documents/?page_size={size}"
        async with session.get(url, headers=bearer(token)) as response:
            assert len((await response.json())["results"]) == expected


@pytest.mark.parametrize("page", ["0", "3", "-1", "two"])
async def test_out_of_range_or_malformed_page_is_404_invalid_page(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession, page: str
) -> None:
    for i in range(15):
        sandbox.add_document(f"{i}.pdf", b"x")
    token = await get_token(session, sandbox)
    url = f"{sandbox.api_url}/documents/?page_size=10&page={page}"
    async with session.get(url, headers=bearer(token)) as response:
        assert response.status == 404
        assert await response.json() == {"detail": "Invalid page."}


async def test_empty_listing_still_has_a_first_page(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    token = await get_token(session, sandbox)
    url = f"{sandbox.api_url}/documents/?page=1"
    async with session.get(url, headers=bearer(token)) as response:
        assert response.status == 200
        assert await response.json() == {"count": 0, "next": None, "previous": None, "results": []}


async def test_from_and_to_filter_inclusively_on_uploaded_at(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    base = datetime(2024, 3, 1, tzinfo=UTC)
    ids = [
        sandbox.add_document(f"{i}.pdf", b"x", uploaded_at=base + timedelta(days=i))
        for i in range(5)
    ]
    token = await get_token(session, sandbox)
    results = await list_all(
        session, sandbox, token, **{"from": "2024-03-02T00:00:00Z", "to": "2024-03-04T00:00:00Z"}
    )
    assert [r["id"] for r in results] == ids[1:4]
    results = await list_all(session, sandbox, token, **{"from": "2024-03-04T00:00:00+00:00"})
    assert [r["id"] for r in results] == ids[3:]


async def test_company_parse_state_and_source_filters_match_exactly(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    a = sandbox.add_document("a.pdf", b"x", company_id="c1", source="email")
    b = sandbox.add_document("b.pdf", b"x", company_id="c2", parse_state="unparsed")
    c = sandbox.add_document("c.pdf", b"x", company_id="c1")
    token = await get_token(session, sandbox)
    assert [r["id"] for r in await list_all(session, sandbox, token, company_id="c1")] == [a, c]
    assert [r["id"] for r in await list_all(session, sandbox, token, parse_state="unparsed")] == [b]
    assert [r["id"] for r in await list_all(session, sandbox, token, source="email")] == [a]


async def test_malformed_date_filter_is_400_with_a_field_error(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    token = await get_token(session, sandbox)
    url = f"{sandbox.api_url}/documents/?from=yesterday"
    async with session.get(url, headers=bearer(token)) as response:
        assert response.status == 400
        assert await response.json() == {"from": ["Enter a valid date/time."]}


async def test_filtered_listing_sees_changes_made_between_requests(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    first = sandbox.add_document("a.pdf", b"x", company_id="c1")
    token = await get_token(session, sandbox)
    assert len(await list_all(session, sandbox, token, company_id="c1")) == 1
    second = sandbox.add_document("b.pdf", b"x", company_id="c1")
    sandbox.remove_document(first)
    assert [r["id"] for r in await list_all(session, sandbox, token, company_id="c1")] == [second]


# ---- downloads -----------------------------------------------------------------------------


async def test_download_redirects_to_a_signed_storage_url_serving_the_bytes(
    sandbox: StandardMetricsSandbox, storage: StorageHost, session: aiohttp.ClientSession
) -> None:
    data = bytes(range(256)) * 40
    doc_id = sandbox.add_document("deck.pdf", data)
    token = await get_token(session, sandbox)
    location, body = await download(session, sandbox, token, doc_id)
    assert location.startswith(storage.base_url)
    assert "X-Signature=" in location
    assert body == data
    assert storage.authorization_seen == []


async def test_signed_url_expires_after_an_hour_and_a_new_request_gives_a_fresh_one(
    sandbox: StandardMetricsSandbox, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    doc_id = sandbox.add_document("deck.pdf", b"payload")
    token = await get_token(session, sandbox)
    location, _ = await download(session, sandbox, token, doc_id)
    clock.advance(3601)
    async with session.get(location) as response:
        assert response.status == 403
    token = await get_token(session, sandbox)
    _, body = await download(session, sandbox, token, doc_id)
    assert body == b"payload"


async def test_download_of_unknown_or_removed_document_is_404_not_found(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    doc_id = sandbox.add_document("gone.pdf", b"x")
    sandbox.remove_document(doc_id)
    token = await get_token(session, sandbox)
    for missing in (doc_id, "nosuchid"):
        url = f"{sandbox.api_url}/documents/{missing}/download/"
        async with session.get(url, headers=bearer(token), allow_redirects=False) as response:
            assert response.status == 404
            assert await response.json() == {"detail": "Not found."}
    assert await list_all(session, sandbox, token) == []


async def test_update_gives_new_bytes_new_etag_and_a_later_uploaded_at(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    doc_id = sandbox.add_document("v.pdf", b"old")
    token = await get_token(session, sandbox)
    [before] = await list_all(session, sandbox, token)
    location, _ = await download(session, sandbox, token, doc_id)
    async with session.get(location) as response:
        old_etag = response.headers["ETag"]
    sandbox.update_document(doc_id, b"new bytes")
    [after] = await list_all(session, sandbox, token)
    assert str(after["uploaded_at"]) > str(before["uploaded_at"])
    location, body = await download(session, sandbox, token, doc_id)
    assert body == b"new bytes"
    async with session.get(location) as response:
        assert response.headers["ETag"] != old_etag


async def test_rename_changes_the_name_but_not_uploaded_at_or_bytes(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    doc_id = sandbox.add_document("old.pdf", b"same")
    token = await get_token(session, sandbox)
    [before] = await list_all(session, sandbox, token)
    sandbox.rename_document(doc_id, "new.pdf")
    [after] = await list_all(session, sandbox, token)
    assert after["name"] == "new.pdf"
    assert after["uploaded_at"] == before["uploaded_at"]
    assert (await download(session, sandbox, token, doc_id))[1] == b"same"


async def test_redirect_to_overrides_the_location(
    storage: StorageHost, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    sb = StandardMetricsSandbox(
        storage,
        redirect_to=lambda doc_id, name: f"http://127.0.0.1:9/{doc_id}/{name}",
        clock=clock,
        **RICH,
    )
    doc_id = sb.add_document("n.pdf", b"x")
    async with sb.running():
        token = await get_token(session, sb)
        url = f"{sb.api_url}/documents/{doc_id}/download/"
        async with session.get(url, headers=bearer(token), allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == f"http://127.0.0.1:9/{doc_id}/n.pdf"


async def test_listing_only_documents_page_cheaply_and_download_a_generated_body(
    sandbox: StandardMetricsSandbox, storage: StorageHost, session: aiohttp.ClientSession
) -> None:
    ids = sandbox.add_listing_only(100_000)  # its speed is the benchmarks' business
    assert len(set(ids)) == 100_000
    assert storage.blobs == {}
    token = await get_token(session, sandbox)
    url = f"{sandbox.api_url}/documents/?page=1000&page_size=100"
    async with session.get(url, headers=bearer(token)) as response:
        page = await response.json()
    assert page["count"] == 100_000
    assert page["next"] is None
    assert [r["id"] for r in page["results"]] == ids[-100:]
    _, body = await download(session, sandbox, token, ids[-1])
    assert body == sandbox.content(ids[-1])
    assert len(body) < 100


# ---- rate limiting and faults --------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_until_the_window_slides(
    storage: StorageHost, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    sb = StandardMetricsSandbox(storage, clock=clock, **{**RICH, "requests_per_minute": 3})
    async with sb.running():
        token = await get_token(session, sb)  # the token call counts too
        listing = f"{sb.api_url}/documents/"
        clock.advance(10)
        for _ in range(2):
            async with session.get(listing, headers=bearer(token)) as response:
                assert response.status == 200
        async with session.get(listing, headers=bearer(token)) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "50"  # the token call leaves at t=60
            assert (await response.json())["detail"].startswith("Request was throttled.")
        clock.advance(50)
        async with session.get(listing, headers=bearer(token)) as response:
            assert response.status == 200
    assert sb.throttled == 1
    assert sb.max_requests_in_window(60.0) == 4  # throttled requests still arrived


async def test_rate_limit_without_retry_after_sends_no_header(
    storage: StorageHost, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    sb = StandardMetricsSandbox(
        storage, clock=clock, **{**RICH, "requests_per_minute": 1, "retry_after": False}
    )
    async with sb.running():
        await get_token(session, sb)
        async with session.post(sb.token_url, headers=BASIC, data=GRANT) as response:
            assert response.status == 429
            assert "Retry-After" not in response.headers
            assert await response.json() == {"detail": "Request was throttled."}
    assert sb.tokens_issued == 1


def test_max_requests_in_window_finds_the_busiest_window() -> None:
    sb = StandardMetricsSandbox(StorageHost())
    sb.request_times.extend([0.0, 10.0, 59.0, 60.0, 61.0, 200.0])
    assert sb.max_requests_in_window(60.0) == 4  # 10, 59, 60, 61 fall in [10, 70)
    assert sb.max_requests_in_window(1.0) == 1


async def test_fault_plan_scripts_a_503_storm_before_normal_service(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    token = await get_token(session, sandbox)
    sandbox.faults.add("/v1/documents/", 503, times=2, headers={"Retry-After": "1"})
    statuses = []
    for _ in range(3):
        url = f"{sandbox.api_url}/documents/"
        async with session.get(url, headers=bearer(token)) as response:
            statuses.append(response.status)
    assert statuses == [503, 503, 200]
    assert len(sandbox.log.matching("GET", "/v1/documents/")) == 3


# ---- demo data -----------------------------------------------------------------------------


def test_populate_demo_is_deterministic_and_has_awkward_duplicate_names(clock: FakeClock) -> None:
    one, two = StorageHost(clock=clock), StorageHost(clock=clock)
    a, b = StandardMetricsSandbox(one, clock=clock), StandardMetricsSandbox(two, clock=clock)
    ids = a.populate_demo(36, seed=7)
    assert ids == b.populate_demo(36, seed=7)
    names = [a.document(i).name for i in ids]
    assert names == [b.document(i).name for i in ids]
    assert [a.content(i) for i in ids] == [b.content(i) for i in ids]
    assert {"../evil.pdf", "reports/2024/summary.pdf"} <= set(names)
    assert len(set(names)) < len(names)
    assert any(not n.isascii() for n in names)
    sizes = [len(a.content(i)) for i in ids]
    assert min(sizes) < 16
    assert 250 * 1024 < max(sizes) <= 300 * 1024
    uploads = [a.document(i).uploaded_at for i in ids]
    assert uploads == sorted(uploads)


async def test_every_demo_document_downloads_its_bytes(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    ids = sandbox.populate_demo()
    token = await get_token(session, sandbox)
    listed = await list_all(session, sandbox, token)
    assert [r["id"] for r in listed] == ids
    for doc_id in ids:
        assert (await download(session, sandbox, token, doc_id))[1] == sandbox.content(doc_id)


# ---- the least readings, the defaults --------------------------------------------------------


@pytest.fixture
async def minimal(storage: StorageHost, clock: FakeClock) -> AsyncIterator[StandardMetricsSandbox]:
    sb = StandardMetricsSandbox(storage, clock=clock)
    async with sb.running():
        yield sb


async def test_by_default_one_token_gets_30_requests_in_10_seconds_without_retry_after(
    minimal: StandardMetricsSandbox, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    listing = f"{minimal.api_url}/documents/"
    token = await get_token(session, minimal)
    for _ in range(30):
        async with session.get(listing, headers=bearer(token)) as response:
            assert response.status == 200
    async with session.get(listing, headers=bearer(token)) as response:
        assert response.status == 429
        assert "Retry-After" not in response.headers
    other = await get_token(session, minimal)  # the limit is per bearer token
    async with session.get(listing, headers=bearer(other)) as response:
        assert response.status == 200
    clock.advance(10)
    async with session.get(listing, headers=bearer(token)) as response:
        assert response.status == 200


async def test_by_default_120_requests_a_minute_are_all_any_client_gets(
    minimal: StandardMetricsSandbox, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    listing = f"{minimal.api_url}/documents/"
    for _ in range(12):  # 12 tokens x 10 requests, each token well under its own limit
        token = await get_token(session, minimal)  # token requests count too
        for _ in range(9):
            async with session.get(listing, headers=bearer(token)) as response:
                assert response.status == 200
        clock.advance(1)
    async with session.get(listing, headers=bearer(token)) as response:
        assert response.status == 429
    clock.advance(60 - 12)
    async with session.get(listing, headers=bearer(token)) as response:
        assert response.status == 200


@pytest.mark.parametrize("per_minute", [120, 500])
async def test_the_global_limit_is_120_or_500_a_minute(
    storage: StorageHost, clock: FakeClock, session: aiohttp.ClientSession, per_minute: int
) -> None:
    sb = StandardMetricsSandbox(
        storage, clock=clock, per_token_limit=None, requests_per_minute=per_minute
    )
    async with sb.running():
        token = await get_token(session, sb)
        listing = f"{sb.api_url}/documents/"
        for _ in range(per_minute - 1):
            async with session.get(listing, headers=bearer(token)) as response:
                assert response.status == 200
        async with session.get(listing, headers=bearer(token)) as response:
            assert response.status == 429


async def test_by_default_empty_fields_are_absent_not_null(
    minimal: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    minimal.add_document("a.pdf", b"a", parse_state="unparsed")
    (item,) = await list_all(session, minimal, await get_token(session, minimal))
    assert None not in item.values()
    assert {"link", "information_request_id", "parsed_at"}.isdisjoint(item)


@pytest.mark.parametrize(("knobs", "status"), [({}, 403), (RICH, 401)], ids=["default", "rich"])
async def test_a_dead_token_is_refused_with_403_by_default_and_401_with_a_challenge(
    storage: StorageHost,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    knobs: StandardMetricsKnobs,
    status: int,
) -> None:
    """Undocumented refusal status, least reading: DRF's 403 without WWW-Authenticate."""
    sb = StandardMetricsSandbox(storage, clock=clock, **knobs)
    async with sb.running():
        token = await get_token(session, sb)
        sb.expire_all_tokens()
        async with session.get(f"{sb.api_url}/documents/", headers=bearer(token)) as response:
            assert response.status == status
            assert ("WWW-Authenticate" in response.headers) is (status == 401)


async def test_a_forbidden_document_answers_403_permission_denied_to_a_good_token(
    sandbox: StandardMetricsSandbox, session: aiohttp.ClientSession
) -> None:
    """forbid_document: the listing still works, that document's download is refused."""
    doc_id = sandbox.add_document("secret.pdf", b"x")
    sandbox.forbid_document(doc_id)
    headers = bearer(await get_token(session, sandbox))
    url = f"{sandbox.api_url}/documents/{doc_id}/download/"
    async with session.get(url, headers=headers, allow_redirects=False) as response:
        assert response.status == 403
        assert "permission" in (await response.json())["detail"]
    async with session.get(f"{sandbox.api_url}/documents/", headers=headers) as response:
        assert response.status == 200
