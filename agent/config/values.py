"""Parsers for the values a key takes beyond its plain type: durations, sizes, URLs, paths.

Each parser receives the value as written (any TOML type) and the key's full name, and
returns the value the agent uses or raises `ConfigError` naming the key. They are pure.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from agent.config.globs import glob_problem
from agent.errors import ConfigError
from agent.models import EventType

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
MIME_RE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
EVENT_TYPES = tuple(t.value for t in EventType)
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
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


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number or a string like `30s`, `5m`, `1h`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_RE.match(value)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ConfigError(
            key, f"expected a duration such as 300, '30s', '5m' or '1h', got {value!r}"
        )
    if seconds <= 0:
        raise ConfigError(key, "must be greater than zero")
    return seconds


def parse_size(value: object, key: str) -> int:
    """Bytes from a number or a string like `500K`, `10M`, `1G` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := SIZE_RE.match(value)):
        unit = (match.group(2) or "B")[0].upper()
        size = int(float(match.group(1)) * 1024 ** "BKMGT".index(unit))
    else:
        raise ConfigError(
            key, f"expected a size such as 1048576, '512K', '10M' or '1G', got {value!r}"
        )
    if size < 0:
        raise ConfigError(key, "must not be negative")
    return size


def parse_globs(value: object, key: str) -> tuple[str, ...]:
    """A list of glob patterns (`agent.config.globs`), each item named by its index."""
    if not isinstance(value, list | tuple):
        raise ConfigError(
            key, f'expected a list of glob patterns such as ["**/*.pdf"], got {value!r}'
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(
                f"{key}[{index}]", f"expected a glob pattern (a string), got {item!r}"
            )
        if problem := glob_problem(item):
            raise ConfigError(f"{key}[{index}]", f"{problem}, got {item!r}")
    return tuple(value)


def parse_optional_size(value: object, key: str) -> int | None:
    """A size where 0 means "no limit" (None)."""
    return parse_size(value, key) or None


def parse_endpoint(value: object, key: str) -> str:
    """An http(s) URL kept as written (a token endpoint may need its trailing slash)."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"expected an http(s) URL, got {value!r}")
    return str(value)


def parse_url(value: object, key: str) -> str:
    """An http(s) URL without its trailing slash, to join paths to."""
    return parse_endpoint(value, key).rstrip("/")


def parse_urls(value: object, key: str) -> tuple[str, ...]:
    """A list of http(s) URLs."""
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"expected a list of URLs, got {value!r}")
    return tuple(parse_url(item, f"{key}[{i}]") for i, item in enumerate(value))


def parse_mime_types(value: object, key: str) -> tuple[str, ...]:
    """A list of MIME types such as `application/pdf`."""
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"expected a list of MIME types, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not MIME_RE.match(item):
            raise ConfigError(key, f"{item!r} is not a MIME type such as application/pdf")
    return tuple(value)


def parse_durations(value: object, key: str) -> tuple[float, ...]:
    """A list of 1 to 20 durations (a retry schedule)."""
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= 20:
        raise ConfigError(key, f"expected a list of 1 to 20 durations such as '5s', got {value!r}")
    return tuple(parse_duration(item, f"{key}[{i}]") for i, item in enumerate(value))


def parse_event_types(value: object, key: str) -> tuple[str, ...]:
    """A list of change-journal event types (`document.added`, `source.pass_completed`...)."""
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"expected a list of event types, got {value!r}")
    for i, item in enumerate(value):
        if item not in EVENT_TYPES:
            raise ConfigError(
                f"{key}[{i}]", f"unknown event type {item!r} (one of {', '.join(EVENT_TYPES)})"
            )
    return tuple(value)


def parse_listen(value: object, key: str) -> str:
    """`host:port` for the local HTTP listener."""
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(key, f"expected host:port such as 127.0.0.1:8749, got {value!r}")
    return str(value)


def parse_directory(value: object, key: str) -> Path:
    """An absolute folder path; `~` is expanded."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"expected a folder path, got {value!r}")
    return Path(value).expanduser().absolute()


def parse_database_url(value: object, key: str) -> str:
    """An SQLAlchemy async URL."""
    if not isinstance(value, str) or "://" not in value:
        raise ConfigError(key, "expected an SQLAlchemy async URL such as sqlite+aiosqlite:///path")
    return value


def parse_name(value: object, key: str) -> str:
    """A source name: also its folder under the mirror and its key in the state."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(key, f"use 1-64 letters, digits, '-' or '_', got {value!r}")
    return value


def parse_download_reason(value: object, key: str) -> str:
    """One of Huddle's documented reasons, or `other/<text>`."""
    if value in DOWNLOAD_REASONS:
        return str(value)
    if isinstance(value, str) and value.startswith("other/") and 0 < len(value) - 6 <= 100:
        return value
    allowed = ", ".join(sorted(DOWNLOAD_REASONS))
    raise ConfigError(
        key, f"must be one of {allowed}, or 'other/<at most 100 characters>', got {value!r}"
    )


def lowercase(value: object, key: str) -> object:
    """Words compared without case (`INFO` is `info`); other types are left to the type check."""
    del key
    return value.lower() if isinstance(value, str) else value


def text(value: object, key: str) -> object:
    """An identifier written as a string or a whole number (`company_id = 42`)."""
    del key
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
