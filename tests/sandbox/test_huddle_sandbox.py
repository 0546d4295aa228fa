"""The Huddle sandbox answers as the Huddle documentation (seed 002, API-NOTES 3) says."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest
from huddle_kit import HUDDLE_JSON, START, TEXT, Api, href, huddle, link
from hypothesis import given
from hypothesis import strategies as st

from agent.sandbox.huddle import HuddleSandbox
from agent.sandbox.huddle_http import parse_range, requested_type, valid_download_reason
from agent.sandbox.storage import StorageHost

# -- tokens -------------------------------------------------------------------------------------


async def test_refresh_rotates_tokens_and_records_reuse() -> None:
    """Each refresh returns a new refresh token; spending an old one is 400 and recorded."""
    async with huddle() as api:
        form = {"grant_type": "refresh_token", "client_id": "demo-client"}
        first = await api.token_post({**form, "refresh_token": "demo-refresh-0"})
        assert first.status == 200
        pair = first.json()
        assert set(pair) == {"access_token", "expires_in", "refresh_token"}
        assert pair["expires_in"] == 1200
        assert pair["refresh_token"] != "demo-refresh-0"
        api.token = pair["access_token"]
        assert (await api.get("/entry")).status == 303
        assert api.sandbox.reused_refresh_tokens == []

        again = await api.token_post({**form, "refresh_token": "demo-refresh-0"})
        assert again.status == 400
        assert again.json() == {"error": "invalid_grant"}
        assert api.sandbox.reused_refresh_tokens == ["demo-refresh-0"]
        assert api.sandbox.issued_refresh_tokens == ["demo-refresh-0", pair["refresh_token"]]

        second = await api.token_post({**form, "refresh_token": pair["refresh_token"]})
        assert second.status == 200
        assert second.json()["refresh_token"] not in api.sandbox.issued_refresh_tokens[:2]


async def test_revoked_refresh_tokens_are_invalid_grant_but_not_reuse() -> None:
    """After revoke_refresh_tokens every outstanding refresh token gets invalid_grant."""
    async with huddle() as api:
        api.sandbox.revoke_refresh_tokens()
        reply = await api.token_post(
            {
                "grant_type": "refresh_token",
                "client_id": "demo-client",
                "refresh_token": "demo-refresh-0",
            }
        )
        assert reply.status == 400
        assert reply.json()["error"] == "invalid_grant"
        assert api.sandbox.reused_refresh_tokens == []


async def test_token_endpoint_checks_the_client() -> None:
    """A wrong client id, or a missing secret when one is configured, is invalid_client."""
    async with huddle(client_secret="s3cret") as api:
        base = {"grant_type": "refresh_token", "refresh_token": "demo-refresh-0"}
        wrong = await api.token_post({**base, "client_id": "other"})
        no_secret = await api.token_post({**base, "client_id": "demo-client"})
        assert (wrong.status, no_secret.status) == (401, 401)
        assert wrong.json() == {"error": "invalid_client"}
        ok = await api.token_post({**base, "client_id": "demo-client", "client_secret": "s3cret"})
        assert ok.status == 200


@pytest.mark.parametrize("status", [401, 403])
async def test_expired_token_gets_the_configured_status(status: int) -> None:
    """An access token past its 20 minutes is refused with 401 (new docs) or 403 (old docs)."""
    async with huddle(expired_status=status) as api:
        assert (await api.get("/entry")).status == 303
        api.clock.now += 1201
        assert (await api.get("/entry")).status == status
        api.token = api.sandbox.issue_access_token()
        assert (await api.get("/entry")).status == 303
        api.sandbox.expire_all_tokens()
        assert (await api.get("/entry")).status == status


async def test_both_auth_schemes_are_accepted_unless_one_is_required() -> None:
    """`Bearer` and `OAuth2` both work by default; auth_scheme pins one."""
    async with huddle() as api:
        assert (await api.get("/entry", auth="OAuth2")).status == 303
        assert (await api.get("/entry", auth="Bearer")).status == 303
        assert (await api.get("/entry", auth="Basic")).status == 401
    async with huddle(auth_scheme="OAuth2") as api:
        assert (await api.get("/entry", auth="OAuth2")).status == 303
        assert (await api.get("/entry", auth="Bearer")).status == 401


# -- navigation -----------------------------------------------------------------------------------


async def test_entry_leads_to_workspace_root_folder() -> None:
    """/entry redirects (303) to the user, whose workspaces link their root folder."""
    async with huddle() as api:
        ws = api.sandbox.add_workspace("Site A")
        root_id = api.sandbox.root_folder_id(ws)
        api.sandbox.add_folder(root_id, "Plans")
        entry = await api.get("/entry")
        assert entry.status == 303
        user = await api.get(entry.headers["Location"])
        assert user.headers["Content-Type"].startswith(HUDDLE_JSON)
        workspace = user.json()["membership"]["workspaces"][0]
        assert workspace["title"] == "Site A"
        root = await api.get(href(workspace, "documentLibrary"))
        assert root.status == 200
        body = root.json()
        assert href(body, "self") == f"{api.base}/files/folders/{root_id}"
        assert [f["title"] for f in body["folders"]] == ["Plans"]


async def test_folder_lists_children_with_absolute_links() -> None:
    """A folder shows its child folders and documents inline and links parent and collection."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        folder = api.sandbox.add_folder(root, "Plans", description="floor plans")
        api.sandbox.add_folder(folder, "Old")
        api.sandbox.add_document(folder, "a.txt", b"a", mime="text/plain")
        body = (await api.get(f"/files/folders/{folder}")).json()
        assert body["title"] == "Plans"
        assert body["description"] == "floor plans"
        assert href(body, "parent") == f"{api.base}/files/folders/{root}"
        assert href(body, "collection") == f"{api.base}/files/pagedfolders/{folder}"
        assert [f["title"] for f in body["folders"]] == ["Old"]
        assert [d["title"] for d in body["documents"]] == ["a.txt"]
        assert all(lk["href"].startswith("http://127.0.0.1:") for lk in body["links"])


