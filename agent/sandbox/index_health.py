"""Index Health documents API sandbox: in-memory documents served over loopback HTTP.

Faithful to the public documentation (seeds 001 and 003, API-NOTES section 2):

- ``POST /generate-client-auth-token`` issues JWT-like bearer tokens. The success body
  has two documented shapes, chosen by ``token_key`` and ``status_key``.
- ``POST /get-plans``, ``POST /get-documents``, ``POST /get-document-details`` and
  ``POST /download`` take JSON bodies and answer ``{"statusCode", "data", "message"}``.
- ``GET /download/{document_id}`` streams the bytes with Range/If-Range support.
- Every error body carries ``statusCode``; with ``errors_as_http_status=False`` every
  response is HTTP 200 and only the body tells the error, as some deployments do.

The sandbox never imports anything from ``agent/`` outside ``agent/sandbox/``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

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

_OKAY: Final = "OKAY"
_UNAUTHORIZED: Final = "UNAUTHORIZED"
_NOT_FOUND: Final = "Document not found"
_NO_FILE_PATH: Final = "Document has no file path"
_ID_REQUIRED: Final = "Document ID is required"
_IDENTITY_FIELDS: Final = ("date_of_birth", "email", "uid", "eid")

_TYPE_BY_EXTENSION: Final = {".pdf": "PDF", ".docx": "DOCX", ".txt": "TXT"} | dict.fromkeys(
    (".png", ".jpg", ".jpeg", ".gif"), "IMG"
)
_EXTENSION_BY_TYPE: Final = {
    "PDF": ".pdf",
    "DOCX": ".docx",
    "TXT": ".txt",
    "IMG": ".png",
    "OTHER": ".bin",
}
_CONTENT_TYPES: Final = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}
_PLAN_COLORS: Final = ("#FF5733", "#33A1FF", "#2ECC71", "#9B59B6", "#F1C40F", "#E67E22")
_ID_NAMESPACE: Final = uuid.UUID("6f1c3a52-5d7e-4b8e-9a43-1d2f0c9e7b10")
_EXTENSION_RE: Final = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_RANGE_RE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")


# --------------------------------------------------------------------------- pure helpers


class UnsatisfiableRangeError(Exception):
    """The Range header is well formed but selects no byte of the representation."""


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the inclusive ``(first, last)`` byte positions a single-range header selects.

    ``None`` means the header is to be ignored (malformed, or several ranges, which this
    S3-like server does not support), so the whole body is sent with 200.
    Raises ``UnsatisfiableRangeError`` when a 416 is due.
    """
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise UnsatisfiableRangeError(header)
        return max(size - suffix, 0), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise UnsatisfiableRangeError(header)
    return first, min(last, size - 1)


