"""A local OpenCDE Documents API 1.0 server (with Foundation API discovery and OAuth 2).

Faithful to buildingSMART's documents-API `release_1_0` and foundation-API: discovery,
the authorization-code flow with rotating single-use refresh tokens, the browser document
picker with its callback redirect, DocumentVersion links, polling via
`POST /document-versions` with ETag/304, and downloads answered either by a redirect
(302 or 303) to the shared storage host or by the bytes themselves. Where the docs allow
two behaviours the constructor chooses (`OpenCdeKnobs`: `token_status`,
`expires_in_as_string`, `redirect_status`, `callback_param`, `redirect_param`,
`details_link`, `unknown_properties`, `dates_with_offset`, `direct_download`); each
default is the least the documentation promises and `RICH` holds the friendliest
(docs/conformance.md).

Routes (base = the running server's URL, api = base + `/documents/1.0`):
    GET  /foundation/versions, /foundation/1.0/auth, /foundation/1.0/current-user
    GET  /oauth/authorize    POST /oauth/token    POST /oauth/register
    POST api/select-documents   GET api/selections/{id}   POST api/document-versions
    GET  api/documents/{id}/versions[/{index}[/metadata|/download]]
    GET  /ui/select/{session}   GET|POST /ui/select/{session}/submit   GET /ui/documents/{id}
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypedDict

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from agent.sandbox.opencde_auth import GrantError, OAuthServer, TokenGrant
from agent.sandbox.opencde_data import (
    Document,
    DocumentStore,
    LinkBuilder,
    Version,
    metadata_json,
)
from agent.sandbox.opencde_http import (
    ApiError,
    bytes_response,
    etagged_json,
    json_object,
    with_unknown_properties,
)
from agent.sandbox.opencde_ui import details_page, matches_extensions, message_page, select_page
from agent.sandbox.server import (
    FaultPlan,
    Handler,
    RequestLog,
    Served,
    fault_middleware,
    json_body,
    recording_middleware,
)
from agent.sandbox.storage import StorageHost

API_PREFIX = "/documents/1.0"
SELECT_URL_LIFETIME = 60
DEFAULT_SERVER_CONTEXT = "project=demo-project;folder=root"


class OpenCdeKnobs(TypedDict, total=False):
    """The constructor keywords of `OpenCdeSandbox` that choose a documented reading."""

    token_status: int
    expires_in_as_string: bool
    redirect_status: int
    callback_param: str
    redirect_param: str | None
    details_link: bool
    unknown_properties: bool
    dates_with_offset: bool
    direct_download: bool


# Every knob at its friendliest documented reading (the defaults are the least promised).
RICH: Final[OpenCdeKnobs] = {
    "token_status": 200,
    "expires_in_as_string": False,
    "redirect_status": 302,
    "callback_param": "selected_documents_url",
    "redirect_param": None,
    "details_link": True,
    "unknown_properties": False,
    "dates_with_offset": False,
}


@dataclass
class _SelectSession:
    callback: str
    server_context: str | None
    extensions: tuple[str, ...]
    expires_at: float
    done: bool = False


@dataclass(frozen=True)
class _Selection:
    document_ids: tuple[str, ...]
    server_context: str


class OpenCdeSandbox(Served):
    """An in-memory OpenCDE CDE on loopback; see the module docstring for its routes."""

    def __init__(
        self,
        storage: StorageHost,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",  # noqa: S107 - the sandbox's fake demo secret
        token_status: int = 201,
        expires_in_as_string: bool = True,
        token_lifetime: int = 3600,
        redirect_status: int = 303,
        callback_param: str = "selected_url",
        redirect_param: str | None = "redirect_url",
        details_link: bool = False,
        unknown_properties: bool = True,
        dates_with_offset: bool = True,
        direct_download: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.client_id = client_id
        self.token_status = token_status
        self.expires_in_as_string = expires_in_as_string
        self.redirect_status = redirect_status
        self.callback_param = callback_param
        self.redirect_param = redirect_param
        self.details_link = details_link
        self.unknown_properties = unknown_properties
        self.dates_with_offset = dates_with_offset
        self.direct_download = direct_download
        self.clock = clock
        self.oauth = OAuthServer({client_id: client_secret}, token_lifetime, clock)
        self.documents = DocumentStore(clock)
        self.log = RequestLog()
        self.faults = FaultPlan()
        self.auto_select: list[str] | None = None
        self.auto_cancel = False
        self.versions_calls = 0
        self.base_url = ""
        self._sessions: dict[str, _SelectSession] = {}
        self._selections: dict[str, _Selection] = {}
        self._app: web.Application | None = None

    # ---- data ---------------------------------------------------------------------------

    def add_document(self, title: str, name: str, data: bytes) -> str:
        """A new document with version_index 1 ("v1.0"); returns its document_id."""
        return self.documents.add(title, name, data)

    def publish_version(self, document_id: str, data: bytes, *, name: str | None = None) -> int:
        """A new version (index +2 or +1, alternately); returns its version_index."""
        return self.documents.publish(document_id, data, name)

    def remove_document(self, document_id: str) -> None:
        """Delete a document: its links answer 404 and polling no longer lists it."""
        self.documents.remove(document_id)

    def populate_demo(self, n: int = 24, seed: int = 0) -> list[str]:
        """Add `n` deterministic documents (bytes made on demand); returns their ids."""
        return self.documents.populate_demo(n, seed)

    # ---- auth knobs ---------------------------------------------------------------------

    @property
    def issued_refresh_tokens(self) -> list[str]:
        return self.oauth.issued_refresh_tokens

    @property
    def reused_refresh_tokens(self) -> list[str]:
        return self.oauth.reused_refresh_tokens

    def expire_all_tokens(self) -> None:
        """Every access token issued so far now answers 401."""
        self.oauth.expire_all_tokens()

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far now answers invalid_grant."""
        self.oauth.revoke_refresh_tokens()

    def issue_tokens(self, client_id: str | None = None) -> TokenGrant:
        """Mint a token pair without the browser flow (for tests that skip sign-in)."""
        client_id = client_id or self.client_id
        return self.oauth.redeem_code(client_id, self.oauth.issue_code(client_id, ""), None)

    # ---- serving ------------------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        if self._app is None:
            self._app = self._build_app()
        return self._app

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                recording_middleware(self.log),
                fault_middleware(self.faults),
                _errors_middleware(),
                _bearer_middleware(self.oauth),
            ]
        )
        doc = API_PREFIX + "/documents/{document_id}/versions"
        app.router.add_routes(
            [
                web.get("/foundation/versions", self._foundation_versions),
                web.get("/foundation/1.0/auth", self._foundation_auth),
                web.get("/foundation/1.0/current-user", self._current_user),
                web.get("/oauth/authorize", self._authorize),
                web.post("/oauth/token", self._token),
                web.post("/oauth/register", self._register),
                web.post(API_PREFIX + "/select-documents", self._select_documents),
                web.get(API_PREFIX + "/selections/{selection_id}", self._selection),
                web.post(API_PREFIX + "/document-versions", self._document_versions),
                web.get(doc, self._document_version_list),
                web.get(doc + "/{index}", self._document_version),
                web.get(doc + "/{index}/metadata", self._metadata),
                web.get(doc + "/{index}/download", self._download),
                web.get("/ui/select/{session}", self._select_page),
                web.get("/ui/select/{session}/submit", self._select_submit),
                web.post("/ui/select/{session}/submit", self._select_submit),
                web.get("/ui/documents/{document_id}", self._details),
            ]
        )
        return app

    def _base(self, request: web.Request) -> str:
        return self.base_url or str(request.url.origin())

    def _links(self, request: web.Request) -> LinkBuilder:
        return LinkBuilder(
            self._base(request),
            API_PREFIX,
            details_link=self.details_link,
            dates_with_offset=self.dates_with_offset,
        )

    def _json(
        self, payload: object, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """A JSON answer, with properties a client must ignore when `unknown_properties`."""
        if self.unknown_properties:
            payload = with_unknown_properties(payload)
        return json_body(payload, status, headers)

    def _etagged(self, request: web.Request, payload: object) -> web.Response:
        if self.unknown_properties:
            payload = with_unknown_properties(payload)
        return etagged_json(request, payload)

    def _redirect_target(self, params: Mapping[str, str]) -> str | None:
        """The redirect URL of an authorization or code grant, by the parameter(s) read."""
        names = ("redirect_url", "redirect_uri") if self.redirect_param is None else ()
        for name in names or (self.redirect_param or "",):
            if params.get(name):
                return params[name]
        return None

    # ---- discovery ----------------------------------------------------------------------

    async def _foundation_versions(self, request: web.Request) -> web.Response:
        base = self._base(request)
        repo = "https://github.com/buildingSMART"
        return self._json(
            {
                "versions": [
                    {
                        "api_id": "foundation",
                        "version_id": "1.0",
                        "detailed_version": f"{repo}/foundation-API/tree/release_1_1",
                        "api_base_url": f"{base}/foundation/1.0",
                    },
                    {
                        "api_id": "documents",
                        "version_id": "1.0",
                        "detailed_version": f"{repo}/documents-API/tree/release_1_0",
                        "api_base_url": f"{base}{API_PREFIX}",
                    },
                ]
            }
        )

    async def _foundation_auth(self, request: web.Request) -> web.Response:
        base = self._base(request)
        return self._json(
            {
                "oauth2_auth_url": f"{base}/oauth/authorize",
                "oauth2_token_url": f"{base}/oauth/token",
                "oauth2_dynamic_client_reg_url": f"{base}/oauth/register",
                "http_basic_supported": False,
                "supported_oauth2_flows": ["authorization_code_grant"],
            }
        )

    async def _current_user(self, request: web.Request) -> web.Response:
        _require_bearer(self.oauth, request)
        return self._json({"id": "demo.user@example.com", "name": "Demo User"})

    # ---- OAuth --------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        client_id = query.get("client_id", "")
        redirect = self._redirect_target(query) or ""
        if client_id not in self.oauth.clients:
            return _html(400, message_page("Unknown client", f"No client {client_id!r}."))
        if URL(redirect).scheme not in ("http", "https") or not URL(redirect).host:
            return _html(400, message_page("Bad request", "redirect_url must be absolute."))
        state = {"state": query["state"]} if "state" in query else {}
        if query.get("response_type") != "code":
            target = URL(redirect).extend_query(error="unsupported_response_type", **state)
        else:
            code = self.oauth.issue_code(client_id, redirect)
            target = URL(redirect).extend_query(code=code, **state)
        return _redirect(302, str(target))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            client_id = self.oauth.authenticate_client(request.headers.get("Authorization"))
            grant = self._grant(client_id, {k: str(v) for k, v in form.items()})
        except GrantError as exc:
            headers = {"WWW-Authenticate": 'Basic realm="opencde"'} if exc.status == 401 else {}
            problem = {"error": exc.error, "error_description": exc.description}
            return json_body(problem, exc.status, headers)
        expires_in: int | str = grant.expires_in
        if self.expires_in_as_string:
            expires_in = str(grant.expires_in)
        body: dict[str, object] = {
            "access_token": grant.access_token,
            "token_type": "bearer",
            "expires_in": expires_in,
            "refresh_token": grant.refresh_token,
        }
        return self._json(body, self.token_status, {"Cache-Control": "no-store"})

    def _grant(self, client_id: str, form: dict[str, str]) -> TokenGrant:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            redirect = self._redirect_target(form)
            return self.oauth.redeem_code(client_id, form.get("code", ""), redirect)
        if grant_type == "refresh_token":
            return self.oauth.refresh(client_id, form.get("refresh_token", ""))
        raise GrantError("unsupported_grant_type", f"grant_type {grant_type!r} not supported")

    async def _register(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        name, redirect = body.get("client_name"), body.get("redirect_url")
        if not isinstance(name, str) or not name or not isinstance(redirect, str):
            raise ApiError(400, "client_name and redirect_url are required")
        client_id, secret = self.oauth.register(name)
        reply = {"client_id": client_id, "client_secret": secret, "client_name": name}
        return self._json(reply | {"redirect_url": redirect}, 201)

    # ---- selection ----------------------------------------------------------------------

    async def _select_documents(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        callback = body.get("callback")
        url = callback.get("url") if isinstance(callback, dict) else None
        if not isinstance(url, str) or not URL(url).absolute:
            raise ApiError(400, "callback.url is required and must be an absolute URL")
        context = body.get("server_context")
        session_id = secrets.token_urlsafe(12)
        self._sessions[session_id] = _SelectSession(
            callback=url,
            server_context=context if isinstance(context, str) else None,
            extensions=_strings(body.get("supported_file_extensions")),
            expires_at=self.clock() + SELECT_URL_LIFETIME,
        )
        select_url = f"{self._base(request)}/ui/select/{session_id}"
        reply = {"select_documents_url": select_url, "expires_in": SELECT_URL_LIFETIME}
        return self._json(reply)

    async def _select_page(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        session = self._open_session(session_id, check_expiry=True)
        if self.auto_cancel:
            return self._finish(request, session, None)
        if self.auto_select is not None:
            return self._finish(request, session, list(self.auto_select))
        return _html(200, self._render_picker(session_id, session))

    async def _select_submit(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        session = self._open_session(session_id, check_expiry=False)
        params = await request.post() if request.method == "POST" else request.query
        if params.get("action") == "cancel":
            return self._finish(request, session, None)
        wanted = [str(v) for v in params.getall("document_id", [])]
        chosen = [d for d in dict.fromkeys(wanted) if self.documents.get(d) is not None]
        if not chosen:
            page = self._render_picker(session_id, session, "Select at least one document.")
            return _html(400, page)
        return self._finish(request, session, chosen)

    def _open_session(self, session_id: str, *, check_expiry: bool) -> _SelectSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise _HtmlError(404, "Unknown selection", "This selection link is not valid.")
        if session.done:
            raise _HtmlError(410, "Selection finished", "This selection was already completed.")
        if check_expiry and session.expires_at < self.clock():
            raise _HtmlError(410, "Selection expired", "This selection link has expired.")
        return session

    def _render_picker(self, session_id: str, session: _SelectSession, notice: str = "") -> str:
        listed = [d for d in self.documents if matches_extensions(d, session.extensions)]
        return select_page(
            action=f"/ui/select/{session_id}/submit",
            documents=listed,
            total=len(listed),
            client=URL(session.callback).host or "the client",
            notice=notice,
        )

    def _finish(
        self, request: web.Request, session: _SelectSession, chosen: list[str] | None
    ) -> web.Response:
        session.done = True
        callback = URL(session.callback)
        if chosen is None:
            return _redirect(302, str(callback.extend_query(user_cancelled_selection="true")))
        selection_id = secrets.token_urlsafe(12)
        context = session.server_context or DEFAULT_SERVER_CONTEXT
        self._selections[selection_id] = _Selection(tuple(chosen), context)
        selected = f"{self._links(request).api}/selections/{selection_id}"
        return _redirect(302, str(callback.extend_query({self.callback_param: selected})))

    async def _selection(self, request: web.Request) -> web.Response:
        selection = self._selections.get(request.match_info["selection_id"])
        if selection is None:
            raise ApiError(404, "selection not found")
        links = self._links(request)
        found = (self.documents.get(d) for d in selection.document_ids)
        documents = [links.version_json(d, d.latest) for d in found if d is not None]
        return self._json({"server_context": selection.server_context, "documents": documents})

    # ---- documents ----------------------------------------------------------------------

    async def _document_versions(self, request: web.Request) -> web.Response:
        self.versions_calls += 1
        body = await json_object(request)
        ids = body.get("document_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "document_ids must be a list of strings")
        since = _parse_since(body.get("since"))
        links = self._links(request)
        entries = [
            (doc, version)
            for doc in (self.documents.get(i) for i in dict.fromkeys(ids))
            if doc is not None
            for version in doc.versions
            if since is None or version.created > since
        ]
        ordered = _scramble(entries, seed=",".join(ids))
        return self._etagged(request, {"versions": [links.version_json(*e) for e in ordered]})

    def _lookup(self, request: web.Request) -> Document:
        document = self.documents.get(request.match_info["document_id"])
        if document is None:
            raise ApiError(404, "document not found")
        return document

    def _lookup_version(self, request: web.Request) -> tuple[Document, Version]:
        document = self._lookup(request)
        index = request.match_info["index"]
        version = document.version(int(index)) if index.isdigit() else None
        if version is None:
            raise ApiError(404, "document version not found")
        return document, version

    async def _document_version_list(self, request: web.Request) -> web.Response:
        document = self._lookup(request)
        links = self._links(request)
        versions = [links.version_json(document, v) for v in reversed(document.versions)]
        return self._etagged(request, {"documents": versions})

    async def _document_version(self, request: web.Request) -> web.Response:
        document, version = self._lookup_version(request)
        return self._etagged(request, self._links(request).version_json(document, version))

    async def _metadata(self, request: web.Request) -> web.Response:
        document, version = self._lookup_version(request)
        return self._etagged(request, metadata_json(document, version))

    async def _download(self, request: web.Request) -> web.Response:
        document, version = self._lookup_version(request)
        data_type = version.content_type
        if self.direct_download:
            content = version.content(document.document_id)
            return bytes_response(request, content, name=version.name, content_type=data_type)
        key = f"opencde/{document.document_id}/{version.index}"
        if key not in self.storage.blobs:
            content = version.content(document.document_id)
            self.storage.put(key, content, content_type=data_type, filename=version.name)
        return _redirect(self.redirect_status, self.storage.sign(key))

    async def _details(self, request: web.Request) -> web.Response:
        document = self.documents.get(request.match_info["document_id"])
        if document is None:
            return _html(404, message_page("Not found", "No such document."))
        return _html(200, details_page(document))


class _HtmlError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _errors_middleware() -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except _HtmlError as exc:
            return _html(exc.status, message_page(exc.title, exc.message))

    return errors


def _bearer_middleware(oauth: OAuthServer) -> Middleware:
    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX + "/"):
            _require_bearer(oauth, request)
        return await handler(request)

    return bearer


def _require_bearer(oauth: OAuthServer, request: web.Request) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    problem = "missing bearer token" if scheme.lower() != "bearer" or not token else None
    problem = problem or oauth.access_problem(token.strip())
    if problem is not None:
        challenge = f'Bearer error="invalid_token", error_description="{problem}"'
        raise ApiError(401, problem, {"WWW-Authenticate": challenge})


def _scramble(entries: list[Any], *, seed: str) -> list[Any]:
    """Shuffle deterministically, then make sure no document's newest entry comes last.

    A client that keeps "the last one seen" instead of the highest version_index fails.
    """
    shuffled = list(entries)
    random.Random(seed).shuffle(shuffled)
    by_doc: dict[str, list[int]] = {}
    for position, (doc, _) in enumerate(shuffled):
        by_doc.setdefault(doc.document_id, []).append(position)
    for positions in by_doc.values():
        if len(positions) < 2:
            continue
        newest = max(positions, key=lambda p: shuffled[p][1].index)
        if newest == positions[-1]:
            first = positions[0]
            shuffled[first], shuffled[newest] = shuffled[newest], shuffled[first]
    return shuffled


def _strings(value: object) -> tuple[str, ...]:
    """The strings in a JSON list; anything else counts as empty."""
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _parse_since(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "since must be an RFC 3339 date-time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(400, "since must be an RFC 3339 date-time") from exc
    if moment.tzinfo is None:  # the spec: without a zone, assume UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _html(status: int, page: str) -> web.Response:
    return web.Response(status=status, text=page, content_type="text/html")


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})