async def test_deleted_folder_and_its_contents_are_gone() -> None:
    """delete_folder makes the folder, its subfolders and their documents answer 410."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        folder = api.sandbox.add_folder(root, "Old")
        child = api.sandbox.add_folder(folder, "Older")
        doc = api.sandbox.add_document(child, "x.txt", b"x")
        api.sandbox.delete_folder(folder)
        assert (await api.get(f"/files/folders/{folder}")).status == 410
        assert (await api.get(f"/files/pagedfolders/{folder}")).status == 410
        assert (await api.get(f"/files/folders/{child}")).status == 410
        assert (await api.get(f"/files/documents/{doc}")).status == 410
        assert (await api.get(f"/files/documents/{doc}/content")).status == 410
        assert (await api.get("/files/folders/999999")).status == 404
        assert (await api.get(f"/files/folders/{root}")).json()["folders"] == []


async def test_locked_folder_is_423() -> None:
    """A locked folder answers 423 Locked until unlocked."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        api.sandbox.set_locked(root)
        assert (await api.get(f"/files/folders/{root}")).status == 423
        api.sandbox.set_locked(root, False)
        assert (await api.get(f"/files/folders/{root}")).status == 200


# -- paging ---------------------------------------------------------------------------------------


async def collect_pages(api: Api, url: str) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        reply = await api.get(next_url)
        assert reply.status == 200
        page = reply.json()
        items.extend(page["items"])
        pages += 1
        found = link(page, "next")
        next_url = found["href"] if found else None
    return items, pages


async def test_paging_over_250_items_by_following_next() -> None:
    """Following `next` visits every item once, folders first; size above 250 is clamped."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        folder = api.sandbox.add_folder(root, "Big")
        ids = api.sandbox.populate_bulk(folder, 300)
        api.sandbox.add_folder(folder, "Sub")
        items, pages = await collect_pages(api, f"/files/pagedfolders/{folder}?size=1000")
        assert pages == 2
        assert len(items) == 301
        assert items[0]["type"] == "folder"
        docs = [i for i in items if i["type"] == "document"]
        assert [href(d, "self").rsplit("/", 1)[1] for d in docs] == ids
        default_items, default_pages = await collect_pages(api, f"/files/pagedfolders/{folder}")
        assert (len(default_items), default_pages) == (301, 7)


async def test_paged_items_carry_full_document_fields() -> None:
    """Document items in a page have the document's fields and its content link."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        api.sandbox.add_document(root, "r.pdf", b"%PDF", mime="application/pdf")
        page = (await api.get(f"/files/pagedfolders/{root}")).json()
        (item,) = page["items"]
        assert item["type"] == "document"
        assert {"size", "version", "mimeType", "updated", "extension"} <= set(item)
        content = link(item, "content")
        assert content is not None
        assert content["type"] == "application/pdf"
        assert link(page, "next") is None
        assert link(page, "prev") is None


