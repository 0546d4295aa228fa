"""The Index Health sandbox answers as the public documentation (seeds 001, 003) says."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from index_health_kit import PDF_BYTES, START, USER, FakeClock, add_report, api, auth_body

from agent.sandbox.index_health import RICH, IndexHealthSandbox
from agent.sandbox.index_health_http import (
    UnsatisfiableRangeError,
    content_disposition,
    iso_timestamp,
    parse_byte_range,
)
from agent.sandbox.storage import StorageHost

# --------------------------------------------------------------------------- auth


async def test_token_page_body_shape_is_status_and_auth_token() -> None:
    """Default options answer {"status":200,"data":{"auth_token": JWT}} and count the token."""
    async with api(minimal=True) as a:
        status, body = await a.post("/generate-client-auth-token", auth_body())
        assert status == 200
        assert set(body) == {"status", "data"}
        assert body["status"] == 200
        assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", body["data"]["auth_token"])
        assert a.sandbox.tokens_issued == 1


async def test_download_page_body_shape_is_status_code_access_token_and_okay() -> None:
    """token_key/status_key select {"statusCode":200,"data":{"access_token"},"message":"OKAY"}."""
    async with api(token_key="access_token", status_key="statusCode") as a:
        status, body = await a.post("/generate-client-auth-token", auth_body())
        assert status == 200
        assert body["statusCode"] == 200
        assert body["message"] == "OKAY"
        assert set(body["data"]) == {"access_token"}
        status, _ = await a.post("/get-plans", {}, body["data"]["access_token"])
        assert status == 200


@pytest.mark.parametrize(
    "body",
    [
        auth_body(client_id=None),
        auth_body(client_secret=""),
        auth_body(fingerprint=None),
        auth_body(user=None),
        auth_body(user={**USER, "first_name": ""}),
        auth_body(user={k: v for k, v in USER.items() if k != "last_name"}),
        auth_body(user={k: v for k, v in USER.items() if k != "email"}),
        auth_body(user={k: v for k, v in USER.items() if k != "group_name"}),
    ],
    ids=["client_id", "secret", "fingerprint", "user", "first", "last", "identity", "group"],
)
async def test_token_request_missing_a_field_gets_400(body: dict[str, Any]) -> None:
    """Each required field (and one identity field, and group_name off-root) is enforced."""
    async with api() as a:
        status, answer = await a.post("/generate-client-auth-token", body)
        assert status == 400
        assert answer["statusCode"] == 400
        assert answer["data"] == {}
        assert answer["message"]
        assert a.sandbox.tokens_issued == 0


async def test_root_group_client_needs_no_group_name() -> None:
    """With root_group=True a user without group_name still gets a token."""
    user = {"first_name": "Ada", "last_name": "Lovelace", "uid": "u-1"}
    async with api(root_group=True) as a:
        status, _ = await a.post("/generate-client-auth-token", auth_body(user=user))
        assert status == 200


async def test_bad_credentials_get_401() -> None:
    """A wrong secret gets 401 with the documented message."""
    async with api() as a:
        status, body = await a.post("/generate-client-auth-token", auth_body(client_secret="x"))
        assert status == 401
        assert body == {"statusCode": 401, "data": {}, "message": "Invalid client credentials"}


async def test_auth_requests_record_fingerprint_and_user() -> None:
    """Every token request's fingerprint and user object are kept for inspection."""
    async with api() as a:
        await a.token()
        await a.post("/generate-client-auth-token", auth_body(fingerprint="fp-2", user=None))
        seen = [(r.fingerprint, r.user) for r in a.sandbox.auth_requests]
        assert seen == [("device-fingerprint-123", USER), ("fp-2", None)]


async def test_token_is_refused_once_its_lifetime_passes() -> None:
    """A token works until token_lifetime elapses on the injected clock, then 403."""
    async with api(token_lifetime=60.0) as a:
        token = await a.token()
        a.clock.now += 59
        assert (await a.post("/get-plans", {}, token))[0] == 200
        a.clock.now += 1
        status, body = await a.post("/get-plans", {}, token)
        assert status == 403
        assert body == {"statusCode": 403, "data": {}, "message": "UNAUTHORIZED"}
        assert (await a.post("/get-plans", {}, await a.token()))[0] == 200


