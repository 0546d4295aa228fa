"""Huddle sandbox: rotating OAuth tokens, hypermedia folders, keyset paging, content, conversions.

Faithful to the Huddle API documentation (seed 002, API-NOTES section 3):

- `POST /token` (form-encoded refresh-token grant) returns a NEW single-use refresh token
  every time; a reused one gets 400 `invalid_grant` and lands in `reused_refresh_tokens`.
  With `refresh_revokes_access` (the default) it also kills older access tokens.
- Every other route needs `Authorization: Bearer <t>` (or `OAuth2 <t>`, as `auth_scheme`
  allows); an expired or unknown token gets `expired_status` (401 newer docs, 403 older).
- `GET /entry` -> 303 to `/users/{id}`, which lists the workspaces; each workspace links
  its root folder `/files/workspaces/{id}/folders/root`.
- `GET /files/folders/{id}`: inline child folders and documents (in the `summaries`
  shape: by default only their `self` links); `Last-Modified` (and `If-Modified-Since`
  -> 304) covers what `folder_times` says: by default only the folder's own list of
  children, with `RICH` any change anywhere in its subtree. 404 missing, 410 deleted,
  423 locked.
- `GET /files/pagedfolders/{id}?size=N&key=K`: keyset pages of folders then documents, in
  id order, with opaque keys. `size` defaults to 50; above 250 it is clamped to 250; a
  size below 1 or not a number is 400, as is a key this server did not make.
- `GET /files/documents/{id}`: full document JSON; no `content` link without download
  permission. Content and conversions are in `huddle_content`.

All JSON is `application/vnd.huddle.data+json` with absolute link hrefs. Where the
documentation allows several readings a keyword chooses one (`HuddleKnobs`); the defaults
are the least it promises and `RICH` holds the friendliest (docs/conformance.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Unpack

from aiohttp import web
from aiohttp.typedefs import Middleware

from agent.sandbox.huddle_auth import TokenIssuer, auth_refusal, token_endpoint
from agent.sandbox.huddle_content import ContentService, Conversions
from agent.sandbox.huddle_http import (
    HuddleKnobs,
    HuddleOptions,
    error,
    http_date,
    huddle_json,
    not_modified,
)
from agent.sandbox.huddle_model import Document, Folder, HuddleTree, populate_bulk, populate_demo
from agent.sandbox.huddle_render import Json, Renderer, decode_key
from agent.sandbox.server import (
    FaultPlan,
    Handler,
    RequestLog,
    Served,
    fault_middleware,
    recording_middleware,
)
from agent.sandbox.storage import StorageHost

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 250
USER_ID = "10001"
USER_NAME = "Sandbox User"

# Every knob at its friendliest documented reading (the defaults are the least promised).
RICH: Final[HuddleKnobs] = {
    "summaries": "full",
    "expired_status": 401,
    "no_content_status": 204,
    "auth_scheme": None,
    "rfc1123_dates": False,
    "paged_view": True,
    "refresh_revokes_access": False,
    "conversion_links_in_body": True,
    "folder_times": "subtree",
}


class HuddleSandbox(Served):
    """A local Huddle API: data methods for tests, an aiohttp app, a request log, faults."""

    def __init__(
        self,
        storage: StorageHost,
        *,
        client_id: str = "demo-client",
        client_secret: str | None = None,
        refresh_token: str = "demo-refresh-0",  # noqa: S107 - a sandbox's fake credential
        token_lifetime: int = 1200,
        clock: Callable[[], float] = time.time,
        **knobs: Unpack[HuddleKnobs],
    ) -> None:
        self.storage = storage
        self.options = HuddleOptions(**knobs)
        self.tree = HuddleTree(clock)
        self.tokens = TokenIssuer(client_id, client_secret, token_lifetime, clock)
        self.tokens.add_refresh_token(refresh_token)
        self.conversions = Conversions()
        self.download_reasons: list[tuple[str, str | None]] = []
        self.log = RequestLog()
        self.faults = FaultPlan()
        self.base_url = ""
        self.user_id = USER_ID
        self._content = ContentService(
            self.tree, storage, self.options, self.conversions, self.download_reasons
        )
        self._app = self._build_app()

    # -- serving ----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL on the running sandbox."""
        if not self.base_url:
            raise RuntimeError("the Huddle sandbox is not running")
        return self.base_url + path

    @property
    def token_url(self) -> str:
        return self.url("/token")

    @property
    def entry_url(self) -> str:
        return self.url("/entry")

    # -- tokens -----------------------------------------------------------------------------

    @property
    def issued_refresh_tokens(self) -> list[str]:
        """Every refresh token ever valid, in order, the constructor's first."""
        return self.tokens.issued_refresh_tokens

    @property
    def reused_refresh_tokens(self) -> list[str]:
        """Spent refresh tokens that someone tried to spend again (should stay empty)."""
        return self.tokens.reused_refresh_tokens

    def issue_access_token(self) -> str:
        """A fresh access token, without going through `/token`."""
        return self.tokens.issue_access_token()

    def expire_all_tokens(self) -> None:
        self.tokens.expire_all_tokens()

    def revoke_refresh_tokens(self) -> None:
        self.tokens.revoke_refresh_tokens()

    # -- data -------------------------------------------------------------------------------

    def add_workspace(self, title: str) -> str:
        return self.tree.add_workspace(title)

    def root_folder_id(self, ws_id: str) -> str:
        return self.tree.workspaces[ws_id].root_folder_id

    def add_folder(self, parent_id: str, title: str, *, description: str = "") -> str:
        return self.tree.add_folder(parent_id, title, description=description)

    def add_document(
        self,
        folder_id: str,
        title: str,
        data: bytes,
        *,
        mime: str = "application/octet-stream",
        filename: str | None = None,
        description: str = "",
        downloadable: bool = True,
        has_content: bool = True,
        supported: tuple[str, ...] = ("application/pdf",),
    ) -> str:
        return self.tree.add_document(
            folder_id,
            title,
            data,
            mime=mime,
            filename=filename,
            description=description,
            downloadable=downloadable,
            has_content=has_content,
            supported=supported,
        )

    def update_document(self, doc_id: str, data: bytes) -> None:
        """New content: version + 1; `updated` and the folder times move as `folder_times` says."""
        self.tree.update_document(doc_id, data)

    def rename_document(self, doc_id: str, title: str, *, filename: str | None = None) -> None:
        self.tree.rename_document(doc_id, title, filename=filename)

    def move_document(self, doc_id: str, folder_id: str) -> None:
        self.tree.move_document(doc_id, folder_id)

    def delete_folder(self, folder_id: str) -> None:
        """The folder and everything under it answer 410 Gone from now on."""
        self.tree.delete_folder(folder_id)

    def delete_document(self, doc_id: str) -> None:
        self.tree.delete_document(doc_id)

    def set_moving(self, doc_id: str, moving: bool = True) -> None:
        """While moving, content requests answer 409 Conflict."""
        self.tree.documents[doc_id].moving = moving

    def set_locked(self, folder_id: str, locked: bool = True) -> None:
        """While locked, the folder and its paged view answer 423 Locked."""
        self.tree.folders[folder_id].locked = locked

    def document(self, doc_id: str) -> Document:
        return self.tree.documents[doc_id]

    def folder_last_modified(self, folder_id: str) -> float:
        """The `Last-Modified` the folder answers with now, under the `folder_times` reading."""
        return self._folder_time(self.tree.folders[folder_id])

    def fail_conversion(self, doc_id: str, mime: str, fail: bool = True) -> None:
        """Make conversions of `doc_id` to `mime` end in 500 on the progress resource."""
        marker = (doc_id, mime.lower())
        if fail:
            self.conversions.failing.add(marker)
        else:
            self.conversions.failing.discard(marker)

    def add_rendition(self, doc_id: str, mime: str) -> None:
        """Pretend a conversion of the current version to `mime` already exists."""
        doc = self.tree.documents[doc_id]
        self.conversions.complete(doc_id, doc.version_id, mime.lower())

    def populate_demo(self, n: int = 30, seed: int = 0) -> str:
        """A workspace with a small nested tree of `n` documents; returns the workspace id."""
        return populate_demo(self.tree, n, seed)

    def populate_bulk(self, folder_id: str, count: int, *, prefix: str = "bulk") -> list[str]:
        """`count` tiny text documents in one folder (e.g. >250 to exercise paging)."""
        return populate_bulk(self.tree, folder_id, count, prefix=prefix)

    # -- app --------------------------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        return self._app

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                recording_middleware(self.log),
                fault_middleware(self.faults),
                self._auth_middleware(),
            ]
        )
        routes = app.router
        routes.add_post("/token", self._token)
        routes.add_get("/entry", self._entry)
        routes.add_get("/users/{user_id}", self._user)
        routes.add_get("/workspaces/{ws_id}", self._workspace)
        routes.add_get("/files/workspaces/{ws_id}/folders/root", self._root_folder)
        routes.add_get("/files/folders/{folder_id}", self._folder)
        routes.add_get("/files/pagedfolders/{folder_id}", self._paged_folder)
        routes.add_get("/files/documents/{doc_id}", self._document)
        routes.add_get("/files/documents/{doc_id}/versions", self._versions)
        routes.add_get("/files/documents/{doc_id}/content", self._content.content)
        routes.add_get(
            "/files/documents/{doc_id}/versions/{version_id}/conversion/{mime:.+}",
            self._content.conversion,
        )
        return app

    def _auth_middleware(self) -> Middleware:
        @web.middleware
        async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == "/token":
                return await handler(request)
            refusal = auth_refusal(
                self.tokens,
                request.headers.get("Authorization"),
                scheme=self.options.auth_scheme,
                expired_status=self.options.expired_status,
            )
            return refusal if refusal is not None else await handler(request)

        return authenticate

    def _renderer(self, request: web.Request) -> Renderer:
        return Renderer(self.tree, str(request.url.origin()), self.options)

    async def _token(self, request: web.Request) -> web.Response:
        return await token_endpoint(
            self.tokens, request, revoke_access=self.options.refresh_revokes_access
        )

    async def _entry(self, request: web.Request) -> web.Response:
        location = f"{request.url.origin()}/users/{self.user_id}"
        return web.Response(status=303, headers={"Location": location})

    async def _user(self, request: web.Request) -> web.Response:
        if request.match_info["user_id"] != self.user_id:
            return error(404, "User not found")
        return huddle_json(self._renderer(request).user(self.user_id, USER_NAME))

    async def _workspace(self, request: web.Request) -> web.Response:
        ws = self.tree.workspaces.get(request.match_info["ws_id"])
        if ws is None:
            return error(404, "Workspace not found")
        return huddle_json(self._renderer(request).workspace(ws))

    async def _root_folder(self, request: web.Request) -> web.Response:
        ws = self.tree.workspaces.get(request.match_info["ws_id"])
        if ws is None:
            return error(404, "Workspace not found")
        return self._folder_response(request, ws.root_folder_id)

    async def _folder(self, request: web.Request) -> web.Response:
        return self._folder_response(request, request.match_info["folder_id"])

    def _folder_response(self, request: web.Request, folder_id: str) -> web.Response:
        folder = self._live_folder(folder_id)
        if not isinstance(folder, Folder):
            return folder
        renderer = self._renderer(request)
        return self._conditional(
            request, self._folder_time(folder), lambda: renderer.folder(folder)
        )

    async def _paged_folder(self, request: web.Request) -> web.Response:
        folder = self._live_folder(request.match_info["folder_id"])
        if not isinstance(folder, Folder):
            return folder
        size = _page_size(request.query.get("size"))
        if size is None:
            return error(400, "size must be a positive whole number")
        raw_key = request.query.get("key")
        decoded = decode_key(raw_key) if raw_key is not None else None
        if raw_key is not None and decoded is None:
            return error(400, "Invalid paging key")
        if decoded is not None and decoded[0] == "b":
            page = self.tree.page_before(folder, decoded[1], size)
        else:
            page = self.tree.page_after(folder, decoded[1] if decoded else None, size)
        renderer = self._renderer(request)
        current = str(request.url)
        return self._conditional(
            request,
            self._folder_time(folder),
            lambda: renderer.paged(folder, page, size, current),
        )

    async def _document(self, request: web.Request) -> web.Response:
        doc = self._live_document(request.match_info["doc_id"])
        if not isinstance(doc, Document):
            return doc
        renderer = self._renderer(request)
        return self._conditional(request, doc.updated, lambda: renderer.document(doc))

    async def _versions(self, request: web.Request) -> web.Response:
        doc = self._live_document(request.match_info["doc_id"])
        if not isinstance(doc, Document):
            return doc
        return huddle_json(self._renderer(request).versions(doc))

    def _folder_time(self, folder: Folder) -> float:
        return self.tree.last_modified(folder, self.options.folder_times)

    def _live_folder(self, folder_id: str) -> Folder | web.Response:
        folder = self.tree.folders.get(folder_id)
        if folder is None:
            return error(404, "Folder not found")
        if self.tree.folder_gone(folder):
            return error(410, "Folder has been deleted")
        if folder.locked:
            return error(423, "Folder is locked")
        return folder

    def _live_document(self, doc_id: str) -> Document | web.Response:
        doc = self.tree.documents.get(doc_id)
        if doc is None:
            return error(404, "Document not found")
        if self.tree.document_gone(doc):
            return error(410, "Document has been deleted")
        return doc

    def _conditional(
        self, request: web.Request, last_modified: float, build: Callable[[], Json]
    ) -> web.Response:
        """304 when `If-Modified-Since` covers `last_modified`, else the JSON `build` makes."""
        self.tree.observe(last_modified)
        headers = {"Last-Modified": http_date(last_modified)}
        if not_modified(request.headers, None, last_modified):
            return web.Response(status=304, headers=headers)
        return huddle_json(build(), headers=headers)


def _page_size(raw: str | None) -> int | None:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        return None
    return min(size, MAX_PAGE_SIZE) if size >= 1 else None