async def test_prev_link_returns_the_previous_page() -> None:
    """The `prev` link of the second page gives the first page's items again."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        api.sandbox.populate_bulk(root, 7)
        first = (await api.get(f"/files/pagedfolders/{root}?size=3")).json()
        second = (await api.get(href(first, "next"))).json()
        back = (await api.get(href(second, "prev"))).json()
        assert [i["title"] for i in back["items"]] == [i["title"] for i in first["items"]]
        assert link(back, "prev") is None


async def test_paging_rejects_bad_size_and_foreign_keys() -> None:
    """A size below 1 or a key the server did not make is 400."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        assert (await api.get(f"/files/pagedfolders/{root}?size=0")).status == 400
        assert (await api.get(f"/files/pagedfolders/{root}?size=ten")).status == 400
        assert (await api.get(f"/files/pagedfolders/{root}?key=1234")).status == 400


# -- subtree change detection ---------------------------------------------------------------------


async def test_if_modified_since_skips_unchanged_subtree_until_a_nested_change() -> None:
    """304 while nothing below changed; 200 with a later Last-Modified after a deep update."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        a = api.sandbox.add_folder(root, "A")
        deep = api.sandbox.add_folder(api.sandbox.add_folder(a, "A1"), "A2")
        b = api.sandbox.add_folder(root, "B")
        doc = api.sandbox.add_document(deep, "d.txt", b"one")
        api.clock.now += 60
        first = await api.get(f"/files/folders/{root}")
        stamp = first.headers["Last-Modified"]
        for url in (f"/files/folders/{root}", f"/files/pagedfolders/{root}"):
            assert (await api.get(url, {"If-Modified-Since": stamp})).status == 304
        b_stamp = (await api.get(f"/files/folders/{b}")).headers["Last-Modified"]
        api.clock.now += 60
        api.sandbox.update_document(doc, b"two")
        after = await api.get(f"/files/folders/{root}", {"If-Modified-Since": stamp})
        assert after.status == 200
        assert after.headers["Last-Modified"] == formatdate(api.clock.now, usegmt=True)
        assert (await api.get(f"/files/folders/{a}", {"If-Modified-Since": stamp})).status == 200
        assert (await api.get(f"/files/folders/{b}", {"If-Modified-Since": b_stamp})).status == 304


async def test_change_in_an_already_seen_second_is_still_visible() -> None:
    """A change within the same second a client was shown moves Last-Modified forward."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        stamp = (await api.get(f"/files/folders/{root}")).headers["Last-Modified"]
        api.sandbox.add_document(root, "new.txt", b"new")
        assert (await api.get(f"/files/folders/{root}", {"If-Modified-Since": stamp})).status == 200


async def test_move_changes_both_folders() -> None:
    """Moving a document changes the subtree time of its old and its new folder."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        src, dst = api.sandbox.add_folder(root, "src"), api.sandbox.add_folder(root, "dst")
        doc = api.sandbox.add_document(src, "m.txt", b"m")
        stamps = {
            f: (await api.get(f"/files/folders/{f}")).headers["Last-Modified"] for f in (src, dst)
        }
        api.clock.now += 5
        api.sandbox.move_document(doc, dst)
        for folder, stamp in stamps.items():
            reply = await api.get(f"/files/folders/{folder}", {"If-Modified-Since": stamp})
            assert reply.status == 200
        assert (await api.get(f"/files/folders/{dst}")).json()["documents"][0]["title"] == "m.txt"
        parent = href((await api.get(f"/files/documents/{doc}")).json(), "parent")
        assert parent.endswith(f"/files/folders/{dst}")


# -- documents ------------------------------------------------------------------------------------


async def test_document_fields_and_version_bump() -> None:
    """A document shows its fields; update_document bumps version, size and updated."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        doc = api.sandbox.add_document(root, "Report.docx", b"v1", mime="application/msword")
        body = (await api.get(f"/files/documents/{doc}")).json()
        assert body["version"] == 1
        assert body["size"] == 2
        assert body["extension"] == "docx"
        assert body["mimeType"] == "application/msword"
        assert body["created"] == "2025-06-15T15:06:40Z"
        content = link(body, "content")
        assert content == {
            "rel": "content",
            "href": f"{api.base}/files/documents/{doc}/content",
            "title": "Report.docx",
            "type": "application/msword",
        }
        assert link(body, "version-history") is not None
        api.clock.now += 10
        api.sandbox.update_document(doc, b"version two")
        newer = (await api.get(f"/files/documents/{doc}")).json()
        assert (newer["version"], newer["size"]) == (2, 11)
        assert newer["updated"] == "2025-06-15T15:06:50Z"