def iso_timestamp(seconds: float) -> str:
    """Format epoch seconds the way the (Node-based) API does: ``2024-01-15T10:30:00.000Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def extension_of(name: str) -> str:
    """Lower-cased extension of a file name, with its dot, or ``""`` when it has none."""
    match = _EXTENSION_RE.search(name)
    return match.group(0).lower() if match else ""


def content_type_for(file_name: str) -> str:
    """MIME type the server sends for a file name (by extension)."""
    return _CONTENT_TYPES.get(extension_of(file_name), "application/octet-stream")


def content_disposition(file_name: str) -> str:
    """``attachment; filename="..."``, with an RFC 5987 ``filename*`` for non-ASCII names."""
    ascii_name = file_name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    quoted = ascii_name.replace("\\", "\\\\").replace('"', '\\"')
    value = f'attachment; filename="{quoted}"'
    if ascii_name != file_name:
        value += f"; filename*=UTF-8''{quote(file_name, safe='')}"
    return value


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "document"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


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


@dataclass
class _Tokens:
    lifetime: float
    clock: Callable[[], float]
    key: bytes = field(default_factory=lambda: os.urandom(32))
    expiries: dict[str, float] = field(default_factory=dict)
    issued: int = 0

    def issue(self, client_id: str, fingerprint: str) -> str:
        now = self.clock()
        self.issued += 1
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": client_id,
            "fingerprint": fingerprint,
            "iat": int(now),
            "exp": int(now + self.lifetime),
            "jti": self.issued,
        }
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256)
        token = f"{header}.{payload}.{_b64url(signature.digest())}"
        self.expiries[token] = now + self.lifetime
        return token

    def valid(self, token: str) -> bool:
        expiry = self.expiries.get(token)
        return expiry is not None and self.clock() < expiry


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
        token_lifetime: float = 3600.0,
        errors_as_http_status: bool = True,
        root_group: bool = False,
        presign_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token_key not in TOKEN_KEYS:
            raise ValueError(f"token_key must be one of {TOKEN_KEYS}, not {token_key!r}")
        if status_key not in STATUS_KEYS:
            raise ValueError(f"status_key must be one of {STATUS_KEYS}, not {status_key!r}")
        self._storage = storage
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_key = token_key
        self._status_key = status_key
        self._errors_as_http_status = errors_as_http_status
        self._root_group = root_group
        self._presign_ttl = presign_ttl
        self._clock = clock
        self._tokens = _Tokens(lifetime=token_lifetime, clock=clock)
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

    def expire_all_tokens(self) -> None:
        """Make every token issued so far answer 403 UNAUTHORIZED."""
        for token in self._tokens.expiries:
            self._tokens.expiries[token] = float("-inf")

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

    # ----------------------------------------------------------------- demo data

    def populate_demo(self, n: int = 36, seed: int = 0) -> list[str]:
        """Add two collections and ``n`` deterministic documents; return their ids.

        About one in seven is URL-based, one in five has a name without extension, and
        timestamps lie in the past month. Content is small (under 4 KiB each).
        """
        rng = random.Random(seed)
        collections = [
            self.add_collection("Clinical Guidelines"),
            self.add_collection("Operations"),
        ]
        base = self._clock() - 30 * 86400.0
        step = min(3600.0, 15 * 86400.0 / max(n, 1))  # all created in the first half-month
        return [
            self._demo_document(rng, index, collections[index % 2], base + index * step)
            for index in range(n)
        ]

    def _demo_document(
        self, rng: random.Random, index: int, collection_id: str, created_at: float
    ) -> str:
        kind = DOCUMENT_TYPES[index % 4]
        topic = f"{rng.choice(_DEMO_ADJECTIVES)} {rng.choice(_DEMO_NOUNS)} {index:03d}"
        extension = _EXTENSION_BY_TYPE[kind]
        tags = rng.sample(_DEMO_TAGS, k=rng.randint(0, 3))
        if index % 7 == 6:
            doc_id = self.add_document(
                collection_id,
                topic,
                None,
                url=f"https://example.org/guides/{_slug(topic)}",
                description=f"External page about {topic.lower()}",
                doc_type="OTHER",
                tags=tags,
            )
        else:
            name = topic if index % 5 == 4 else topic + extension
            data = _demo_bytes(rng, kind, topic)
            doc_id = self.add_document(
                collection_id,
                name,
                data,
                file_path=f"docs/{index:03d}-{_slug(topic)}{extension}",
                doc_type=kind,
                priority=rng.choice(("low", "normal", "high")),
                tags=tags,
            )
        doc = self._documents[doc_id]
        doc.created_at = created_at
        doc.updated_at = created_at + rng.randint(0, 14) * 86400.0
        doc.avg_progress = rng.randint(0, 100)
        return doc_id

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
        # Optional fields are absent, not null, as JSON.stringify drops undefined values.
        return {key: value for key, value in entry.items() if value is not None}

    def _details_entry(self, doc: _Document) -> dict[str, Any]:
        entry = self._listing_entry(doc)
        entry["associated_plans"] = [
            {"plan_id": plan.plan_id, "plan_name": plan.plan_name, "color": plan.color}
            for plan in self._plans.values()
            if plan.collection_id == doc.collection_id
        ]
        return entry

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
            if scheme.lower() != "bearer" or not self._tokens.valid(token.strip()):
                return self._error(403, _UNAUTHORIZED)
            return await handler(request)

        return guarded

    # ----------------------------------------------------------------- handlers

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        user = body.get("user")
        self.auth_requests.append(
            AuthRequest(self._clock(), body.get("client_id"), body.get("fingerprint"), user)
        )
        problem = _missing_auth_field(body, root_group=self._root_group)
        if problem is not None:
            return self._error(400, problem)
        good_id = hmac.compare_digest(str(body["client_id"]), self._client_id)
        good_secret = hmac.compare_digest(str(body["client_secret"]), self._client_secret)
        if not (good_id and good_secret):
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
        collection_id = (await _json_body(request)).get("collection_id")
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
        document_id = (await _json_body(request)).get("document_id")
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
        document_id = (await _json_body(request)).get("document_id")
        found = self._downloadable(document_id, "Failed to generate download URL")
        if isinstance(found, web.Response):
            return found
        url = self._storage.sign(_storage_key(found.document_id), ttl=self._presign_ttl)
        return self._ok({"download_url": url})

    async def _handle_download_bytes(self, request: web.Request) -> web.StreamResponse:
        found = self._downloadable(request.match_info["document_id"], "Failed to download document")
        if isinstance(found, web.Response):
            return found
        return _file_response(request, found)


# --------------------------------------------------------------------------- module helpers


def _storage_key(document_id: str) -> str:
    return f"index-health/{document_id}"


def _default_file_path(name: str, doc_type: str) -> str:
    extension = extension_of(name)
    stem = name[: -len(extension)] if extension else name
    return f"documents/{_slug(stem)}{extension or _EXTENSION_BY_TYPE[doc_type]}"


def _failure_message(status: int, server_fault: str) -> str:
    messages = {403: _UNAUTHORIZED, 435: _NO_FILE_PATH, 437: _NOT_FOUND, 500: server_fault}
    return messages.get(status, server_fault)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body; like express.json(), anything else reads as ``{}``."""
    if request.content_type != "application/json":
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _missing_auth_field(body: Mapping[str, Any], *, root_group: bool) -> str | None:
    """The 400 message for a token request that lacks a required field, else ``None``."""
    for key in ("client_id", "client_secret", "fingerprint"):
        if not body.get(key):
            return f"{key} is required"
    user = body.get("user")
    if not isinstance(user, dict):
        return "user is required"
    for key in ("first_name", "last_name"):
        if not user.get(key):
            return f"user.{key} is required"
    if not any(user.get(key) for key in _IDENTITY_FIELDS):
        return "user needs one of date_of_birth, email, uid or eid"
    if not root_group and not user.get("group_name"):
        return "user.group_name is required for clients outside the root group"
    return None


