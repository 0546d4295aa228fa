"""A stand-in for an object store: signed, expiring URLs with Range support and fault knobs.

It plays the part of S3 or Azure Blob behind a presigned URL. It refuses (and records) any
request that carries `Authorization`, because a client must never forward its API token to
a storage host.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote

from aiohttp import web

from agent.sandbox.server import (
    FaultPlan,
    RequestLog,
    Served,
    fault_middleware,
    recording_middleware,
)

CHUNK = 64 * 1024
EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)
BAD_SIGNATURE_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
    b"<Message>The request signature we calculated does not match</Message></Error>"
)
AUTH_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>'
    b"<Message>Only one auth mechanism allowed</Message></Error>"
)


@dataclass
class Blob:
    data: bytes
    etag: str
    modified: float
    content_type: str
    filename: str | None


@dataclass
class StorageFaults:
    """Knobs for fault injection; each `*_times` counter is consumed per request."""

    cut_after: int | None = None  # drop the connection after this many body bytes
    cut_times: int = 0
    ignore_range: bool = False  # answer 200 with the whole body even to a Range request
    bytes_per_second: float | None = None  # throttle every body
    expire_times: int = 0  # answer "expired" to this many requests with valid signatures
    short_by: int = 0  # send this many bytes fewer than Content-Length promises
    short_times: int = 0
    no_length: bool = False  # send bodies chunked, announcing no Content-Length


@dataclass
class _Range:
    start: int
    end: int  # inclusive


@dataclass
class StorageHost(Served):
    """An object store on loopback serving blobs through signed URLs."""

    clock: Callable[[], float] = time.time
    blobs: dict[str, Blob] = field(default_factory=dict)
    log: RequestLog = field(default_factory=RequestLog)
    plan: FaultPlan = field(default_factory=FaultPlan)
    faults: StorageFaults = field(default_factory=StorageFaults)
    authorization_seen: list[str] = field(default_factory=list)
    forbidden_headers_seen: list[tuple[str, str]] = field(default_factory=list)
    bytes_sent: int = 0
    base_url: str = ""
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _app: web.Application | None = None

    @property
    def app(self) -> web.Application:
        if self._app is None:
            app = web.Application(
                middlewares=[recording_middleware(self.log), fault_middleware(self.plan)]
            )
            app.router.add_get("/b/{key:.+}", self._get)  # also answers HEAD
            self._app = app
        return self._app

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        filename: str | None = None,
    ) -> str:
        """Store (or replace) a blob and return its new ETag."""
        digest = hashlib.sha256(data + secrets.token_bytes(4)).hexdigest()[:32]
        etag = f'"{digest}"'
        self.blobs[key] = Blob(data, etag, self.clock(), content_type, filename)
        return etag

    def sign(self, key: str, ttl: float = 3600.0) -> str:
        """An absolute URL for `key` that stops working `ttl` seconds from now."""
        if not self.base_url:
            raise RuntimeError("the storage host is not running")
        expires = int(self.clock() + ttl)
        signature = self._sig(key, expires)
        return f"{self.base_url}/b/{quote(key)}?X-Expires={expires}&X-Signature={signature}"

    def _sig(self, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        blob = self.blobs.get(request.match_info["key"])
        if blob is None:
            return web.Response(status=404, body=b"<Error><Code>NoSuchKey</Code></Error>")
        wanted = None if self.faults.ignore_range else _wanted_range(request, blob)
        if isinstance(wanted, web.Response):
            return wanted
        return await self._send(request, blob, wanted)

    def _refusal(self, request: web.Request) -> web.Response | None:
        for name in ("Authorization", "x-download-reason"):
            if name in request.headers:
                self.forbidden_headers_seen.append((name.lower(), request.path))
        if "Authorization" in request.headers:
            self.authorization_seen.append(request.path)
            return web.Response(status=400, body=AUTH_XML, content_type="application/xml")
        try:
            expires = int(request.query["X-Expires"])
            signature = request.query["X-Signature"]
        except (KeyError, ValueError):
            return web.Response(status=403, body=BAD_SIGNATURE_XML, content_type="application/xml")
        if not hmac.compare_digest(signature, self._sig(request.match_info["key"], expires)):
            return web.Response(status=403, body=BAD_SIGNATURE_XML, content_type="application/xml")
        if expires < self.clock() or self.faults.expire_times > 0:
            self.faults.expire_times = max(0, self.faults.expire_times - 1)
            return web.Response(status=403, body=EXPIRED_XML, content_type="application/xml")
        return None

    async def _send(
        self, request: web.Request, blob: Blob, wanted: _Range | None
    ) -> web.StreamResponse:
        size = len(blob.data)
        start, end = (wanted.start, wanted.end) if wanted else (0, size - 1)
        response = web.StreamResponse(status=206 if wanted else 200)
        response.headers.update(_entity_headers(blob))
        if wanted:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if self.faults.no_length:
            response.enable_chunked_encoding()
        else:
            response.content_length = end - start + 1
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        body = memoryview(blob.data)[start : end + 1]
        limit = self._body_limit(len(body))
        await self._stream(request, response, body[:limit])
        if limit < len(body) and self.faults.cut_after is not None:
            _abort(request)
            return response
        return response

    def _body_limit(self, length: int) -> int:
        faults = self.faults
        if faults.cut_after is not None and faults.cut_times > 0:
            faults.cut_times -= 1
            return min(length, faults.cut_after)
        if faults.short_by and faults.short_times > 0:
            faults.short_times -= 1
            return max(0, length - faults.short_by)
        return length

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, body: memoryview
    ) -> None:
        rate = self.faults.bytes_per_second
        chunk = CHUNK if rate is None else max(1024, min(CHUNK, int(rate / 10)))
        for offset in range(0, len(body), chunk):
            piece = body[offset : offset + chunk]
            await response.write(bytes(piece))
            self.bytes_sent += len(piece)
            if rate is not None:
                await asyncio.sleep(len(piece) / rate)
        if len(body) < (response.content_length or 0):
            _abort(request)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _entity_headers(blob: Blob) -> dict[str, str]:
    headers = {
        "ETag": blob.etag,
        "Last-Modified": formatdate(blob.modified, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Type": blob.content_type,
    }
    if blob.filename:
        headers["Content-Disposition"] = f'attachment; filename="{blob.filename}"'
    return headers


def _wanted_range(request: web.Request, blob: Blob) -> _Range | web.Response | None:
    header = request.headers.get("Range")
    if not header or not _if_range_holds(request.headers.get("If-Range"), blob):
        return None
    size = len(blob.data)
    unit, _, spec = header.partition("=")
    first, _, last = spec.partition("-")
    if unit.strip() != "bytes" or "," in spec or not first.strip().isdigit():
        return None  # invalid or multi-range: ignore it, as S3 does
    start = int(first)
    end = int(last) if last.strip().isdigit() else size - 1
    if start >= size:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    return _Range(start, min(end, size - 1))


def _if_range_holds(value: str | None, blob: Blob) -> bool:
    if value is None:
        return True
    if value.startswith(('"', 'W/"')):
        return value == blob.etag
    try:
        return parsedate_to_datetime(value).timestamp() >= int(blob.modified)
    except (TypeError, ValueError):
        return False
