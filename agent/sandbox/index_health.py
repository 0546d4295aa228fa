"""Index Health documents API sandbox: in-memory documents served over loopback HTTP.

Faithful to the public documentation (seeds 001 and 003, API-NOTES section 2):

- ``POST /generate-client-auth-token`` issues JWT-like bearer tokens. The success body
  has two documented shapes, chosen by ``token_key`` and ``status_key``. A token's
  lifetime is undocumented: here it dies after ``token_lifetime`` seconds or
  ``token_uses`` accepted calls, whichever comes first (``index_health_tokens``).
- ``POST /get-plans``, ``POST /get-documents``, ``POST /get-document-details`` and
  ``POST /download`` take JSON bodies and answer ``{"statusCode", "data", "message"}``.
- ``GET /download/{document_id}`` streams the bytes with Range/If-Range support.
- Every error body carries ``statusCode``; with ``errors_as_http_status=False`` every
  response is HTTP 200 and only the body tells the error, as some deployments do.
- Fields the documentation marks optional are left out (``optional_fields="omitted"``),
  present when they have a value (``"present"``) or present and null (``"null"``).
- The Content-Type of an error on ``GET /download/{id}`` is not documented: with
  ``download_error_type="document"`` an error about a known document comes typed as its
  file (``Content-Type`` and ``Content-Disposition``), as an Express handler that set the
  file's headers before it failed sends it (``res.json`` keeps a Content-Type already
  set); with ``"json"`` it is ``application/json``.

Each keyword above is a documented ambiguity; its default is the least the documentation
promises and ``RICH`` holds the friendliest reading (docs/conformance.md). The sandbox
never imports anything from ``agent/`` outside ``agent/sandbox/``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypedDict

from aiohttp import web

from agent.sandbox.index_health_demo import populate_demo
from agent.sandbox.index_health_http import (
    EXTENSION_BY_TYPE,
    content_disposition,
    content_type_for,
    extension_of,
    file_response,
    iso_timestamp,
    json_object,
    missing_auth_field,
    slug,
)
from agent.sandbox.index_health_tokens import TokenIssuer, TokenLedger
from agent.sandbox.server import (
    FaultPlan,
    RequestLog,
    Served,
    fault_middleware,
    json_body,
    recording_middleware,
)
from agent.sandbox.storage import StorageHost

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DOCUMENT_TYPES: Final = ("PDF", "DOCX", "TXT", "IMG", "OTHER")
TOKEN_KEYS: Final = ("auth_token", "access_token")
STATUS_KEYS: Final = ("status", "statusCode")
OPTIONAL_FIELDS: Final = ("omitted", "present", "null")
DOWNLOAD_ERROR_TYPES: Final = ("document", "json")
# Optional listing fields that say nothing about whether the document has a file.
_OPTIONAL: Final = (
    "document_description",
    "document_type",
    "document_priority",
    "document_tags",
    "collection_name",
    "avg_progress",
)


class IndexHealthKnobs(TypedDict, total=False):
    """The constructor keywords of `IndexHealthSandbox` that choose a documented reading."""

    token_key: str
    status_key: str
    token_lifetime: float
    token_uses: int | None
    errors_as_http_status: bool
    optional_fields: str
    download_error_type: str


# Every knob at its friendliest documented reading (the defaults are the least promised).
RICH: Final[IndexHealthKnobs] = {
    "token_key": "access_token",
    "status_key": "statusCode",
    "token_lifetime": 3600.0,
    "token_uses": None,
    "errors_as_http_status": True,
    "optional_fields": "present",
    "download_error_type": "json",
}

_OKAY: Final = "OKAY"
_UNAUTHORIZED: Final = "UNAUTHORIZED"
_NOT_FOUND: Final = "Document not found"
_NO_FILE_PATH: Final = "Document has no file path"
_ID_REQUIRED: Final = "Document ID is required"

_TYPE_BY_EXTENSION: Final = {".pdf": "PDF", ".docx": "DOCX", ".txt": "TXT"} | dict.fromkeys(
    (".png", ".jpg", ".jpeg", ".gif"), "IMG"
)
_PLAN_COLORS: Final = ("#FF5733", "#33A1FF", "#2ECC71", "#9B59B6", "#F1C40F", "#E67E22")
_ID_NAMESPACE: Final = uuid.UUID("6f1c3a52-5d7e-4b8e-9a43-1d2f0c9e7b10")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class AuthRequest:
    """One body received by ``/generate-client-auth-token``, as sent (fields may be absent)."""

    time: float
    client_id: object
    fingerprint: object
    user: object


@dataclass(frozen=True)
class Plan:
    """A plan as ``/get-plans`` lists it; each is linked to one collection."""

    plan_id: str
    plan_name: str
    color: str
    collection_id: str


@dataclass
class _Document:
    document_id: str
    collection_id: str
    name: str
    data: bytes | None
    file_path: str | None
    url: str | None
    description: str | None
    doc_type: str
    priority: str | None
    tags: tuple[str, ...]
    created_at: float
    updated_at: float
    avg_progress: float = 0
    etag: str | None = None

    @property
    def download_name(self) -> str:
        """The document name, with the file path's extension added when it has none."""
        if extension_of(self.name) or not self.file_path:
            return self.name
        return self.name + extension_of(self.file_path)