async def test_rfc1123_dates_option() -> None:
    """With rfc1123_dates the JSON dates use the RFC 1123 form."""
    async with huddle(rfc1123_dates=True) as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        doc = api.sandbox.add_document(root, "a.txt", b"a")
        body = (await api.get(f"/files/documents/{doc}")).json()
        assert body["updated"] == "Sun, 15 Jun 2025 15:06:40 GMT"


async def test_document_without_permission_has_no_content_link() -> None:
    """A non-downloadable document omits `content`, and its content URL is refused."""
    async with huddle() as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        doc = api.sandbox.add_document(root, "secret.txt", b"s", downloadable=False)
        body = (await api.get(f"/files/documents/{doc}")).json()
        assert link(body, "content") is None
        assert (await api.get(f"/files/documents/{doc}/content")).status == 403


# -- content --------------------------------------------------------------------------------------


async def make_doc(api: Api, **options: Any) -> str:
    root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
    return api.sandbox.add_document(root, "filename.txt", TEXT, mime="text/plain", **options)


async def test_content_full_body_and_headers() -> None:
    """With no Accept the original bytes come back with the documented headers."""
    async with huddle() as api:
        doc = await make_doc(api)
        reply = await api.get(f"/files/documents/{doc}/content")
        assert reply.status == 200
        assert reply.body == TEXT
        headers = reply.headers
        assert headers["Content-Type"] == "text/plain"
        assert headers["Content-Length"] == str(len(TEXT))
        assert headers["Content-Disposition"] == 'attachment; filename="filename.txt"'
        assert headers["Supported-Accept"] == "text/plain, application/pdf"
        assert headers["Vary"] == "Accept"
        assert headers["ETag"].startswith('"')
        assert headers["Last-Modified"] == formatdate(START, usegmt=True)


async def test_range_gives_206_and_if_range_guards_it() -> None:
    """`Range: bytes=N-` is 206 with Content-Range; a stale If-Range gets the whole body."""
    async with huddle() as api:
        doc = await make_doc(api)
        url = f"/files/documents/{doc}/content"
        etag = (await api.get(url)).headers["ETag"]
        part = await api.get(url, {"Range": "bytes=100-", "If-Range": etag})
        assert part.status == 206
        assert part.body == TEXT[100:]
        assert part.headers["Content-Range"] == f"bytes 100-{len(TEXT) - 1}/{len(TEXT)}"
        stale = await api.get(url, {"Range": "bytes=100-", "If-Range": '"old"'})
        assert (stale.status, stale.body) == (200, TEXT)
        api.clock.now += 1
        api.sandbox.update_document(doc, b"changed")
        changed = await api.get(url, {"Range": "bytes=2-", "If-Range": etag})
        assert (changed.status, changed.body) == (200, b"changed")


@pytest.mark.parametrize("header", ["bytes=abc-", "items=0-5", "bytes=0-5,10-20", "bytes=9-3"])
async def test_invalid_range_is_ignored(header: str) -> None:
    """A malformed or multi-range Range header gets the full body with 200."""
    async with huddle() as api:
        doc = await make_doc(api)
        reply = await api.get(f"/files/documents/{doc}/content", {"Range": header})
        assert (reply.status, reply.body) == (200, TEXT)


async def test_range_past_the_end_is_416() -> None:
    """A range starting at or past the end cannot be satisfied."""
    async with huddle() as api:
        doc = await make_doc(api)
        reply = await api.get(f"/files/documents/{doc}/content", {"Range": f"bytes={len(TEXT)}-"})
        assert reply.status == 416
        assert reply.headers["Content-Range"] == f"bytes */{len(TEXT)}"


