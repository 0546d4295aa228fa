"""Index Health sandbox HTTP helpers: byte ranges, dates, file names, request bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

IDENTITY_FIELDS: Final = ("date_of_birth", "email", "uid", "eid")
EXTENSION_BY_TYPE: Final = {
    "PDF": ".pdf",
    "DOCX": ".docx",
    "TXT": ".txt",
    "IMG": ".png",
    "OTHER": ".bin",
}
_EXTENSION_RE: Final = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_RANGE_RE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_TYPES: Final = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}


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


async def json_object(request: web.Request) -> dict[str, Any]:
    """The JSON object body; like express.json(), anything else reads as ``{}``."""
    if request.content_type != "application/json":
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def missing_auth_field(body: Mapping[str, Any], *, root_group: bool) -> str | None:
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
    if not any(user.get(key) for key in IDENTITY_FIELDS):
        return "user needs one of date_of_birth, email, uid or eid"
    if not root_group and not user.get("group_name"):
        return "user.group_name is required for clients outside the root group"
    return None


def file_response(request: web.Request, data: bytes, name: str, etag: str) -> web.Response:
    """200 with the whole file, or 206/416 when a Range applies (If-Range must match)."""
    size = len(data)
    headers = {
        "Content-Type": content_type_for(name),
        "Content-Disposition": content_disposition(name),
        "Cache-Control": "no-cache",
        "Accept-Ranges": "bytes",
        "ETag": etag,
    }
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header is None or (if_range is not None and if_range.strip() != etag):
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


def slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "document"
