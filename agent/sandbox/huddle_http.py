"""Huddle sandbox HTTP switches and pure helpers: dates, ranges, validators, negotiation."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import TypedDict
from urllib.parse import quote

from aiohttp import web

HUDDLE_JSON = "application/vnd.huddle.data+json"

DOWNLOAD_REASONS = frozenset(
    {
        "unspecified",
        "file-preview",
        "open-file-other-app",
        "offline-file",
        "offline-file-preview",
        "suggested-file-preview",
    }
)
_OTHER_PREFIX = "other/"
_OTHER_MAX = 100
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


SUMMARY_SHAPES = ("self", "links", "full")
FOLDER_TIMES = ("own", "children", "subtree")  # least first; see `HuddleOptions.folder_times`


@dataclass
class HuddleOptions:
    """Switches between documented readings; tests may flip them while serving.

    Each default is the least the documentation promises (see docs/conformance.md);
    `RICH` in `agent.sandbox.huddle` turns every switch to its friendliest reading.
    """

    # Inline child items of folders and paged folders: "self" = only `self` (and
    # `parentCollection`) links, as the Folder pages show before "... other document
    # elements ..."; "links" = title, `updated` and every link (`content` when the user may
    # download); "full" = every field and link of the Document resource.
    summaries: str = "self"
    expired_status: int = 403  # 401 in newer docs, 403 in older ones
    no_content_status: int = 404  # 204 in older docs, 404 in newer ones
    auth_scheme: str | None = "Bearer"  # "Bearer" or "OAuth2" to require one; None takes both
    rfc1123_dates: bool = True  # JSON dates as RFC 1123 ("seen too") instead of ISO-8601
    paged_view: bool = True  # folders link their paged `collection` view
    refresh_revokes_access: bool = True  # a refresh kills every access token issued before
    conversion_links_in_body: bool = False  # finished conversion: links in the JSON body, or
    # only in a `Link` header as the sequence diagram shows
    content_redirect: bool = False  # content answers 302 to a signed storage URL
    conversion_polls: int = 2  # progress polls that answer InProgress before the outcome
    # What moves a folder's (and its paged view's) `Last-Modified`, which the documentation
    # names without saying what it covers: "own" = the folder's own representation in the
    # least summary shape, i.e. its list of direct children (one added, removed, moved in or
    # out), as HTTP ties the header to the representation; "children" = also any change to a
    # direct child (a document's new version or title); "subtree" = any change anywhere below.
    folder_times: str = "own"

    def __post_init__(self) -> None:
        if self.summaries not in SUMMARY_SHAPES:
            raise ValueError(f"summaries must be one of {SUMMARY_SHAPES}")
        if self.folder_times not in FOLDER_TIMES:
            raise ValueError(f"folder_times must be one of {FOLDER_TIMES}")
        if self.expired_status not in (401, 403):
            raise ValueError("expired_status must be 401 or 403")
        if self.no_content_status not in (204, 404):
            raise ValueError("no_content_status must be 204 or 404")
        if self.auth_scheme is not None and self.auth_scheme.lower() not in ("bearer", "oauth2"):
            raise ValueError("auth_scheme must be 'Bearer', 'OAuth2' or None")


class HuddleKnobs(TypedDict, total=False):
    """The constructor keywords of `HuddleSandbox` that choose a documented reading."""

    summaries: str
    expired_status: int
    no_content_status: int
    auth_scheme: str | None
    rfc1123_dates: bool
    paged_view: bool
    refresh_revokes_access: bool
    conversion_links_in_body: bool
    content_redirect: bool
    conversion_polls: int
    folder_times: str


def http_date(ts: float) -> str:
    """RFC 1123 date, whole seconds, as in `Last-Modified`."""
    return formatdate(math.floor(ts), usegmt=True)


def iso_date(ts: float) -> str:
    """ISO-8601 UTC date with a `Z` suffix, whole seconds."""
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch for an HTTP date, or None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def valid_download_reason(reason: str) -> bool:
    """Whether `reason` is one the documented `x-download-reason` values."""
    if reason in DOWNLOAD_REASONS:
        return True
    if reason.startswith(_OTHER_PREFIX):
        return 1 <= len(reason) - len(_OTHER_PREFIX) <= _OTHER_MAX
    return False


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range; `start > end` means it cannot be satisfied."""

    start: int
    end: int

    @property
    def satisfiable(self) -> bool:
        return self.start <= self.end

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range asked for, or None when absent, malformed or multi-range.

    Forms: `bytes=N-`, `bytes=N-M`, `bytes=-S` (suffix). A syntactically valid range that
    starts at or past the end comes back unsatisfiable (the server answers 416).
    """
    if header is None:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            return ByteRange(size, size - 1)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = size - 1 if not last else int(last)
    if last and end < start:
        return None
    return ByteRange(start, min(end, size - 1))


def if_range_holds(value: str | None, etag: str, last_modified: float) -> bool:
    """Whether a Range may be honoured given `If-Range` (absent -> yes)."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', 'W/"')):
        return value == etag  # strong comparison: a weak tag never matches
    when = parse_http_date(value)
    return when is not None and math.floor(when) == math.floor(last_modified)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of an `If-None-Match` list against one ETag."""
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in wanted or etag.removeprefix("W/") in wanted


def not_modified(headers: Mapping[str, str], etag: str | None, last_modified: float) -> bool:
    """Whether conditional request headers allow a 304 (If-None-Match wins over IMS)."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and etag is not None:
        return etag_matches(if_none_match, etag)
    since = parse_http_date(headers.get("If-Modified-Since"))
    return since is not None and math.floor(last_modified) <= since


def requested_type(mimetype_param: str | None, accept: str | None) -> str | None:
    """The media type a content request asks for; None means the original.

    `?mimetype=` wins over `Accept`. From an `Accept` list the highest-q type is taken;
    `*/*` or a missing header asks for the original.
    """
    if mimetype_param:
        return mimetype_param.strip().lower()
    if not accept:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                quality = _float_or(value, 1.0)
        if kind and quality > 0:
            ranked.append((-quality, index, kind.lower()))
    if not ranked:
        return None
    best = min(ranked)[2]
    return None if best == "*/*" else best


def _float_or(value: str, default: float) -> float:
    try:
        return float(value)
    except ValueError:
        return default


def content_disposition(filename: str) -> str:
    """`attachment` with a quoted ASCII name, plus `filename*` when the name is not ASCII."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def huddle_json(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A response in Huddle's own JSON media type."""
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":")).encode(),
        content_type=HUDDLE_JSON,
        headers=headers,
    )


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error response with a JSON `message` body."""
    return huddle_json({"message": message}, status, headers)
