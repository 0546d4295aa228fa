"""Each documented Huddle ambiguity has a knob; by default the sandbox gives the least reading."""

from __future__ import annotations

import pytest
from huddle_kit import href, huddle, link


async def test_default_summaries_carry_only_self_and_parent_collection_links() -> None:
    """Inline folders, inline documents and paged items show nothing but their links."""
    async with huddle(minimal=True) as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        sub = api.sandbox.add_folder(root, "Plans")
        doc = api.sandbox.add_document(root, "a.pdf", b"%PDF", mime="application/pdf")
        folder = (await api.get(f"/files/folders/{root}")).json()
        (inline_folder,) = folder["folders"]
        (inline_doc,) = folder["documents"]
        assert inline_folder == {
            "links": [{"rel": "self", "href": f"{api.base}/files/folders/{sub}"}]
        }
        assert set(inline_doc) == {"links"}
        assert [lk["rel"] for lk in inline_doc["links"]] == ["self", "parentCollection"]
        page = (await api.get(href(folder, "collection"))).json()
        assert [set(item) for item in page["items"]] == [{"type", "links"}, {"type", "links"}]
        resource = (await api.get(href(inline_doc, "self"))).json()
        assert href(resource, "content") == f"{api.base}/files/documents/{doc}/content"
        assert resource["version"] == 1


async def test_links_summaries_have_title_updated_and_every_link_but_no_version() -> None:
    """The `links` shape: a content link for a downloadable document, none for a restricted one."""
    async with huddle(minimal=True, summaries="links") as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        api.sandbox.add_document(root, "open.txt", b"o")
        api.sandbox.add_document(root, "closed.txt", b"c", downloadable=False)
        folder = (await api.get(f"/files/folders/{root}")).json()
        opened, closed = folder["documents"]
        assert {"title", "updated", "links"} == set(opened) == set(closed)
        assert link(opened, "content") is not None
        assert link(closed, "content") is None


async def test_full_summaries_are_the_document_resource() -> None:
    """The `full` shape (RICH) inlines every field the Document resource has."""
    async with huddle(minimal=True, summaries="full") as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        doc = api.sandbox.add_document(root, "r.pdf", b"%PDF", mime="application/pdf")
        (inline,) = (await api.get(f"/files/folders/{root}")).json()["documents"]
        assert inline == (await api.get(f"/files/documents/{doc}")).json()


async def test_default_readings_of_status_codes_dates_and_scheme() -> None:
    """By default: expiry is 403, no content is 404, dates are RFC 1123, only Bearer is taken."""
    async with huddle(minimal=True) as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        empty = api.sandbox.add_document(root, "e.txt", b"", has_content=False)
        assert (await api.get(f"/files/documents/{empty}")).json()["updated"].endswith(" GMT")
        assert (await api.get(f"/files/documents/{empty}/content")).status == 404
        assert (await api.get("/entry", auth="OAuth2")).status == 401
        api.sandbox.expire_all_tokens()
        assert (await api.get("/entry")).status == 403


@pytest.mark.parametrize(("revokes", "old_status"), [(True, 403), (False, 303)])
async def test_a_refresh_kills_older_access_tokens_unless_told_otherwise(
    revokes: bool, old_status: int
) -> None:
    """With `refresh_revokes_access` (the default) a token dies as soon as a new pair is issued."""
    async with huddle(minimal=True, refresh_revokes_access=revokes) as api:
        form = {"grant_type": "refresh_token", "client_id": "demo-client"}
        reply = await api.token_post({**form, "refresh_token": "demo-refresh-0"})
        assert reply.status == 200
        assert (await api.get("/entry")).status == old_status
        api.token = reply.json()["access_token"]
        assert (await api.get("/entry")).status == 303


async def test_without_the_paged_view_a_folder_links_no_collection() -> None:
    """`paged_view=False`: the inline lists are all a folder offers."""
    async with huddle(minimal=True, paged_view=False) as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        api.sandbox.add_document(root, "a.txt", b"a")
        folder = (await api.get(f"/files/folders/{root}")).json()
        assert link(folder, "collection") is None
        assert len(folder["documents"]) == 1


@pytest.mark.parametrize("in_body", [False, True])
async def test_finished_conversion_names_its_content_in_a_header_or_the_body(
    in_body: bool,
) -> None:
    """By default the content link of a done conversion is only in `Link`; else in the body."""
    async with huddle(minimal=True, conversion_polls=0, conversion_links_in_body=in_body) as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        doc = api.sandbox.add_document(root, "r.txt", b"words", mime="text/plain")
        content = f"{api.base}/files/documents/{doc}/content"
        accepted = await api.get(content, {"Accept": "application/pdf"})
        assert accepted.status == 202
        done = await api.get(accepted.headers["Location"])
        assert done.json()["status"] == "Complete"
        if in_body:
            assert href(done.json(), "content") == content
            assert "Link" not in done.headers
        else:
            assert "links" not in done.json()
            assert done.headers["Link"] == f'<{content}>; rel="content"'


# Which folders answer 200 (moved) to `If-Modified-Since` after each kind of change, under each
# `folder_times` reading: (the changed document's folder A, A's parent, the root).
FOLDER_TIME_CASES = {
    "own": {"new version": (304, 304, 304), "new document": (200, 304, 304)},
    "children": {"new version": (200, 304, 304), "new document": (200, 304, 304)},
    "subtree": {"new version": (200, 200, 200), "new document": (200, 200, 200)},
}


@pytest.mark.parametrize("change", ["new version", "new document"])
@pytest.mark.parametrize("reading", sorted(FOLDER_TIME_CASES))
async def test_a_folder_time_moves_for_what_its_reading_covers(reading: str, change: str) -> None:
    """`own` moves for the folder's child list, `children` also for a child, `subtree` for all."""
    async with huddle(minimal=True, folder_times=reading) as api:
        root = api.sandbox.root_folder_id(api.sandbox.add_workspace("W"))
        parent = api.sandbox.add_folder(root, "P")
        deep = api.sandbox.add_folder(parent, "A")
        doc = api.sandbox.add_document(deep, "d.txt", b"one")
        folders = (deep, parent, root)
        stamps = [(await api.get(f"/files/folders/{f}")).headers["Last-Modified"] for f in folders]
        api.clock.now += 60
        if change == "new version":
            api.sandbox.update_document(doc, b"two")
        else:
            api.sandbox.add_document(deep, "e.txt", b"new")
        statuses = []
        for folder, stamp in zip(folders, stamps, strict=True):
            for view in ("folders", "pagedfolders"):
                reply = await api.get(f"/files/{view}/{folder}", {"If-Modified-Since": stamp})
                statuses.append(reply.status)
        assert statuses[::2] == list(FOLDER_TIME_CASES[reading][change])
        assert statuses[1::2] == statuses[::2]  # the paged view answers as its folder


async def test_by_default_a_folder_time_covers_only_its_own_list_of_children() -> None:
    """The least reading is the default and `RICH` is the subtree reading."""
    async with huddle(minimal=True) as api:
        assert api.sandbox.options.folder_times == "own"
    async with huddle() as api:
        assert api.sandbox.options.folder_times == "subtree"
