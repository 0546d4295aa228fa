"""Standard Metrics sandbox: OAuth client-credentials, paged listing, signed downloads, throttling.

Faithful to the public Standard Metrics API documentation (seed 004, API-NOTES section 4):

- `POST /o/token/` at the host root: HTTP Basic `client_id:client_secret` (the form fields
  `client_id`/`client_secret` are accepted too, as django-oauth-toolkit does) and
  `grant_type=client_credentials` -> `{"access_token","expires_in","token_type","scope"}`.
- `GET /v1/documents/`: Django REST framework page-number paging with absolute `next` and
  `previous` links, `page_size` clamped to 100, filters `company_id`, `parse_state`,
  `source` and `from`/`to` (ISO 8601, inclusive, on `uploaded_at`).
- `GET /v1/documents/{id}/download/`: 302 to a storage URL signed for one hour.
- Every `/v1` call needs `Authorization: Bearer <token>`. The status of a missing, unknown
  or expired token is not documented: DRF answers 401 with `WWW-Authenticate: Bearer` when
  the first authentication class is django-oauth-toolkit's, and 403 without a challenge
  when it is one that has none (SessionAuthentication, the web app's); `refused_status`.
- "User must have access to the document": `forbid_document` makes a download answer
  DRF's 403 PermissionDenied for a token that is otherwise good.
- Throttling, as the documentation's three limits say: `requests_per_minute` over a sliding
  window that counts every request, token calls included (120, or 500 on another page),
  and `per_token_limit` requests per bearer token in a few seconds (30 in 10). A 429 has
  a `Retry-After` header only with `retry_after` (the documentation never mentions one).
- Empty fields are null in DRF style, or absent (`null_fields`).

Each reading above is a keyword whose default is the least the documentation promises (all
three limits at once, no Retry-After, absent fields, 403 for a dead token); `RICH` holds
the friendliest.

Listing-only documents (the 100,000-document benchmark) hold no bytes in storage: the first
download of one stores a tiny body generated from its id (see `content`) and redirects to it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import math
import mimetypes
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypedDict
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from agent.sandbox.server import (
    FaultPlan,
    Handler,
    RequestLog,
    Served,
    fault_middleware,
    json_body,
    recording_middleware,
)
from agent.sandbox.standard_metrics_demo import populate_demo
from agent.sandbox.storage import StorageHost

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100
SIGNED_URL_TTL = 3600.0
STORAGE_PREFIX = "standard-metrics"


_BENCH_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
_NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
_INVALID_TOKEN = {"detail": "Invalid token."}
_INVALID_PAGE = {"detail": "Invalid page."}
_NOT_FOUND = {"detail": "Not found."}
_NO_PERMISSION = {"detail": "You do not have permission to perform this action."}
_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}


@dataclass(slots=True)
class SandboxDocument:
    """One document as the sandbox holds it; `storage_key` is None for listing-only ones."""

    id: str
    name: str
    company_id: str
    uploaded_at: datetime
    parse_state: str = "parsed"
    parsed_at: datetime | None = None
    source: str = "upload"
    submitted_date: str | None = None
    link: str | None = None
    storage_key: str | None = None
    version: int = 1

    def to_json(self) -> dict[str, object]:
        """The document as the listing endpoint serialises it."""
        return {
            "id": self.id,
            "name": self.name,
            "link": self.link,
            "company_id": self.company_id,
            "information_request_id": None,
            "parse_state": self.parse_state,
            "parsed_at": _iso(self.parsed_at) if self.parsed_at else None,
            "uploaded_at": _iso(self.uploaded_at),
            "source": self.source,
            "submitted_date": self.submitted_date,
        }


@dataclass(frozen=True, slots=True)
class _Filters:
    company_id: str | None
    parse_state: str | None
    source: str | None
    since: datetime | None
    until: datetime | None

    def empty(self) -> bool:
        return self == _NO_FILTERS

    def accept(self, doc: SandboxDocument) -> bool:
        return (
            (self.company_id is None or doc.company_id == self.company_id)
            and (self.parse_state is None or doc.parse_state == self.parse_state)
            and (self.source is None or doc.source == self.source)
            and (self.since is None or doc.uploaded_at >= self.since)
            and (self.until is None or doc.uploaded_at <= self.until)
        )


_NO_FILTERS = _Filters(None, None, None, None, None)


class _BadFilter(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class StandardMetricsKnobs(TypedDict, total=False):
    """The constructor keywords of `StandardMetricsSandbox` that choose a documented reading."""

    requests_per_minute: int | None
    per_token_limit: tuple[int, float] | None
    retry_after: bool
    null_fields: bool
    refused_status: int


DOCUMENTED_PER_TOKEN_LIMIT: Final = (30, 10.0)  # "30 requests in 10 seconds per bearer token"

# Every knob at its friendliest documented reading (the defaults are the least promised).
RICH: Final[StandardMetricsKnobs] = {
    "requests_per_minute": None,
    "per_token_limit": None,
    "retry_after": True,
    "null_fields": True,
    "refused_status": 401,
}


class StandardMetricsSandbox(Served):
    """An in-memory Standard Metrics API on loopback, with its downloads on a `StorageHost`."""

    def __init__(
        self,
        storage: StorageHost,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",  # noqa: S107 - a fake credential for a fake server
        token_lifetime: int = 3600,
        requests_per_minute: int | None = 120,
        per_token_limit: tuple[int, float] | None = DOCUMENTED_PER_TOKEN_LIMIT,
        retry_after: bool = False,
        null_fields: bool = False,
        refused_status: int = 403,
        rate_window: float = 60.0,
        redirect_to: Callable[[str, str], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.requests_per_minute = requests_per_minute
        self.per_token_limit = per_token_limit
        self.retry_after = retry_after
        self.null_fields = null_fields
        if refused_status not in (401, 403):
            raise ValueError(f"refused_status must be 401 or 403, not {refused_status}")
        self.refused_status = refused_status
        self.forbidden: set[str] = set()  # documents the client may not download
        self.rate_window = rate_window
        self.redirect_to = redirect_to
        self.clock = clock
        self.log = RequestLog()
        self.faults = FaultPlan()
        self.base_url = ""
        self.tokens_issued = 0
        self.throttled = 0
        self.request_times: list[float] = []  # by `clock`, every request, in arrival order
        self._tokens: dict[str, float] = {}  # token -> expiry by `clock`
        self._allowed = _Window()  # requests let through the throttle
        self._per_token: dict[str, _Window] = {}
        self._docs: dict[str, SandboxDocument] = {}
        self._order: list[str] = []  # upload order; the listing order
        self._sequence = 0
        self._version = 0  # bumped on every change, to invalidate the filter cache
        self._cache: tuple[_Filters, int, list[str]] | None = None
        self._app: web.Application | None = None

    # ---- serving -------------------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        if self._app is None:
            middlewares: list[Middleware] = [
                recording_middleware(self.log),
                self._arrival_middleware(),
                fault_middleware(self.faults),
                self._throttle_middleware(),
            ]
            app = web.Application(middlewares=middlewares)
            app.router.add_post("/o/token/", self._token)
            app.router.add_get("/v1/documents/", self._list)
            app.router.add_get("/v1/documents/{doc_id}/download/", self._download)
            self._app = app
        return self._app

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/o/token/"

    # ---- tokens --------------------------------------------------------------------------

    def issue_token(self) -> str:
        """Mint a bearer token valid for `token_lifetime` seconds by the clock."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.clock() + self.token_lifetime
        self.tokens_issued += 1
        return token

    def expire_all_tokens(self) -> None:
        """Invalidate every token issued so far; the next /v1 call with one is refused."""
        self._tokens.clear()

    def token_is_valid(self, token: str) -> bool:
        expiry = self._tokens.get(token)
        return expiry is not None and self.clock() < expiry

    # ---- documents -----------------------------------------------------------------------

    def add_document(
        self,
        name: str,
        data: bytes,
        *,
        company_id: str = "demo-co",
        uploaded_at: datetime | None = None,
        parse_state: str = "parsed",
        source: str = "upload",
        link: str | None = None,
    ) -> str:
        """Store a document with bytes and return its id; it goes last in the listing."""
        when = _aware(uploaded_at) if uploaded_at else self._now()
        doc = SandboxDocument(
            id=self._next_id(),
            name=name,
            company_id=company_id,
            uploaded_at=when,
            parse_state=parse_state,
            parsed_at=when + timedelta(minutes=3) if parse_state == "parsed" else None,
            source=source,
            submitted_date=when.date().isoformat(),
            link=link,
        )
        self._store(doc, data)
        self._insert(doc)
        return doc.id

    def update_document(self, doc_id: str, data: bytes) -> None:
        """Replace a document's bytes: new storage key and ETag, a later `uploaded_at`."""
        doc = self._docs[doc_id]
        doc.version += 1
        doc.uploaded_at = max(self._now(), doc.uploaded_at + timedelta(seconds=1))
        if doc.parsed_at is not None:
            doc.parsed_at = doc.uploaded_at + timedelta(minutes=3)
        self._store(doc, data)
        self._version += 1

    def rename_document(self, doc_id: str, new_name: str) -> None:
        """Change a document's name only; `uploaded_at` and the bytes stay as they were."""
        self._docs[doc_id].name = new_name
        self._version += 1

    def forbid_document(self, doc_id: str) -> None:
        """The client loses access to one document: its download answers 403."""
        self.forbidden.add(doc_id)

    def remove_document(self, doc_id: str) -> None:
        del self._docs[doc_id]
        self._order.remove(doc_id)
        self._version += 1

    def add_listing_only(self, n: int, *, company_id: str = "bench-co") -> list[str]:
        """Add `n` documents with no stored bytes, cheaply (100,000 in well under a second)."""
        ids: list[str] = []
        base = self._sequence
        for i in range(n):
            when = _BENCH_EPOCH + timedelta(seconds=base + i)
            doc = SandboxDocument(
                id=self._next_id(),
                name=f"report-{base + i:06d}.pdf",
                company_id=company_id,
                uploaded_at=when,
                parsed_at=when + timedelta(minutes=3),
                submitted_date=when.date().isoformat(),
            )
            self._docs[doc.id] = doc
            ids.append(doc.id)
        self._order.extend(ids)
        self._version += 1
        return ids

    def populate_demo(self, n: int = 36, seed: int = 0) -> list[str]:
        """Add `n` deterministic documents of varied sizes, with awkward and duplicate names."""
        return populate_demo(self, n, seed)

    def document(self, doc_id: str) -> SandboxDocument:
        return self._docs[doc_id]

    def document_ids(self) -> list[str]:
        """Every document id, in listing order."""
        return list(self._order)

    def content(self, doc_id: str) -> bytes:
        """The bytes a download of `doc_id` yields (generated for listing-only documents)."""
        doc = self._docs[doc_id]
        if doc.storage_key is None:
            return _listing_only_body(doc)
        return self.storage.blobs[doc.storage_key].data

    def __len__(self) -> int:
        return len(self._order)

    # ---- request accounting --------------------------------------------------------------

    def max_requests_in_window(self, seconds: float = 60.0) -> int:
        """The most requests (throttled ones included) that arrived in any `seconds` window."""
        times = sorted(self.request_times)
        best = 0
        for i, start in enumerate(times):
            best = max(best, bisect.bisect_left(times, start + seconds, lo=i) - i)
        return best

    # ---- middlewares ---------------------------------------------------------------------

    def _arrival_middleware(self) -> Middleware:
        @web.middleware
        async def arrivals(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.request_times.append(self.clock())
            return await handler(request)

        return arrivals

    def _throttle_middleware(self) -> Middleware:
        @web.middleware
        async def throttle(request: web.Request, handler: Handler) -> web.StreamResponse:
            refusal = self._throttle(_bearer(request))
            return refusal if refusal is not None else await handler(request)

        return throttle

    def _throttle(self, token: str | None) -> web.Response | None:
        """A 429 when a documented limit is reached, else None (and the request counts)."""
        now = self.clock()
        windows: list[tuple[_Window, int, float]] = []
        if self.requests_per_minute is not None:
            windows.append((self._allowed, self.requests_per_minute, self.rate_window))
        if self.per_token_limit is not None and token:
            limit, seconds = self.per_token_limit
            windows.append((self._per_token.setdefault(token, _Window()), limit, seconds))
        wait = max((w.wait(now, limit, secs) for w, limit, secs in windows), default=0.0)
        if wait <= 0:
            for window, _, _ in windows:
                window.times.append(now)
            return None
        self.throttled += 1
        if not self.retry_after:
            return json_body({"detail": "Request was throttled."}, 429)
        seconds = max(1, math.ceil(wait))
        detail = f"Request was throttled. Expected available in {seconds} second"
        detail += "s." if seconds != 1 else "."
        return json_body({"detail": detail}, 429, {"Retry-After": str(seconds)})

    # ---- handlers ------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return json_body({"error": "unsupported_grant_type"}, 400, _NO_STORE)
        client_id, client_secret = _client_credentials(request, form)
        if not (
            hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        ):
            return json_body({"error": "invalid_client"}, 401, _NO_STORE)
        body = {
            "access_token": self.issue_token(),
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": "read write",
        }
        return json_body(body, 200, _NO_STORE)

    async def _list(self, request: web.Request) -> web.Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        try:
            selection = self._select(_parse_filters(request.query))
        except _BadFilter as exc:
            return json_body(exc.errors, 400)
        size = _page_size(request.query.get("page_size"))
        number = _page_number(request.query.get("page", "1"), len(selection), size)
        if number is None:
            return json_body(_INVALID_PAGE, 404)
        start = (number - 1) * size
        more = start + size < len(selection)
        return json_body(
            {
                "count": len(selection),
                "next": _page_link(request.url, number + 1) if more else None,
                "previous": _page_link(request.url, number - 1) if number > 1 else None,
                "results": [self._document_json(i) for i in selection[start : start + size]],
            }
        )

    async def _download(self, request: web.Request) -> web.Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        doc = self._docs.get(request.match_info["doc_id"])
        if doc is None:
            return json_body(_NOT_FOUND, 404)
        if doc.id in self.forbidden:
            return json_body(_NO_PERMISSION, 403)
        if self.redirect_to is not None:
            location = self.redirect_to(doc.id, doc.name)
        else:
            if doc.storage_key is None:
                self._store(doc, _listing_only_body(doc))
            assert doc.storage_key is not None
            location = self.storage.sign(doc.storage_key, ttl=SIGNED_URL_TTL)
        return web.Response(
            status=302, headers={"Location": location}, content_type="text/html", charset="utf-8"
        )

    def _document_json(self, doc_id: str) -> dict[str, object]:
        """A listed document; empty fields are null, or absent unless `null_fields`."""
        data = self._docs[doc_id].to_json()
        return data if self.null_fields else {k: v for k, v in data.items() if v is not None}

    def _authenticate(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._refuse(_NO_CREDENTIALS)
        if not self.token_is_valid(token.strip()):
            return self._refuse(_INVALID_TOKEN)
        return None

    def _refuse(self, detail: Mapping[str, str]) -> web.Response:
        """DRF's NotAuthenticated: 401 with a Bearer challenge, or 403 without one."""
        if self.refused_status == 401:
            return json_body(detail, 401, _BEARER_CHALLENGE)
        return json_body(detail, 403)

    # ---- internals -----------------------------------------------------------------------

    def _select(self, filters: _Filters) -> Sequence[str]:
        if filters.empty():
            return self._order
        if self._cache is not None and self._cache[:2] == (filters, self._version):
            return self._cache[2]
        chosen = [i for i in self._order if filters.accept(self._docs[i])]
        self._cache = (filters, self._version, chosen)
        return chosen

    def _store(self, doc: SandboxDocument, data: bytes) -> None:
        key = f"{STORAGE_PREFIX}/{doc.id}/v{doc.version}"
        content_type = mimetypes.guess_type(doc.name)[0] or "application/octet-stream"
        self.storage.put(key, data, content_type=content_type, filename=_header_filename(doc.name))
        doc.storage_key = key

    def _insert(self, doc: SandboxDocument) -> None:
        self._docs[doc.id] = doc
        self._order.append(doc.id)
        self._version += 1

    def _next_id(self) -> str:
        while True:
            self._sequence += 1
            digest = hashlib.blake2b(f"sm-doc:{self._sequence}".encode(), digest_size=10).digest()
            doc_id = base64.b32encode(digest).decode().lower()
            if doc_id not in self._docs:
                return doc_id

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class _Window:
    """Times of the requests a sliding window let through."""

    times: deque[float] = field(default_factory=deque)

    def wait(self, now: float, limit: int, seconds: float) -> float:
        """Seconds until one more request fits (0: it fits now)."""
        while self.times and self.times[0] <= now - seconds:
            self.times.popleft()
        return 0.0 if len(self.times) < limit else self.times[0] + seconds - now


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _client_credentials(request: web.Request, form: Mapping[str, object]) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, client_secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(client_secret)  # RFC 6749 section 2.3.1
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if isinstance(form_id, str) and isinstance(form_secret, str):
        return form_id, form_secret
    return "", ""


def _parse_filters(query: Mapping[str, str]) -> _Filters:
    errors: dict[str, list[str]] = {}
    bounds: dict[str, datetime | None] = {"from": None, "to": None}
    for key in bounds:
        raw = query.get(key)
        if raw:
            try:
                bounds[key] = _aware(datetime.fromisoformat(raw.strip()))
            except ValueError:
                errors[key] = ["Enter a valid date/time."]
    if errors:
        raise _BadFilter(errors)
    return _Filters(
        company_id=query.get("company_id") or None,
        parse_state=query.get("parse_state") or None,
        source=query.get("source") or None,
        since=bounds["from"],
        until=bounds["to"],
    )


def _page_size(raw: str | None) -> int:
    """DRF semantics: a positive integer, clamped to the maximum; anything else -> default."""
    try:
        size = int(raw) if raw is not None else DEFAULT_PAGE_SIZE
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE) if size > 0 else DEFAULT_PAGE_SIZE


def _page_number(raw: str, count: int, size: int) -> int | None:
    """Django paginator semantics: 1-based, page 1 always exists, `last` allowed."""
    pages = max(1, math.ceil(count / size))
    if raw == "last":
        return pages
    try:
        number = int(raw)
    except ValueError:
        return None
    return number if 1 <= number <= pages else None


def _page_link(url: URL, number: int) -> str:
    """DRF's links: the request URL with `page` replaced, or removed for page 1."""
    if number == 1:
        return str(url.without_query_params("page"))
    return str(url.update_query(page=str(number)))


def _iso(value: datetime) -> str:
    """DRF's datetime rendering: ISO 8601, UTC written as `Z`."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _header_filename(name: str) -> str | None:
    """The name for the storage host's Content-Disposition, when it fits a quoted string."""
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return name
    return None


def _listing_only_body(doc: SandboxDocument) -> bytes:
    return f"listing-only document {doc.id} v{doc.version}\n".encode()