async def test_expire_all_tokens_makes_every_call_403() -> None:
    """expire_all_tokens() revokes tokens already issued, for both methods."""
    async with api() as a:
        _, doc = add_report(a.sandbox)
        token = await a.token()
        a.sandbox.expire_all_tokens()
        assert (await a.post("/download", {"document_id": doc}, token))[0] == 403
        assert (await a.get(f"/download/{doc}", token))[0] == 403


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic ZGVtbzpkZW1v"])
async def test_missing_or_unknown_bearer_gets_403(header: str | None) -> None:
    """No header, an unknown token or another scheme all answer UNAUTHORIZED."""
    async with api() as a:
        await a.token()
        headers = {"Authorization": header} if header else {}
        async with a.http.post(a.base + "/get-plans", json={}, headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json())["message"] == "UNAUTHORIZED"


# --------------------------------------------------------------------------- listing


async def test_get_plans_lists_each_plan_with_its_collection() -> None:
    """add_collection creates a plan linked to it, listed by /get-plans."""
    async with api() as a:
        collection = a.sandbox.add_collection("Reports")
        status, body = await a.post("/get-plans", {}, await a.token())
        assert status == 200
        assert body["message"] == "OKAY"
        [plan] = body["data"]
        assert set(plan) == {"plan_id", "plan_name", "color", "collection_id"}
        assert plan["collection_id"] == collection


async def test_get_documents_returns_the_whole_collection_with_documented_fields() -> None:
    """/get-documents lists every document of one collection, unpaged, other collections not."""
    async with api() as a:
        collection, doc = add_report(a.sandbox)
        others = [a.sandbox.add_document(collection, f"n{i}.txt", b"x") for i in range(3)]
        a.sandbox.add_document(a.sandbox.add_collection("Other"), "elsewhere.txt", b"y")
        status, body = await a.post(
            "/get-documents", {"collection_id": collection}, await a.token()
        )
        assert status == 200
        assert [d["document_id"] for d in body["data"]] == [doc, *others]
        first = body["data"][0]
        assert first == {
            "document_id": doc,
            "document_name": "Quarterly report",
            "document_type": "PDF",
            "collection_id": collection,
            "collection_name": "Reports",
            "document_file_path": "docs/q3.pdf",
            "document_tags": ["audit"],
            "created_at": "2023-11-14T22:13:20.000Z",
            "updated_at": "2023-11-14T22:13:20.000Z",
            "avg_progress": 0,
        }


async def test_get_documents_without_collection_id_gets_435() -> None:
    """collection_id is required."""
    async with api() as a:
        status, body = await a.post("/get-documents", {}, await a.token())
        assert (status, body["statusCode"]) == (435, 435)
        assert body["message"] == "Collection ID is required"


async def test_body_that_is_not_json_reads_as_empty() -> None:
    """Like express.json(), a non-JSON content type leaves the body empty: 435."""
    async with api() as a:
        headers = {"Authorization": f"Bearer {await a.token()}"}
        data = json.dumps({"document_id": "x"})
        async with a.http.post(a.base + "/download", data=data, headers=headers) as resp:
            assert resp.status == 435
            assert (await resp.json())["message"] == "Document ID is required"


async def test_details_add_associated_plans_and_count_calls() -> None:
    """/get-document-details adds associated_plans and each call is counted per document."""
    async with api() as a:
        collection, doc = add_report(a.sandbox)
        token = await a.token()
        for _ in range(2):
            status, body = await a.post("/get-document-details", {"document_id": doc}, token)
            assert status == 200
        [plan] = a.sandbox.plans
        details = body["data"]
        assert details["associated_plans"] == [
            {"plan_id": plan.plan_id, "plan_name": plan.plan_name, "color": plan.color}
        ]
        assert details["collection_id"] == collection
        assert a.sandbox.details_calls == {doc: 2}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [({}, 435, "Document ID is required"), ({"document_id": "nope"}, 437, "Document not found")],
)
async def test_details_errors(body: dict[str, str], status: int, message: str) -> None:
    """Missing id is 435 and unknown id is 437, per seed 003."""
    async with api() as a:
        got, answer = await a.post("/get-document-details", body, await a.token())
        assert (got, answer["statusCode"], answer["message"]) == (status, status, message)


async def test_scripted_details_failure_answers_500_then_recovers() -> None:
    """fail_details makes the next N detail calls 500 "Failed to fetch document"."""
    async with api() as a:
        _, doc = add_report(a.sandbox)
        a.sandbox.fail_details(doc, times=1)
        token = await a.token()
        status, body = await a.post("/get-document-details", {"document_id": doc}, token)
        assert (status, body["message"]) == (500, "Failed to fetch document")
        assert (await a.post("/get-document-details", {"document_id": doc}, token))[0] == 200


# --------------------------------------------------------------------------- downloads


