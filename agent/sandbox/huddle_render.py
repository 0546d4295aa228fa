"""Huddle sandbox JSON bodies: users, workspaces, folders, paged folders, documents.

Links are `{"rel","href","type"?,"title"?}` with absolute hrefs. Bodies carry no `id`
field: as in Huddle, a resource is named by its `self` link. Child items inside folders and
paged folders come in the shape `HuddleOptions.summaries` chooses: only `self` (the least
the documentation shows), title and every link, or the whole Document resource.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode

from agent.sandbox.huddle_http import HuddleOptions, http_date, iso_date
from agent.sandbox.huddle_model import (
    DOCUMENT_RANK,
    FOLDER_RANK,
    Document,
    Folder,
    HuddleTree,
    ItemKey,
    Page,
    Workspace,
)

Json = dict[str, object]
Link = dict[str, str]


def encode_key(direction: str, key: ItemKey) -> str:
    """An opaque paging key: `a` = items after `key`, `b` = items before it."""
    raw = f"{direction}:{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_key(value: str) -> tuple[str, ItemKey] | None:
    """The direction and item key inside an opaque paging key, or None if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        direction, rank, number = raw.split(":")
        key = (int(rank), int(number))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if direction not in ("a", "b") or key[0] not in (FOLDER_RANK, DOCUMENT_RANK):
        return None
    return direction, key


class Renderer:
    """Builds JSON for one request: knows the base URL and the date style to use."""

    def __init__(self, tree: HuddleTree, base: str, options: HuddleOptions) -> None:
        self.tree = tree
        self.base = base.rstrip("/")
        self.options = options

    def url(self, path: str) -> str:
        return self.base + path

    def date(self, ts: float) -> str:
        self.tree.observe(ts)
        return http_date(ts) if self.options.rfc1123_dates else iso_date(ts)

    def link(self, rel: str, path: str, **extra: str) -> Link:
        return {"rel": rel, "href": self.url(path), **extra}

    # -- users and workspaces ---------------------------------------------------------------

    def user(self, user_id: str, name: str) -> Json:
        workspaces = [self.workspace(ws) for ws in self.tree.workspaces.values()]
        return {
            "displayName": name,
            "links": [self.link("self", f"/users/{user_id}")],
            "membership": {"workspaces": workspaces},
        }

    def workspace(self, ws: Workspace) -> Json:
        return {
            "title": ws.title,
            "type": "workspace",
            "links": [
                self.link("self", f"/workspaces/{ws.id}"),
                self.link("documentLibrary", f"/files/workspaces/{ws.id}/folders/root"),
            ],
        }

    # -- folders ----------------------------------------------------------------------------

    def folder_links(self, folder: Folder) -> list[Link]:
        links = [self.link("self", f"/files/folders/{folder.id}")]
        if folder.parent_id is not None:
            links.append(self.link("parent", f"/files/folders/{folder.parent_id}"))
        else:
            links.append(self.link("workspace", f"/workspaces/{folder.workspace_id}"))
        if self.options.paged_view:
            links.append(self.link("collection", f"/files/pagedfolders/{folder.id}"))
        return links

    def folder(self, folder: Folder) -> Json:
        children = [self.tree.item(key) for key in folder.children]
        return {
            "title": folder.title,
            "description": folder.description,
            "created": self.date(folder.created),
            "updated": self.date(folder.updated),
            "links": self.folder_links(folder),
            "folders": [self.folder_summary(c) for c in children if isinstance(c, Folder)],
            "documents": [self.document_summary(c) for c in children if isinstance(c, Document)],
        }

    def folder_summary(self, folder: Folder) -> Json:
        """A child folder as its parent lists it, in the configured summary shape."""
        own = [self.link("self", f"/files/folders/{folder.id}")]
        if self.options.summaries == "self":
            return {"links": own}
        if self.options.summaries == "links":
            return {"title": folder.title, "updated": self.date(folder.updated), "links": own}
        return {
            "title": folder.title,
            "description": folder.description,
            "created": self.date(folder.created),
            "updated": self.date(folder.updated),
            "links": self.folder_links(folder),
        }

    def paged(self, folder: Folder, page: Page, size: int, current: str) -> Json:
        items = [self.tree.item(key) for key in page.keys]
        path = f"/files/pagedfolders/{folder.id}"
        links = [
            {"rel": "current", "href": current},
            self.link("first", f"{path}?{urlencode({'size': size})}"),
        ]
        if page.has_prev and page.keys:
            query = urlencode({"size": size, "key": encode_key("b", page.keys[0])})
            links.append(self.link("prev", f"{path}?{query}"))
        if page.has_next and page.keys:
            query = urlencode({"size": size, "key": encode_key("a", page.keys[-1])})
            links.append(self.link("next", f"{path}?{query}"))
        links.append(self.link("folder", f"/files/folders/{folder.id}"))
        return {
            "title": folder.title,
            "links": links,
            "items": [
                {"type": "folder", **self.folder_summary(i)}
                if isinstance(i, Folder)
                else {"type": "document", **self.document_summary(i)}
                for i in items
            ],
        }

    # -- documents --------------------------------------------------------------------------

    def document_links(self, doc: Document) -> list[Link]:
        path = f"/files/documents/{doc.id}"
        links = [
            self.link("self", path),
            self.link("parent", f"/files/folders/{doc.folder_id}"),
        ]
        if doc.downloadable:
            links.append(self.link("content", f"{path}/content", title=doc.filename, type=doc.mime))
        links.append(self.link("version-history", f"{path}/versions"))
        return links

    def document_summary(self, doc: Document) -> Json:
        """A document as a folder lists it, in the configured summary shape."""
        if self.options.summaries == "self":
            parent = self.link("parentCollection", f"/files/pagedfolders/{doc.folder_id}")
            return {"links": [self.link("self", f"/files/documents/{doc.id}"), parent]}
        if self.options.summaries == "links":
            return {
                "title": doc.title,
                "updated": self.date(doc.updated),
                "links": self.document_links(doc),
            }
        return self.document(doc)

    def document(self, doc: Document) -> Json:
        return {
            "title": doc.title,
            "description": doc.description,
            "size": doc.size,
            "version": doc.version,
            "created": self.date(doc.created),
            "updated": self.date(doc.updated),
            "processingStatus": "Complete",
            "mimeType": doc.mime,
            "extension": doc.extension,
            "links": self.document_links(doc),
        }

    def versions(self, doc: Document) -> Json:
        return {
            "title": doc.title,
            "links": [self.link("self", f"/files/documents/{doc.id}/versions")],
            "versions": [
                {"version": v.number, "created": self.date(v.created), "size": v.size}
                for v in reversed(doc.versions)
            ],
        }
