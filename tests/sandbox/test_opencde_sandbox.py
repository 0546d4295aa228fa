"""The OpenCDE sandbox behaves as the Documents API 1.0 and Foundation API documents say."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from agent.sandbox.opencde import RICH, OpenCdeSandbox
from agent.sandbox.server import serve
from agent.sandbox.storage import StorageHost


def _basic(client_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


BASIC = _basic("demo-client", "demo-secret")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    sandbox: OpenCdeSandbox
    storage: StorageHost
    base: str
    http: aiohttp.ClientSession
    clock: Clock
    callbacks: list[dict[str, str]] = field(default_factory=list)
    callback_url: str = ""

    @property
    def api(self) -> str:
        return f"{self.base}/documents/1.0"

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sandbox.issue_tokens().access_token}"}


@pytest.fixture
def sandbox_options() -> dict[str, Any]:
    """Knobs on top of RICH; `{"minimal": True, ...}` starts from the defaults instead."""
    return {}


@pytest.fixture
async def env(sandbox_options: dict[str, Any]) -> AsyncIterator[Env]:
    clock = Clock()
    storage = StorageHost()
    options = {k: v for k, v in sandbox_options.items() if k != "minimal"}
    knobs = options if sandbox_options.get("minimal") else {**RICH, **options}
    sandbox = OpenCdeSandbox(storage, clock=clock, **knobs)
    callbacks: list[dict[str, str]] = []

    async def callback(request: web.Request) -> web.Response:
        callbacks.append(dict(request.query))
        return web.Response(text="You can close this window.")

    callback_app = web.Application()
    callback_app.router.add_get("/callback", callback)
    async with (
        storage.running(),
        sandbox.running() as base,
        serve(callback_app) as callback_base,
        aiohttp.ClientSession() as http,
    ):
        yield Env(sandbox, storage, base, http, clock, callbacks, f"{callback_base}/callback")


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


async def _sign_in(env: Env, state: str = "xyz") -> str:
    """Run the authorization-code redirect and return the code."""
    async with env.http.get(f"{env.base}/foundation/1.0/auth") as r:
        auth_url = (await r.json())["oauth2_auth_url"]
    params = {"response_type": "code", "client_id": "demo-client", "state": state}
    params["redirect_url"] = env.callback_url
    async with env.http.get(auth_url, params=params, allow_redirects=False) as r:
        assert r.status == 302
        location = URL(r.headers["Location"])
    assert str(location.with_query(None)) == env.callback_url
    assert location.query["state"] == state
    return location.query["code"]


async def _token(env: Env, form: dict[str, str]) -> aiohttp.ClientResponse:
    return await env.http.post(f"{env.base}/oauth/token", data=form, headers=BASIC)


async def _start_selection(env: Env, **extra: Any) -> str:
    body = {"callback": {"url": env.callback_url, "expires_in": 3600}, **extra}
    async with env.http.post(f"{env.api}/select-documents", json=body, headers=env.bearer()) as r:
        assert r.status == 200
        reply = await r.json()
    assert reply["expires_in"] == 60
    assert reply["select_documents_url"].startswith(f"{env.base}/ui/select/")
    return str(reply["select_documents_url"])


# ---- discovery and OAuth ---------------------------------------------------------------


async def test_discovery_points_at_documents_api_and_authorization_code_auth(env: Env) -> None:
    async with env.http.get(f"{env.base}/foundation/versions") as r:
        versions = (await r.json())["versions"]
    by_id = {v["api_id"]: v for v in versions}
    assert by_id["documents"]["version_id"] == "1.0"
    assert by_id["documents"]["api_base_url"] == env.api
    assert "foundation" in by_id
    async with env.http.get(f"{env.base}/foundation/1.0/auth") as r:
        auth = await r.json()
    assert auth["supported_oauth2_flows"] == ["authorization_code_grant"]
    assert auth["http_basic_supported"] is False
    assert auth["oauth2_token_url"] == f"{env.base}/oauth/token"
    assert auth["oauth2_auth_url"].startswith(env.base)
    assert auth["oauth2_dynamic_client_reg_url"].startswith(env.base)


async def test_authorization_code_flow_round_trips_state_and_issues_a_working_token(
    env: Env,
) -> None:
    code = await _sign_in(env, state="opaque-123")
    async with await _token(env, {"grant_type": "authorization_code", "code": code}) as r:
        assert r.status == 200
        grant = await r.json()
    assert grant["token_type"] == "bearer"
    assert grant["expires_in"] == 3600
    assert grant["refresh_token"] in env.sandbox.issued_refresh_tokens
    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    async with env.http.get(f"{env.base}/foundation/1.0/current-user", headers=headers) as r:
        assert r.status == 200
    async with await _token(env, {"grant_type": "authorization_code", "code": code}) as r:
        assert r.status == 400  # codes are single-use
        assert (await r.json())["error"] == "invalid_grant"


@pytest.mark.parametrize("sandbox_options", [{"token_status": 201, "expires_in_as_string": True}])
async def test_token_endpoint_can_answer_201_with_expires_in_as_a_string(env: Env) -> None:
    code = await _sign_in(env)
    async with await _token(env, {"grant_type": "authorization_code", "code": code}) as r:
        assert r.status == 201
        assert (await r.json())["expires_in"] == "3600"


async def test_authorize_accepts_redirect_uri_and_rejects_unknown_clients(env: Env) -> None:
    auth_url = f"{env.base}/oauth/authorize"
    params = {"response_type": "code", "client_id": "demo-client", "state": "s"}
    params["redirect_uri"] = env.callback_url
    async with env.http.get(auth_url, params=params, allow_redirects=False) as r:
        assert r.status == 302
        assert "code" in URL(r.headers["Location"]).query
    params["client_id"] = "stranger"
    async with env.http.get(auth_url, params=params, allow_redirects=False) as r:
        assert r.status == 400
        assert "text/html" in r.headers["Content-Type"]


async def test_token_endpoint_refuses_bad_client_credentials_with_401(env: Env) -> None:
    code = await _sign_in(env)
    form = {"grant_type": "authorization_code", "code": code}
    bad = _basic("demo-client", "wrong")
    async with env.http.post(f"{env.base}/oauth/token", data=form, headers=bad) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"
    form = {"grant_type": "client_credentials"}
    async with await _token(env, form) as r:
        assert (await r.json())["error"] == "unsupported_grant_type"


async def test_refresh_tokens_rotate_and_a_reused_one_is_refused_and_recorded(env: Env) -> None:
    first = env.sandbox.issue_tokens().refresh_token
    async with await _token(env, {"grant_type": "refresh_token", "refresh_token": first}) as r:
        assert r.status == 200
        second = (await r.json())["refresh_token"]
    assert second != first
    async with await _token(env, {"grant_type": "refresh_token", "refresh_token": first}) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "invalid_grant"
    assert env.sandbox.reused_refresh_tokens == [first]
    env.sandbox.revoke_refresh_tokens()
    async with await _token(env, {"grant_type": "refresh_token", "refresh_token": second}) as r:
        assert r.status == 400
    assert env.sandbox.reused_refresh_tokens == [first]  # revoked is not "reused"


async def test_api_answers_401_with_message_without_a_valid_bearer_token(env: Env) -> None:
    url = f"{env.api}/document-versions"
    async with env.http.post(url, json={"document_ids": []}) as r:
        assert r.status == 401
        assert "message" in await r.json()
    headers = env.bearer()
    async with env.http.post(url, json={"document_ids": []}, headers=headers) as r:
        assert r.status == 200
    env.sandbox.expire_all_tokens()
    async with env.http.post(url, json={"document_ids": []}, headers=headers) as r:
        assert r.status == 401
        assert (await r.json())["message"] == "access token expired"


async def test_access_tokens_expire_after_their_lifetime_on_the_injected_clock(env: Env) -> None:
    headers = env.bearer()
    env.clock.now += 3601
    async with env.http.get(f"{env.base}/foundation/1.0/current-user", headers=headers) as r:
        assert r.status == 401


async def test_dynamic_client_registration_yields_a_client_that_can_sign_in(env: Env) -> None:
    body = {"client_name": "Sync Agent", "redirect_url": env.callback_url, "extra": 1}
    async with env.http.post(f"{env.base}/oauth/register", json=body) as r:
        assert r.status == 201
        client = await r.json()
    params = {"response_type": "code", "client_id": client["client_id"]}
    params["redirect_url"] = env.callback_url
    auth_url = f"{env.base}/oauth/authorize"
    async with env.http.get(auth_url, params=params, allow_redirects=False) as r:
        code = URL(r.headers["Location"]).query["code"]
    auth = _basic(client["client_id"], client["client_secret"])
    form = {"grant_type": "authorization_code", "code": code}
    async with env.http.post(f"{env.base}/oauth/token", data=form, headers=auth) as r:
        assert r.status == 200


# ---- selection -------------------------------------------------------------------------


async def test_select_documents_requires_a_callback_and_ignores_unknown_properties(
    env: Env,
) -> None:
    url = f"{env.api}/select-documents"
    async with env.http.post(url, json={"server_context": None}, headers=env.bearer()) as r:
        assert r.status == 400
        assert "callback" in (await r.json())["message"]
    body = {"callback": {"url": env.callback_url, "expires_in": 60}, "future_field": [1]}
    async with env.http.post(url, json=body, headers=env.bearer()) as r:
        assert r.status == 200


async def test_auto_select_sends_the_browser_to_the_callback_with_a_selection_url(
    env: Env,
) -> None:
    kept = env.sandbox.add_document("Model", "model.ifc", b"IFC v1")
    env.sandbox.publish_version(kept, b"IFC v2")
    env.sandbox.add_document("Other", "other.pdf", b"PDF")
    env.sandbox.auto_select = [kept]
    select_url = await _start_selection(env, server_context="ctx-42")
    async with env.http.get(select_url) as r:  # follows the redirect like a browser
        assert r.status == 200
    (query,) = env.callbacks
    selected_url = query["selected_documents_url"]
    assert selected_url.startswith(f"{env.api}/selections/")
    async with env.http.get(selected_url, headers=env.bearer()) as r:
        selection = await r.json()
    assert selection["server_context"] == "ctx-42"
    (document,) = selection["documents"]
    assert document["document_id"] == kept
    assert document["version_index"] == 3
    assert document["version_number"] == "v2.0"
    assert document["file_description"] == {"name": "model.ifc", "size_in_bytes": 6}
    async with env.http.get(select_url, allow_redirects=False) as r:
        assert r.status == 410  # a selection session is used once


async def test_selection_url_requires_a_bearer_token(env: Env) -> None:
    env.sandbox.auto_select = [env.sandbox.add_document("A", "a.txt", b"a")]
    async with env.http.get(await _start_selection(env)) as r:
        assert r.status == 200
    async with env.http.get(env.callbacks[0]["selected_documents_url"]) as r:
        assert r.status == 401


@pytest.mark.parametrize("sandbox_options", [{"callback_param": "selected_url"}])
async def test_callback_parameter_can_use_the_seeds_older_name(env: Env) -> None:
    env.sandbox.auto_select = [env.sandbox.add_document("A", "a.txt", b"a")]
    async with env.http.get(await _start_selection(env)) as r:
        assert r.status == 200
    assert set(env.callbacks[0]) == {"selected_url"}


async def test_auto_cancel_sends_user_cancelled_selection_and_no_url(env: Env) -> None:
    env.sandbox.add_document("A", "a.txt", b"a")
    env.sandbox.auto_cancel = True
    async with env.http.get(await _start_selection(env)) as r:
        assert r.status == 200
    assert env.callbacks == [{"user_cancelled_selection": "true"}]


async def test_selection_page_has_checkboxes_and_buttons_with_stable_ids(env: Env) -> None:
    first = env.sandbox.add_document("Model <A>", "model.ifc", b"x")
    second = env.sandbox.add_document("Report", "report.pdf", b"y")
    async with env.http.get(await _start_selection(env)) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/html")
        page = await r.text()
    for doc_id in (first, second):
        checkbox = f'<input type="checkbox" name="document_id" value="{doc_id}" id="doc-{doc_id}">'
        assert checkbox in page
    assert re.search(r'<button type="submit" id="select-button"[^>]*>Select</button>', page)
    assert re.search(r'<button type="submit" id="cancel-button"[^>]*>Cancel</button>', page)
    assert "Model &lt;A&gt;" in page  # titles are escaped
    assert not env.callbacks


async def test_selection_page_lists_only_supported_file_extensions(env: Env) -> None:
    ifc = env.sandbox.add_document("Model", "model.IFC", b"x")
    pdf = env.sandbox.add_document("Report", "report.pdf", b"y")
    select_url = await _start_selection(env, supported_file_extensions=[".ifc", ".ifczip"])
    async with env.http.get(select_url) as r:
        page = await r.text()
    assert f'id="doc-{ifc}"' in page
    assert f'id="doc-{pdf}"' not in page


async def test_submitting_the_form_selects_the_checked_documents(env: Env) -> None:
    first = env.sandbox.add_document("A", "a.txt", b"a")
    second = env.sandbox.add_document("B", "b.txt", b"b")
    submit = (await _start_selection(env)) + "/submit"
    async with env.http.post(submit, data={"action": "select"}, allow_redirects=False) as r:
        assert r.status == 400  # nothing checked: the page comes back with a notice
        assert 'role="alert"' in await r.text()
    form = aiohttp.FormData([("document_id", second), ("document_id", first)])
    form.add_field("action", "select")
    async with env.http.post(submit, data=form) as r:
        assert r.status == 200
    async with env.http.get(env.callbacks[0]["selected_documents_url"], headers=env.bearer()) as r:
        ids = [d["document_id"] for d in (await r.json())["documents"]]
    assert ids == [second, first]


async def test_cancel_button_sends_user_cancelled_selection(env: Env) -> None:
    submit = (await _start_selection(env)) + "/submit"
    async with env.http.get(submit, params={"action": "cancel"}) as r:
        assert r.status == 200
    assert env.callbacks == [{"user_cancelled_selection": "true"}]


async def test_select_documents_url_expires_after_60_seconds(env: Env) -> None:
    select_url = await _start_selection(env)
    env.clock.now += 61
    async with env.http.get(select_url) as r:
        assert r.status == 410
    assert not env.callbacks


# ---- documents -------------------------------------------------------------------------


async def test_published_versions_get_increasing_indexes_with_gaps(env: Env) -> None:
    doc_id = env.sandbox.add_document("A", "a.txt", b"1")
    indexes = [env.sandbox.publish_version(doc_id, bytes([i])) for i in range(4)]
    assert indexes == [3, 4, 6, 7]


async def test_document_versions_lists_shuffled_versions_and_honours_if_none_match(
    env: Env,
) -> None:
    doc_id = env.sandbox.add_document("A", "a.txt", b"1")
    for data in (b"2", b"3", b"4"):
        env.sandbox.publish_version(doc_id, data)
    url, body, headers = f"{env.api}/document-versions", {"document_ids": [doc_id]}, env.bearer()
    async with env.http.post(url, json=body, headers=headers) as r:
        assert r.status == 200
        etag = r.headers["ETag"]
        versions = (await r.json())["versions"]
    indexes = [v["version_index"] for v in versions]
    assert sorted(indexes) == [1, 3, 4, 6]
    assert indexes[-1] != 6  # "keep the last one seen" would be wrong
    assert re.fullmatch(r'"[0-9a-f]+"', etag)  # strong
    async with env.http.post(url, json=body, headers=headers | {"If-None-Match": etag}) as r:
        assert r.status == 304
        assert r.headers["ETag"] == etag
    env.sandbox.publish_version(doc_id, b"5")
    async with env.http.post(url, json=body, headers=headers | {"If-None-Match": etag}) as r:
        assert r.status == 200
        assert r.headers["ETag"] != etag
    assert env.sandbox.versions_calls == 3


async def test_document_versions_order_is_deterministic_and_skips_unknown_ids(env: Env) -> None:
    ids = env.sandbox.populate_demo(40, seed=3)
    url, body = f"{env.api}/document-versions", {"document_ids": [*ids, "gone"]}
    replies = []
    for _ in range(2):
        async with env.http.post(url, json=body, headers=env.bearer()) as r:
            replies.append(await r.json())
    assert replies[0] == replies[1]
    assert {v["document_id"] for v in replies[0]["versions"]} == set(ids)
    seen: dict[str, list[int]] = {}
    for version in replies[0]["versions"]:
        seen.setdefault(version["document_id"], []).append(version["version_index"])
    multi = [indexes for indexes in seen.values() if len(indexes) > 1]
    assert len(multi) >= 3
    assert all(indexes[-1] != max(indexes) for indexes in multi)  # newest is never last


async def test_document_version_links_are_absolute_and_served(env: Env) -> None:
    doc_id = env.sandbox.add_document("Plan", "plan.pdf", b"%PDF-1.7")
    env.sandbox.publish_version(doc_id, b"%PDF-1.7 v2", name="plan-rev-b.pdf")
    headers = env.bearer()
    async with env.http.get(f"{env.api}/documents/{doc_id}/versions", headers=headers) as r:
        listed = (await r.json())["documents"]
    assert [v["version_index"] for v in listed] == [3, 1]
    latest = listed[0]
    assert latest["file_description"]["name"] == "plan-rev-b.pdf"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", latest["creation_date"])
    links = {name: link["url"] for name, link in latest["links"].items()}
    assert all(url.startswith(env.base) for url in links.values())
    async with env.http.get(links["document_version"], headers=headers) as r:
        assert await r.json() == latest
    async with env.http.get(links["document_version_metadata"], headers=headers) as r:
        metadata = (await r.json())["metadata"]
    assert {"name": "Title", "value": ["Plan"], "data_type": "string"} in metadata
    async with env.http.get(links["document_versions"], headers=headers) as r:
        assert (await r.json())["documents"] == listed
    async with env.http.get(links["document_details"]) as r:
        assert "plan-rev-b.pdf" in await r.text()


@pytest.mark.parametrize("sandbox_options", [{"redirect_status": 302}, {"redirect_status": 303}])
async def test_download_redirects_to_a_signed_storage_url(
    env: Env, sandbox_options: dict[str, Any]
) -> None:
    doc_id = env.sandbox.add_document("A", "a.ifc", b"ISO-10303-21;")
    url = f"{env.api}/documents/{doc_id}/versions/1/download"
    async with env.http.get(url, headers=env.bearer(), allow_redirects=False) as r:
        assert r.status == sandbox_options["redirect_status"]
        location = r.headers["Location"]
    assert location.startswith(env.storage.base_url)
    async with env.http.get(location) as r:  # no Authorization, as a client must do
        assert r.status == 200
        assert await r.read() == b"ISO-10303-21;"
    assert env.storage.authorization_seen == []


@pytest.mark.parametrize("sandbox_options", [{"direct_download": True}])
async def test_direct_download_serves_the_bytes_with_ranges(env: Env) -> None:
    doc_id = env.sandbox.add_document("A", "a.txt", b"0123456789")
    url, headers = f"{env.api}/documents/{doc_id}/versions/1/download", env.bearer()
    async with env.http.get(url, headers=headers) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == "10"
        etag = r.headers["ETag"]
        assert await r.read() == b"0123456789"
    ranged = headers | {"Range": "bytes=4-", "If-Range": etag}
    async with env.http.get(url, headers=ranged) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == "bytes 4-9/10"
        assert await r.read() == b"456789"
    async with env.http.get(url, headers=ranged | {"If-Range": '"stale"'}) as r:
        assert r.status == 200
    async with env.http.get(url, headers=headers | {"Range": "bytes=10-"}) as r:
        assert r.status == 416
    assert env.storage.log.records == []


async def test_unknown_document_and_version_answer_404_with_message(env: Env) -> None:
    doc_id = env.sandbox.add_document("A", "a.txt", b"a")
    headers = env.bearer()
    for path in ("missing/versions/1/download", f"{doc_id}/versions/2/download"):
        async with env.http.get(f"{env.api}/documents/{path}", headers=headers) as r:
            assert r.status == 404
            assert "message" in await r.json()
    env.sandbox.remove_document(doc_id)
    async with env.http.get(f"{env.api}/documents/{doc_id}/versions/1", headers=headers) as r:
        assert r.status == 404


async def test_fault_plan_and_request_log_wrap_the_api(env: Env) -> None:
    env.sandbox.faults.add("/documents/1.0/document-versions", 503, body={"message": "busy"})
    url = f"{env.api}/document-versions"
    async with env.http.post(url, json={"document_ids": []}, headers=env.bearer()) as r:
        assert r.status == 503
    async with env.http.post(url, json={"document_ids": []}, headers=env.bearer()) as r:
        assert r.status == 200
    recorded = env.sandbox.log.matching(method="POST", path_prefix="/documents/1.0/")
    assert len(recorded) == 2
    assert recorded[0].headers["authorization"].startswith("Bearer ")


# ---- demo data -------------------------------------------------------------------------


def test_populate_demo_is_deterministic_and_downloadable_content_is_stable() -> None:
    one, two = OpenCdeSandbox(StorageHost()), OpenCdeSandbox(StorageHost())
    assert one.populate_demo(30, seed=7) == two.populate_demo(30, seed=7)
    doc = next(iter(one.documents))
    other = two.documents.require(doc.document_id)
    assert doc.latest.content(doc.document_id) == other.latest.content(doc.document_id)
    assert len(doc.latest.content(doc.document_id)) == doc.latest.size
    assert any(len(d.versions) > 1 for d in one.documents)
    assert OpenCdeSandbox(StorageHost()).populate_demo(30, seed=8) != one.populate_demo(30, 9)


def test_populate_demo_scales_to_100k_listing_only_documents() -> None:
    sandbox = OpenCdeSandbox(StorageHost())
    ids = sandbox.populate_demo(100_000, seed=1)  # its speed is the benchmarks' business
    assert len(set(ids)) == 100_000
    assert all(v.data is None for v in sandbox.documents.require(ids[-1]).versions)


# ---- the least readings, the defaults ---------------------------------------------------

MINIMAL = {"minimal": True}


@pytest.mark.parametrize("sandbox_options", [MINIMAL])
async def test_by_default_tokens_are_201_with_a_string_lifetime_and_redirect_uri_is_ignored(
    env: Env,
) -> None:
    code = await _sign_in(env)
    async with await _token(env, {"grant_type": "authorization_code", "code": code}) as r:
        assert r.status == 201
        grant = await r.json()
    assert grant["expires_in"] == "3600"
    assert grant["x_vendor_extension"]  # properties a client must ignore
    params = {"response_type": "code", "client_id": "demo-client", "state": "s"}
    params["redirect_uri"] = env.callback_url  # RFC 6749's name, not the spec's
    async with env.http.get(f"{env.base}/oauth/authorize", params=params) as r:
        assert r.status == 400


@pytest.mark.parametrize("sandbox_options", [MINIMAL])
async def test_by_default_the_callback_says_selected_url_and_versions_are_lean(env: Env) -> None:
    doc_id = env.sandbox.add_document("Plan", "plan.pdf", b"%PDF-1.7")
    env.sandbox.auto_select = [doc_id]
    async with env.http.get(await _start_selection(env)) as r:
        assert r.status == 200
    (query,) = env.callbacks
    async with env.http.get(query["selected_url"], headers=env.bearer()) as r:
        (version,) = (await r.json())["documents"]
    assert "document_details" not in version["links"]
    assert set(version["links"]) >= {"document_version_download", "x_vendor_extension"}
    assert version["creation_date"].endswith("+01:00")
    async with env.http.get(
        version["links"]["document_version_download"]["url"],
        headers=env.bearer(),
        allow_redirects=False,
    ) as r:
        assert r.status == 303