async def test_presigned_download_url_serves_the_bytes_without_authorization() -> None:
    """POST /download returns a storage URL that yields the bytes and expires with presign_ttl."""
    async with api(presign_ttl=120.0) as a:
        _, doc = add_report(a.sandbox)
        status, body = await a.post("/download", {"document_id": doc}, await a.token())
        assert (status, body["statusCode"], body["message"]) == (200, 200, "OKAY")
        url = body["data"]["download_url"]
        assert url.startswith(a.storage.base_url)
        async with a.http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == PDF_BYTES
        a.clock.now += 121
        async with a.http.get(url) as resp:
            assert resp.status == 403


async def test_direct_download_sends_bytes_and_documented_headers() -> None:
    """GET /download/{id}: bytes, MIME by extension, filename with extension, no-cache."""
    async with api() as a:
        _, doc = add_report(a.sandbox)
        status, data, headers = await a.get(f"/download/{doc}", await a.token())
        assert status == 200
        assert data == PDF_BYTES
        assert headers["Content-Type"] == "application/pdf"
        assert headers["Content-Disposition"] == 'attachment; filename="Quarterly report.pdf"'
        assert headers["Cache-Control"] == "no-cache"
        assert headers["Content-Length"] == str(len(PDF_BYTES))
        assert headers["ETag"].startswith('"')


async def test_direct_download_honours_range_and_if_range() -> None:
    """Range gives 206 + Content-Range; a stale If-Range gives the whole body; past end 416."""
    async with api() as a:
        _, doc = add_report(a.sandbox)
        token = await a.token()
        path = f"/download/{doc}"
        etag = (await a.get(path, token))[2]["ETag"]
        status, part, headers = await a.get(path, token, Range="bytes=100-", **{"If-Range": etag})
        assert status == 206
        assert part == PDF_BYTES[100:]
        assert headers["Content-Range"] == f"bytes 100-{len(PDF_BYTES) - 1}/{len(PDF_BYTES)}"
        a.sandbox.update_document(doc, b"new content")
        status, whole, _ = await a.get(path, token, Range="bytes=100-", **{"If-Range": etag})
        assert (status, whole) == (200, b"new content")
        status, _, headers = await a.get(path, token, Range="bytes=500-")
        assert (status, headers["Content-Range"]) == (416, "bytes */11")


@pytest.mark.parametrize("as_http_status", [True, False])
@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(
    ("which", "code", "message"),
    [("url", 435, "Document has no file path"), ("unknown", 437, "Document not found")],
)
async def test_download_errors_as_http_status_or_body_only(
    as_http_status: bool, method: str, which: str, code: int, message: str
) -> None:
    """URL-based docs are 435 and unknown ids 437, as HTTP status or as 200 + body status."""
    async with api(errors_as_http_status=as_http_status) as a:
        collection = a.sandbox.add_collection("Links")
        url_doc = a.sandbox.add_document(collection, "Guide", None, url="https://example.org/g")
        doc = url_doc if which == "url" else "no-such-document"
        token = await a.token()
        if method == "POST":
            status, body = await a.post("/download", {"document_id": doc}, token)
        else:
            status, raw, _ = await a.get(f"/download/{doc}", token)
            body = json.loads(raw)
        assert status == (code if as_http_status else 200)
        assert body == {"statusCode": code, "data": {}, "message": message}


async def test_unauthorized_is_also_body_only_when_errors_are_not_http_statuses() -> None:
    """With errors_as_http_status=False even 403 comes back as HTTP 200."""
    async with api(errors_as_http_status=False) as a:
        status, body = await a.post("/get-plans", {}, "bogus")
        assert (status, body["statusCode"], body["message"]) == (200, 403, "UNAUTHORIZED")


async def test_fail_document_fails_the_next_download_calls_of_either_method() -> None:
    """fail_document(times=2) fails one POST and one GET with their own 500 messages."""
    async with api() as a:
        _, doc = add_report(a.sandbox)
        a.sandbox.fail_document(doc, times=2)
        token = await a.token()
        status, body = await a.post("/download", {"document_id": doc}, token)
        assert (status, body["message"]) == (500, "Failed to generate download URL")
        status, raw, _ = await a.get(f"/download/{doc}", token)
        assert (status, json.loads(raw)["message"]) == (500, "Failed to download document")
        assert (await a.get(f"/download/{doc}", token))[1] == PDF_BYTES
        assert a.sandbox.download_calls[doc] == 3


