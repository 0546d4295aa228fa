"""HTTP helpers for the OpenCDE sandbox: JSON errors, ETag/If-None-Match, byte ranges."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.sandbox.server import json_body


class ApiError(Exception):
    """Ends a handler with `{"message": ...}` and the given status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return json_body({"message": self.message}, self.status, self.headers)


UNKNOWN_PROPERTY = "x_vendor_extension"


def with_unknown_properties(payload: Any) -> Any:
    """`payload` with one property no client knows in every JSON object, nested ones too.

    The Foundation API says clients must ignore properties they do not know.
    """
    if isinstance(payload, list):
        return [with_unknown_properties(item) for item in payload]
    if isinstance(payload, dict):
        extended = {key: with_unknown_properties(value) for key, value in payload.items()}
        extended[UNKNOWN_PROPERTY] = {"note": "a vendor extension clients must ignore"}
        return extended
    return payload


def strong_etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def none_match(header: str | None, etag: str) -> bool:
    """Weak comparison, as RFC 9110 prescribes for If-None-Match."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def etagged_json(request: web.Request, payload: Any) -> web.Response:
    """A JSON body with a strong ETag over its bytes; 304 when the client has it."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    etag = strong_etag(body)
    if none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, content_type="application/json", headers={"ETag": etag})


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 400."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def content_disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def bytes_response(
    request: web.Request, data: bytes, *, name: str, content_type: str
) -> web.Response:
    """200 with `data`, or 206/304/416 as Range, If-Range and If-None-Match ask."""
    etag = strong_etag(data)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(name),
    }
    if none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    size = len(data)
    wanted = _wanted_range(
        request.headers.get("Range"), request.headers.get("If-Range"), etag, size
    )
    if wanted is None:
        return web.Response(body=data, content_type=content_type, headers=headers)
    start, end = wanted
    if start >= size:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return web.Response(
        status=206, body=data[start : end + 1], content_type=content_type, headers=headers
    )


def _wanted_range(
    header: str | None, if_range: str | None, etag: str, size: int
) -> tuple[int, int] | None:
    """(start, inclusive end) of a single-range request; None means send everything.

    A start at or past `size` means the range cannot be satisfied (416).
    """
    if not header or (if_range is not None and if_range.strip() != etag):
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        return (size, size) if suffix == 0 else (max(0, size - suffix), size - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return None if last and int(last) < start else (start, end)