async def test_conditional_content_requests_get_304() -> None:
    """A matching If-None-Match or a current If-Modified-Since answers 304."""
    async with huddle() as api:
        doc = await make_doc(api)
        url = f"/files/documents/{doc}/content"
        first = await api.get(url)
        assert (await api.get(url, {"If-None-Match": first.headers["ETag"]})).status == 304
        since = {"If-Modified-Since": first.headers["Last-Modified"]}
        assert (await api.get(url, since)).status == 304
        assert (await api.get(url, {"If-None-Match": '"nope"'})).status == 200


async def test_download_reason_is_validated_and_recorded() -> None:
    """Only documented x-download-reason values pass; every request's reason is recorded."""
    async with huddle() as api:
        doc = await make_doc(api)
        url = f"/files/documents/{doc}/content"
        assert (await api.get(url, {"x-download-reason": "offline-file"})).status == 200
        assert (await api.get(url, {"x-download-reason": "other/for the mirror"})).status == 200
        assert (await api.get(url, {"x-download-reason": "backup"})).status == 400
        assert (await api.get(url, {"x-download-reason": "other/" + "x" * 101})).status == 400
        assert (await api.get(url)).status == 200
        reasons = [reason for _, reason in api.sandbox.download_reasons]
        assert reasons == [
            "offline-file",
            "other/for the mirror",
            "backup",
            "other/" + "x" * 101,
            None,
        ]
        assert {doc_id for doc_id, _ in api.sandbox.download_reasons} == {doc}


@pytest.mark.parametrize("status", [204, 404])
async def test_document_without_content(status: int) -> None:
    """A document with no binary content answers 204 (old docs) or 404 (new docs)."""
    async with huddle(no_content_status=status) as api:
        doc = await make_doc(api, has_content=False)
        reply = await api.get(f"/files/documents/{doc}/content")
        assert reply.status == status


async def test_moving_document_is_409() -> None:
    """Downloading a document that is being moved is 409 Conflict."""
    async with huddle() as api:
        doc = await make_doc(api)
        api.sandbox.set_moving(doc)
        assert (await api.get(f"/files/documents/{doc}/content")).status == 409
        api.sandbox.set_moving(doc, False)
        assert (await api.get(f"/files/documents/{doc}/content")).status == 200


async def test_content_redirect_serves_bytes_from_storage() -> None:
    """In redirect mode content is a 302 to a signed storage URL that serves Range."""
    async with huddle(content_redirect=True) as api:
        doc = await make_doc(api)
        redirect = await api.get(
            f"/files/documents/{doc}/content", {"x-download-reason": "offline-file"}
        )
        assert redirect.status == 302
        location = redirect.headers["Location"]
        assert location.startswith(api.storage.base_url)
        async with api.http.get(location, headers={"Range": "bytes=10-"}) as response:
            assert response.status == 206
            assert await response.read() == TEXT[10:]
        again = await api.get(f"/files/documents/{doc}/content")
        async with api.http.get(again.headers["Location"]) as response:
            assert (
                response.headers["ETag"]
                == api.storage.blobs[f"huddle/{doc}/{api.sandbox.document(doc).version_id}"].etag
            )
        assert api.storage.authorization_seen == []
        assert api.sandbox.download_reasons == [(doc, "offline-file"), (doc, None)]


# -- conversions ----------------------------------------------------------------------------------


async def test_accepting_the_original_type_gives_the_original() -> None:
    """An Accept equal to the document's own type is the same as no Accept."""
    async with huddle() as api:
        doc = await make_doc(api)
        reply = await api.get(f"/files/documents/{doc}/content", {"Accept": "text/plain"})
        assert (reply.status, reply.body) == (200, TEXT)


async def test_existing_rendition_is_served_at_once() -> None:
    """A conversion that already exists comes back 200 with the converted bytes."""
    async with huddle() as api:
        doc = await make_doc(api)
        api.sandbox.add_rendition(doc, "application/pdf")
        reply = await api.get(f"/files/documents/{doc}/content", {"Accept": "application/pdf"})
        assert reply.status == 200
        assert reply.body == b"%PDF-sandbox " + TEXT
        assert reply.headers["Content-Type"] == "application/pdf"
        assert reply.headers["Content-Disposition"] == 'attachment; filename="filename.pdf"'