async def test_fault_plan_overrides_any_endpoint() -> None:
    """Generic scripted faults from .faults apply before the handler and are logged."""
    async with api() as a:
        a.sandbox.faults.add("/get-plans", 503, body={"message": "busy"})
        token = await a.token()
        assert (await a.post("/get-plans", {}, token))[0] == 503
        assert (await a.post("/get-plans", {}, token))[0] == 200
        assert len(a.sandbox.log.matching("POST", "/get-plans")) == 2


# --------------------------------------------------------------------------- data changes


async def test_update_moves_updated_at_forward_even_on_a_frozen_clock() -> None:
    """update_document, rename_document and set_tags each advance updated_at."""
    async with api() as a:
        _, doc = add_report(a.sandbox)
        stamps = [a.sandbox.document_json(doc)["updated_at"]]
        a.sandbox.update_document(doc, b"v2")
        stamps.append(a.sandbox.document_json(doc)["updated_at"])
        a.sandbox.rename_document(doc, "Q3 report.pdf")
        stamps.append(a.sandbox.document_json(doc)["updated_at"])
        a.sandbox.set_tags(doc, ["final"])
        stamps.append(a.sandbox.document_json(doc)["updated_at"])
        assert stamps == sorted(set(stamps))
        assert a.sandbox.document_json(doc)["created_at"] == iso_timestamp(START)
        status, data, headers = await a.get(f"/download/{doc}", await a.token())
        assert (status, data) == (200, b"v2")
        assert headers["Content-Disposition"] == 'attachment; filename="Q3 report.pdf"'


async def test_removed_document_disappears_and_its_signed_url_stops_working() -> None:
    """remove_document drops it from listing and details, and the stored blob goes too."""
    async with api() as a:
        collection, doc = add_report(a.sandbox)
        token = await a.token()
        url = (await a.post("/download", {"document_id": doc}, token))[1]["data"]["download_url"]
        a.sandbox.remove_document(doc)
        _, body = await a.post("/get-documents", {"collection_id": collection}, token)
        assert body["data"] == []
        assert (await a.post("/get-document-details", {"document_id": doc}, token))[0] == 437
        async with a.http.get(url) as resp:
            assert resp.status == 404


def test_populate_demo_is_deterministic_and_varied() -> None:
    """Same seed, same past-dated documents; two collections; URL-based and extensionless ones."""

    def build(seed: int) -> list[dict[str, Any]]:
        sandbox = IndexHealthSandbox(StorageHost(clock=FakeClock()), clock=FakeClock(), **RICH)
        return [sandbox.document_json(d) for d in sandbox.populate_demo(seed=seed)]

    docs = build(0)
    assert docs == build(0)
    assert docs != build(1)
    assert 24 <= len(docs) <= 60
    assert len({d["collection_id"] for d in docs}) == 2
    url_based = [d for d in docs if "document_file_path" not in d]
    assert url_based
    assert all("document_url" in d for d in url_based)
    assert any("." not in d["document_name"] and "document_file_path" in d for d in docs)
    assert all(d["created_at"] <= d["updated_at"] <= iso_timestamp(START) for d in docs)


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=9-3", None),
    ],
)
def test_parse_byte_range(header: str, expected: tuple[int, int] | None) -> None:
    """Single ranges are clamped to the size; malformed or multi-range headers are ignored."""
    assert parse_byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0", "bytes=100-200"])
def test_parse_byte_range_unsatisfiable(header: str) -> None:
    """A range starting at or past the end (or an empty suffix) is a 416."""
    with pytest.raises(UnsatisfiableRangeError):
        parse_byte_range(header, 100)


@given(size=st.integers(1, 10_000), first=st.integers(0, 20_000), length=st.integers(1, 20_000))
def test_parse_byte_range_stays_inside_the_body(size: int, first: int, length: int) -> None:
    """Any satisfiable range selects positions inside the body, starting where asked."""
    try:
        selected = parse_byte_range(f"bytes={first}-{first + length - 1}", size)
    except UnsatisfiableRangeError:
        assert first >= size
        return
    assert selected is not None
    assert selected[0] == first
    assert first <= selected[1] < size


def test_content_disposition_escapes_quotes_and_encodes_non_ascii() -> None:
    """Quotes are escaped and a non-ASCII name also gets an RFC 5987 filename*."""
    assert content_disposition('a "b".pdf') == 'attachment; filename="a \\"b\\".pdf"'
    value = content_disposition("Bericht Ü.pdf")
    assert value == "attachment; filename=\"Bericht _.pdf\"; filename*=UTF-8''Bericht%20%C3%9C.pdf"