@dataclass
class _Failure:
    status: int
    remaining: int


# --------------------------------------------------------------------------- sandbox


class IndexHealthSandbox(Served):
    """In-memory Index Health server: data-manipulation methods plus an aiohttp ``app``."""

    def __init__(
        self,
        storage: StorageHost,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",  # noqa: S107 -- the sandbox's public demo secret
        token_key: str = "auth_token",  # noqa: S107 -- a JSON key name, not a secret
        status_key: str = "status",
        token_lifetime: float = 10.0,
        token_uses: int | None = 5,
        errors_as_http_status: bool = False,
        optional_fields: str = "omitted",
        download_error_type: str = "document",
        root_group: bool = False,
        presign_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token_key not in TOKEN_KEYS:
            raise ValueError(f"token_key must be one of {TOKEN_KEYS}, not {token_key!r}")
        if status_key not in STATUS_KEYS:
            raise ValueError(f"status_key must be one of {STATUS_KEYS}, not {status_key!r}")
        if optional_fields not in OPTIONAL_FIELDS:
            raise ValueError(f"optional_fields must be one of {OPTIONAL_FIELDS}")
        if download_error_type not in DOWNLOAD_ERROR_TYPES:
            raise ValueError(f"download_error_type must be one of {DOWNLOAD_ERROR_TYPES}")
        self._storage = storage
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_key = token_key
        self._status_key = status_key
        self._errors_as_http_status = errors_as_http_status
        self._optional_fields = optional_fields
        self._download_error_type = download_error_type
        self._client_revoked = False
        self._root_group = root_group
        self._presign_ttl = presign_ttl
        self._clock = clock
        self._tokens = TokenIssuer(token_lifetime, token_uses, clock)
        self._collections: dict[str, str] = {}
        self._plans: dict[str, Plan] = {}
        self._documents: dict[str, _Document] = {}
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._ids_made = 0
        self.auth_requests: list[AuthRequest] = []
        self.details_calls: Counter[str] = Counter()
        self.download_calls: Counter[str] = Counter()
        self.log = RequestLog()
        self.faults = FaultPlan()
        self.base_url: str | None = None
        self._app = self._build_app()

    # ----------------------------------------------------------------- lifecycle

    @property
    def app(self) -> web.Application:
        return self._app

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[recording_middleware(self.log), fault_middleware(self.faults)]
        )
        app.router.add_post("/generate-client-auth-token", self._handle_token)
        app.router.add_post("/get-plans", self._guard(self._handle_plans))
        app.router.add_post("/get-documents", self._guard(self._handle_documents))
        app.router.add_post("/get-document-details", self._guard(self._handle_details))
        app.router.add_post("/download", self._guard(self._handle_download_url))
        app.router.add_get("/download/{document_id}", self._guard(self._handle_download_bytes))
        return app

    # ----------------------------------------------------------------- tokens

    @property
    def tokens_issued(self) -> int:
        """How many tokens ``/generate-client-auth-token`` has handed out."""
        return self._tokens.issued

    @property
    def token_ledger(self) -> TokenLedger:
        """Every call accepted or refused, per task, and every token issued."""
        return self._tokens.ledger

    def expire_all_tokens(self) -> None:
        """Make every token issued so far answer 403 UNAUTHORIZED."""
        self._tokens.expire_all()

    def revoke_client_credentials(self) -> None:
        """The client is revoked: its tokens die and the token endpoint answers 401."""
        self._client_revoked = True
        self._tokens.expire_all()

    # ----------------------------------------------------------------- data

    def _new_id(self, kind: str) -> str:
        self._ids_made += 1
        return str(uuid.uuid5(_ID_NAMESPACE, f"{kind}/{self._ids_made}"))

    def add_collection(self, name: str, *, plan_name: str | None = None) -> str:
        """Create a collection and a plan linked to it; return the collection id."""
        collection_id = self._new_id("collection")
        self._collections[collection_id] = name
        self.add_plan(plan_name or f"{name} Plan", collection_id)
        return collection_id

    def add_plan(self, plan_name: str, collection_id: str, *, color: str | None = None) -> str:
        """Add another plan linked to an existing collection; return the plan id."""
        self._require_collection(collection_id)
        plan_id = self._new_id("plan")
        chosen = color or _PLAN_COLORS[len(self._plans) % len(_PLAN_COLORS)]
        self._plans[plan_id] = Plan(plan_id, plan_name, chosen, collection_id)
        return plan_id

    def add_document(
        self,
        collection_id: str,
        name: str,
        data: bytes | None,
        *,
        file_path: str | None = None,
        url: str | None = None,
        description: str | None = None,
        doc_type: str | None = None,
        priority: str | None = None,
        tags: Iterable[str] = (),
    ) -> str:
        """Add a document; ``data=None`` with ``url`` makes a URL-based (undownloadable) one.

        ``file_path`` defaults to ``documents/<slug of name><extension>``, the extension taken
        from the name, else from ``doc_type``. ``doc_type`` defaults from that extension.
        """
        self._require_collection(collection_id)
        if data is None and file_path is not None:
            raise ValueError("a document with a file_path needs data")
        kind = self._resolve_type(doc_type, file_path or name)
        now = self._clock()
        doc = _Document(
            document_id=self._new_id("document"),
            collection_id=collection_id,
            name=name,
            data=None,
            file_path=None,
            url=url,
            description=description,
            doc_type=kind,
            priority=priority,
            tags=tuple(tags),
            created_at=now,
            updated_at=now,
        )
        if data is not None:
            doc.file_path = file_path or _default_file_path(name, kind)
            self._store(doc, data)
        self._documents[doc.document_id] = doc
        return doc.document_id

    def update_document(self, document_id: str, data: bytes) -> None:
        """Replace a document's bytes (a URL-based one becomes file-based); bumps updated_at."""
        doc = self._require_document(document_id)
        if doc.file_path is None:
            doc.file_path = _default_file_path(doc.name, doc.doc_type)
        self._store(doc, data)
        self._touch(doc)

    def rename_document(self, document_id: str, name: str) -> None:
        """Change ``document_name`` (the file path stays); bumps updated_at."""
        doc = self._require_document(document_id)
        doc.name = name
        if doc.data is not None:
            self._store(doc, doc.data)
        self._touch(doc)

    def set_tags(self, document_id: str, tags: Iterable[str]) -> None:
        """Replace ``document_tags``; bumps updated_at."""
        doc = self._require_document(document_id)
        doc.tags = tuple(tags)
        self._touch(doc)

    def set_progress(self, document_id: str, avg_progress: float) -> None:
        """Set ``avg_progress``. Progress is reader activity, so updated_at does not move."""
        self._require_document(document_id).avg_progress = avg_progress

    def remove_document(self, document_id: str) -> None:
        """Delete a document and its stored blob; URLs signed earlier then answer 404."""
        self._require_document(document_id)
        del self._documents[document_id]
        self._storage.blobs.pop(_storage_key(document_id), None)

    def fail_document(self, document_id: str, status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` download calls (POST or GET) for it answer ``status``."""
        self._failures[("download", document_id)] = _Failure(status, times)

    def fail_details(self, document_id: str, status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` ``/get-document-details`` calls for it answer ``status``."""
        self._failures[("details", document_id)] = _Failure(status, times)

    # ----------------------------------------------------------------- inspection

    @property
    def plans(self) -> list[Plan]:
        """Every plan, in creation order."""
        return list(self._plans.values())

    def collection_ids(self) -> list[str]:
        """Every collection id, in creation order."""
        return list(self._collections)

    def document_ids(self, collection_id: str | None = None) -> list[str]:
        """Document ids in creation order, optionally of one collection."""
        return [
            doc.document_id
            for doc in self._documents.values()
            if collection_id is None or doc.collection_id == collection_id
        ]

    def document_json(self, document_id: str) -> dict[str, Any]:
        """The document exactly as ``/get-documents`` lists it."""
        return self._listing_entry(self._require_document(document_id))

    def document_bytes(self, document_id: str) -> bytes | None:
        """The document's current bytes, or ``None`` for a URL-based document."""
        return self._require_document(document_id).data

    def download_name(self, document_id: str) -> str:
        """The file name the direct download announces in Content-Disposition."""
        return self._require_document(document_id).download_name

    def populate_demo(self, n: int = 36, seed: int = 0) -> list[str]:
        """Add two collections and ``n`` deterministic documents; return their ids."""
        return populate_demo(self, n, seed, self._clock())

    def backdate(self, document_id: str, created_at: float, updated_at: float) -> None:
        """Set a document's ``created_at`` and ``updated_at`` (epoch seconds)."""
        doc = self._require_document(document_id)
        doc.created_at, doc.updated_at = created_at, updated_at

    # ----------------------------------------------------------------- internals

    def _require_collection(self, collection_id: str) -> None:
        if collection_id not in self._collections:
            raise KeyError(f"unknown collection {collection_id!r}")

    def _require_document(self, document_id: str) -> _Document:
        try:
            return self._documents[document_id]
        except KeyError:
            raise KeyError(f"unknown document {document_id!r}") from None

    @staticmethod
    def _resolve_type(doc_type: str | None, file_name: str) -> str:
        if doc_type is None:
            return _TYPE_BY_EXTENSION.get(extension_of(file_name), "OTHER")
        if doc_type not in DOCUMENT_TYPES:
            raise ValueError(f"doc_type must be one of {DOCUMENT_TYPES}, not {doc_type!r}")
        return doc_type

    def _store(self, doc: _Document, data: bytes) -> None:
        doc.data = data
        doc.etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        self._storage.put(
            _storage_key(doc.document_id),
            data,
            content_type=content_type_for(doc.download_name),
            filename=doc.download_name,
        )

    def _touch(self, doc: _Document) -> None:
        """Move updated_at forward by at least a millisecond, even under a frozen clock."""
        doc.updated_at = max(self._clock(), doc.updated_at + 0.001)

    def _listing_entry(self, doc: _Document) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "document_id": doc.document_id,
            "document_name": doc.name,
            "document_description": doc.description,
            "document_type": doc.doc_type,
            "document_priority": doc.priority,
            "collection_id": doc.collection_id,
            "document_file_path": doc.file_path,
            "document_url": doc.url,
            "document_tags": list(doc.tags),
            "created_at": iso_timestamp(doc.created_at),
            "updated_at": iso_timestamp(doc.updated_at),
            "collection_name": self._collections[doc.collection_id],
            "avg_progress": doc.avg_progress,
        }
        return self._optional(entry, _OPTIONAL)

    def _optional(self, entry: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
        """Drop (or null) what the documentation lets the server leave out."""
        if self._optional_fields == "omitted":
            entry = {k: v for k, v in entry.items() if k not in optional}
        if self._optional_fields == "null":
            return entry
        # Without a value a field is absent, not null, as JSON.stringify drops undefined.
        return {key: value for key, value in entry.items() if value is not None}

    def _details_entry(self, doc: _Document) -> dict[str, Any]:
        entry = self._listing_entry(doc)
        entry["associated_plans"] = [
            {"plan_id": plan.plan_id, "plan_name": plan.plan_name, "color": plan.color}
            for plan in self._plans.values()
            if plan.collection_id == doc.collection_id
        ]
        return self._optional(entry, ("associated_plans",))

    def _take_failure(self, kind: str, document_id: str) -> int | None:
        failure = self._failures.get((kind, document_id))
        if failure is None or failure.remaining <= 0:
            return None
        failure.remaining -= 1
        return failure.status

    # ----------------------------------------------------------------- responses

    def _error(self, status: int, message: str) -> web.Response:
        body = {"statusCode": status, "data": {}, "message": message}
        return json_body(body, status=status if self._errors_as_http_status else 200)

    @staticmethod
    def _ok(data: object) -> web.Response:
        return json_body({"statusCode": 200, "data": data, "message": _OKAY})

    def _guard(self, handler: Handler) -> Handler:
        """Wrap a handler so it answers 403 UNAUTHORIZED without a live bearer token."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            task = await _task(request)
            if scheme.lower() != "bearer" or not self._tokens.spend(token.strip(), task):
                return self._error(403, _UNAUTHORIZED)
            return await handler(request)

        return guarded

    # ----------------------------------------------------------------- handlers

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        user = body.get("user")
        self.auth_requests.append(
            AuthRequest(self._clock(), body.get("client_id"), body.get("fingerprint"), user)
        )
        problem = missing_auth_field(body, root_group=self._root_group)
        if problem is not None:
            return self._error(400, problem)
        good_id = hmac.compare_digest(str(body["client_id"]), self._client_id)
        good_secret = hmac.compare_digest(str(body["client_secret"]), self._client_secret)
        if not (good_id and good_secret) or self._client_revoked:
            return self._error(401, "Invalid client credentials")
        token = self._tokens.issue(str(body["client_id"]), str(body["fingerprint"]))
        payload: dict[str, Any] = {self._status_key: 200, "data": {self._token_key: token}}
        if self._status_key == "statusCode":
            payload["message"] = _OKAY
        return json_body(payload)

    async def _handle_plans(self, _request: web.Request) -> web.StreamResponse:
        return self._ok(
            [
                {
                    "plan_id": plan.plan_id,
                    "plan_name": plan.plan_name,
                    "color": plan.color,
                    "collection_id": plan.collection_id,
                }
                for plan in self._plans.values()
            ]
        )

    async def _handle_documents(self, request: web.Request) -> web.StreamResponse:
        collection_id = (await json_object(request)).get("collection_id")
        if not isinstance(collection_id, str) or not collection_id:
            return self._error(435, "Collection ID is required")
        return self._ok(
            [
                self._listing_entry(doc)
                for doc in self._documents.values()
                if doc.collection_id == collection_id
            ]
        )

    async def _handle_details(self, request: web.Request) -> web.StreamResponse:
        document_id = (await json_object(request)).get("document_id")
        if not isinstance(document_id, str) or not document_id:
            return self._error(435, _ID_REQUIRED)
        self.details_calls[document_id] += 1
        failure = self._take_failure("details", document_id)
        if failure is not None:
            return self._error(failure, _failure_message(failure, "Failed to fetch document"))
        doc = self._documents.get(document_id)
        if doc is None:
            return self._error(437, _NOT_FOUND)
        return self._ok(self._details_entry(doc))

    def _downloadable(self, document_id: object, fault_message: str) -> _Document | web.Response:
        """The document a download call names, or the error response it gets instead."""
        if not isinstance(document_id, str) or not document_id:
            return self._error(435, _ID_REQUIRED)
        self.download_calls[document_id] += 1
        failure = self._take_failure("download", document_id)
        if failure is not None:
            return self._error(failure, _failure_message(failure, fault_message))
        doc = self._documents.get(document_id)
        if doc is None:
            return self._error(437, _NOT_FOUND)
        if doc.data is None:
            return self._error(435, _NO_FILE_PATH)
        return doc

    async def _handle_download_url(self, request: web.Request) -> web.StreamResponse:
        document_id = (await json_object(request)).get("document_id")
        found = self._downloadable(document_id, "Failed to generate download URL")
        if isinstance(found, web.Response):
            return found
        url = self._storage.sign(_storage_key(found.document_id), ttl=self._presign_ttl)
        return self._ok({"download_url": url})

    async def _handle_download_bytes(self, request: web.Request) -> web.StreamResponse:
        document_id = request.match_info["document_id"]
        found = self._downloadable(document_id, "Failed to download document")
        if isinstance(found, web.Response):
            return self._typed_as_file(found, document_id)
        assert found.data is not None
        assert found.etag is not None
        return file_response(request, found.data, found.download_name, found.etag)

    def _typed_as_file(self, error: web.Response, document_id: str) -> web.Response:
        """A direct download's error, typed as the document's file when the knob says so."""
        doc = self._documents.get(document_id)
        if self._download_error_type == "document" and doc is not None:
            error.content_type = content_type_for(doc.download_name).split(";")[0]
            error.headers["Content-Disposition"] = content_disposition(doc.download_name)
        return error


# --------------------------------------------------------------------------- module helpers


async def _task(request: web.Request) -> str:
    """What a call is about, for the token ledger: its document, else its collection."""
    body = await json_object(request)
    subject = request.match_info.get("document_id") or body.get("document_id")
    subject = subject or body.get("collection_id") or ""
    kind = "download" if request.path.startswith("/download") else request.path.strip("/")
    return f"{kind}:{subject}"


def _storage_key(document_id: str) -> str:
    return f"index-health/{document_id}"


def _default_file_path(name: str, doc_type: str) -> str:
    extension = extension_of(name)
    stem = name[: -len(extension)] if extension else name
    return f"documents/{slug(stem)}{extension or EXTENSION_BY_TYPE[doc_type]}"


def _failure_message(status: int, server_fault: str) -> str:
    messages = {403: _UNAUTHORIZED, 435: _NO_FILE_PATH, 437: _NOT_FOUND, 500: server_fault}
    return messages.get(status, server_fault)