def _file_response(request: web.Request, doc: _Document) -> web.Response:
    """200 with the whole file, or 206/416 when a Range applies (If-Range must match)."""
    assert doc.data is not None
    assert doc.etag is not None
    data, size = doc.data, len(doc.data)
    headers = {
        "Content-Type": content_type_for(doc.download_name),
        "Content-Disposition": content_disposition(doc.download_name),
        "Cache-Control": "no-cache",
        "Accept-Ranges": "bytes",
        "ETag": doc.etag,
    }
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header is None or (if_range is not None and if_range.strip() != doc.etag):
        return web.Response(body=data, headers=headers)
    try:
        selected = parse_byte_range(range_header, size)
    except UnsatisfiableRangeError:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    if selected is None:
        return web.Response(body=data, headers=headers)
    first, last = selected
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return web.Response(status=206, body=data[first : last + 1], headers=headers)


_DEMO_ADJECTIVES: Final = ("Quarterly", "Annual", "Clinical", "Patient", "Staff", "Pharmacy")
_DEMO_NOUNS: Final = ("report", "guideline", "checklist", "protocol", "summary", "handbook")
_DEMO_TAGS: Final = ["important", "reference", "draft", "audit", "training", "policy"]


def _demo_bytes(rng: random.Random, kind: str, topic: str) -> bytes:
    headers = {
        "PDF": b"%PDF-1.4\n",
        "DOCX": b"PK\x03\x04",
        "IMG": b"\x89PNG\r\n\x1a\n",
    }
    body = f"{topic}\n".encode() * rng.randint(4, 60)
    if kind == "TXT":
        return body
    return headers[kind] + body + rng.randbytes(rng.randint(16, 512))