async def test_conversion_202_then_in_progress_then_complete() -> None:
    """A new conversion is 202 + Location; the progress polls InProgress, then Complete."""
    async with huddle(conversion_polls=2) as api:
        doc = await make_doc(api)
        url = f"/files/documents/{doc}/content"
        accepted = await api.get(url, {"Accept": "application/pdf"})
        assert accepted.status == 202
        location = accepted.headers["Location"]
        assert location.endswith("/conversion/application%2Fpdf")
        assert accepted.headers["Supported-Accept"] == "text/plain, application/pdf"
        statuses = [(await api.get(location)).json()["status"] for _ in range(3)]
        assert statuses == ["InProgress", "InProgress", "Complete"]
        done = (await api.get(location)).json()
        assert href(done, "content") == api.base + url
        assert href(done, "self") == location
        converted = await api.get(f"{url}?mimetype=application/pdf")
        assert (converted.status, converted.body) == (200, b"%PDF-sandbox " + TEXT)


async def test_unsupported_conversion_is_406() -> None:
    """A type outside Supported-Accept is 406 Not Acceptable with the supported list."""
    async with huddle() as api:
        doc = await make_doc(api)
        reply = await api.get(f"/files/documents/{doc}/content", {"Accept": "video/mp4"})
        assert reply.status == 406
        assert reply.headers["Supported-Accept"] == "text/plain, application/pdf"


async def test_failed_conversion_is_500_with_a_message() -> None:
    """A conversion set to fail makes the progress resource answer 500 with a message."""
    async with huddle(conversion_polls=0) as api:
        doc = await make_doc(api)
        api.sandbox.fail_conversion(doc, "application/pdf")
        accepted = await api.get(f"/files/documents/{doc}/content?mimetype=application/pdf")
        assert accepted.status == 202
        failed = await api.get(accepted.headers["Location"])
        assert failed.status == 500
        assert "failed" in failed.json()["message"]
        api.sandbox.fail_conversion(doc, "application/pdf", fail=False)
        retry = await api.get(f"/files/documents/{doc}/content?mimetype=application/pdf")
        assert retry.status == 202
        assert (await api.get(retry.headers["Location"])).json()["status"] == "Complete"


async def test_update_invalidates_renditions() -> None:
    """A new version needs a new conversion: the old rendition is not served for it."""
    async with huddle() as api:
        doc = await make_doc(api)
        api.sandbox.add_rendition(doc, "application/pdf")
        api.sandbox.update_document(doc, b"new words")
        reply = await api.get(f"/files/documents/{doc}/content", {"Accept": "application/pdf"})
        assert reply.status == 202


# -- demo data and pure helpers -------------------------------------------------------------------


def test_populate_demo_is_deterministic_and_nested() -> None:
    """The same seed builds the same tree; documents sit in nested folders."""

    def snapshot(seed: int) -> list[tuple[str, str, bytes]]:
        sandbox = HuddleSandbox(StorageHost(), clock=lambda: START)
        sandbox.populate_demo(n=25, seed=seed)
        tree = sandbox.tree
        return [(d.title, tree.folders[d.folder_id].title, d.data) for d in tree.documents.values()]

    first = snapshot(3)
    assert first == snapshot(3)
    assert first != snapshot(4)
    assert len(first) == 25
    assert {"Alpha", "2023"} & {folder for _, folder, _ in first}


@given(size=st.integers(0, 10_000), start=st.integers(0, 20_000))
def test_open_range_covers_the_tail(size: int, start: int) -> None:
    """`bytes=N-` asks for the bytes from N to the end, unsatisfiable from the end on."""
    wanted = parse_range(f"bytes={start}-", size)
    assert wanted is not None
    assert wanted.satisfiable == (start < size)
    if wanted.satisfiable:
        assert (wanted.start, wanted.length) == (start, size - start)


@given(text=st.text(min_size=0, max_size=120))
def test_other_reasons_allow_up_to_100_characters(text: str) -> None:
    """`other/<text>` is valid exactly when the text has 1 to 100 characters."""
    assert valid_download_reason("other/" + text) == (1 <= len(text) <= 100)


def test_accept_negotiation_picks_the_preferred_type() -> None:
    """`?mimetype=` beats Accept; `*/*` or nothing means the original; q orders the rest."""
    assert requested_type(None, None) is None
    assert requested_type(None, "*/*") is None
    assert requested_type("application/pdf", "text/plain") == "application/pdf"
    assert requested_type(None, "text/plain;q=0.5, application/pdf") == "application/pdf"
