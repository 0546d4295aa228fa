"""Reading what the remote APIs send: JSON fields, dates, and what a failed answer means.

Every source turns vendor JSON into the agent's own types with these few helpers, so that
"a string or nothing", "an ISO-8601 or RFC 1123 date" and "this listing call failed" read
the same in each of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any

from agent.errors import AuthenticationError, FatalSourceError, safe_url

EMPTY_OBJECT: Mapping[str, Any] = MappingProxyType({})


def load_json(raw: str | bytes | None) -> Any:
    """Parsed JSON, or None for nothing or anything that is not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def json_object(value: object) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else EMPTY_OBJECT


def text(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever the case of the mapping's keys."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def parse_date(value: object) -> datetime | None:
    """An ISO-8601 or RFC 1123 date as an aware UTC datetime, or None if it is neither.

    A date without a zone is taken as UTC.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    spelled = value.strip()
    parsed: datetime
    try:
        parsed = datetime.fromisoformat(spelled.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(spelled)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def failed_call(
    source: str,
    what: str,
    status: int,
    *,
    url: str | None = None,
    refused: frozenset[int] = frozenset({401}),
    hint: str = "",
) -> FatalSourceError:
    """What a failed listing-side API call means for the pass: it cannot go on.

    A status in `refused` is the API refusing our credentials (AuthenticationError); any
    other names the call, the status and the URL (without its query).
    """
    where = f" {safe_url(url)}" if url else ""
    if status in refused:
        message = f"{what}{where}: the API refused our credentials (HTTP {status})"
        return AuthenticationError(source, message + (f"; {hint}" if hint else ""))
    if status == 403:
        return FatalSourceError(source, f"{what}{where}: not authorised (HTTP 403)")
    return FatalSourceError(source, f"{what}{where} failed: HTTP {status}")
