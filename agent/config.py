"""Loads the TOML configuration once into frozen, validated objects.

Every mistake becomes a `ConfigError` naming the key (exit 78). Secrets are read here from
the file, a file path or an environment variable, and are wrapped so they never print.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent.errors import ConfigError

T = TypeVar("T")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
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
SOURCE_TYPES = ("standard-metrics", "huddle", "index-health", "opencde")


class Secret:
    """A secret value that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class StandardMetricsSettings:
    token_url: str
    company_id: str | None = None


@dataclass(frozen=True)
class HuddleSettings:
    token_url: str
    refresh_token: Secret | None
    workspaces: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    download_reason: str = "offline-file"
    auth_scheme: str = "Bearer"
    formats: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexHealthUser:
    first_name: str
    last_name: str
    email: str | None = None
    date_of_birth: str | None = None
    uid: str | None = None
    eid: str | None = None
    phone: str | None = None
    group_name: str | None = None


@dataclass(frozen=True)
class IndexHealthSettings:
    user: IndexHealthUser
    fingerprint: str | None = None
    collections: tuple[str, ...] | None = None
    download_method: str = "presigned"


@dataclass(frozen=True)
class OpenCdeSettings:
    refresh_token: Secret | None = None
    keep_versions: int = 1


SourceSettings = StandardMetricsSettings | HuddleSettings | IndexHealthSettings | OpenCdeSettings


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str
    base_url: str
    poll_interval: float
    requests_per_minute: float | None
    enabled: bool
    client_id: str | None
    client_secret: Secret | None
    write_metadata: bool
    settings: SourceSettings


@dataclass(frozen=True)
class AgentConfig:
    mirror_dir: Path
    state_dir: Path
    state_url: str
    max_concurrent_downloads: int = 8
    max_connections_per_host: int = 8
    log_format: str = "auto"
    log_level: str = "info"
    listen: str = "127.0.0.1:8749"
    bandwidth_limit: int | None = None
    min_free_space: int = 1 << 30
    shutdown_timeout: float = 30.0
    api_token: Secret | None = None


@dataclass(frozen=True)
class Config:
    agent: AgentConfig
    sources: tuple[SourceConfig, ...]
    path: Path | None = None
    raw_sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError("--source", f"no source named {name!r} in the configuration")


# ---------------------------------------------------------------- value parsers (pure)


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number or a string like `30s`, `5m`, `1h`."""
    if isinstance(value, bool):
        raise ConfigError(key, "expected a duration such as 300, '30s', '5m' or '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_RE.match(value)):
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
        seconds = float(match.group(1)) * scale
    else:
        raise ConfigError(
            key, f"expected a duration such as 300, '30s', '5m' or '1h', got {value!r}"
        )
    if seconds <= 0:
        raise ConfigError(key, "must be greater than zero")
    return seconds


def parse_size(value: object, key: str) -> int:
    """Bytes from a number or a string like `500K`, `10M`, `1G` (powers of 1024)."""
    if isinstance(value, bool):
        raise ConfigError(key, "expected a size such as 1048576, '512K', '10M' or '1G'")
    if isinstance(value, int):
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


def validate_download_reason(value: str, key: str) -> str:
    if value in DOWNLOAD_REASONS:
        return value
    if value.startswith("other/") and 0 < len(value) - len("other/") <= 100:
        return value
    allowed = ", ".join(sorted(DOWNLOAD_REASONS))
    raise ConfigError(key, f"must be one of {allowed}, or 'other/<text of at most 100 characters>'")


def validate_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def validate_listen(value: str, key: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(key, f"expected host:port such as 127.0.0.1:8749, got {value!r}")
    return value


# ---------------------------------------------------------------- table reader


class Table:
    """Typed reads from one TOML table that remember which keys were used."""

    def __init__(
        self, data: Mapping[str, Any], prefix: str, env: Mapping[str, str], *, secrets: bool = True
    ) -> None:
        self.data = data
        self.prefix = prefix
        self.env = env
        self.secrets = secrets  # False: leave unreadable secrets unset (status needs none)
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def get(
        self, name: str, kind: type[T] | tuple[type, ...], default: T | None = None
    ) -> T | None:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(self.key(name), f"expected {_kind_name(kinds)}, got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise ConfigError(self.key(name), f"expected {_kind_name(kinds)}, got {value!r}")
        return value  # type: ignore[return-value]

    def require(self, name: str, kind: type[T]) -> T:
        value = self.get(name, kind)
        if value is None:
            raise ConfigError(self.key(name), "is required")
        return value

    def str_list(self, name: str) -> tuple[str, ...] | None:
        value = self.get(name, list)
        if value is None:
            return None
        if not all(isinstance(item, str) and item for item in value):
            raise ConfigError(self.key(name), "expected a list of non-empty strings")
        return tuple(value)

    def positive(self, name: str, kind: type[T], default: T) -> T:
        value = self.get(name, kind, default)
        assert value is not None
        if value <= 0:  # type: ignore[operator]
            raise ConfigError(self.key(name), "must be greater than zero")
        return value

    def secret(self, name: str, *, required: bool = False) -> Secret | None:
        """`name`, `name_file` or `name_env`: exactly one of them."""
        given = [k for k in (name, f"{name}_file", f"{name}_env") if k in self.data]
        self.used.update({name, f"{name}_file", f"{name}_env"})
        if len(given) > 1:
            raise ConfigError(self.key(given[1]), f"give only one of {', '.join(given)}")
        if not given:
            if required and self.secrets:
                raise ConfigError(self.key(name), f"is required (or {name}_file / {name}_env)")
            return None
        try:
            return Secret(self._read_secret(given[0], name))
        except ConfigError:
            if self.secrets:
                raise
            return None

    def _read_secret(self, key: str, name: str) -> str:
        value = self.data[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(key), "expected a non-empty string")
        if key == name:
            return value
        if key.endswith("_env"):
            if not self.env.get(value):
                raise ConfigError(self.key(key), f"environment variable {value} is not set")
            return self.env[value].strip()
        return _read_secret_file(self.key(key), value, self.env)

    def check_unknown(self) -> None:
        for name in self.data:
            if name not in self.used:
                raise ConfigError(self.key(name), "unknown key")


def _read_secret_file(key: str, value: str, env: Mapping[str, str]) -> str:
    missing = [v for v in re.findall(r"\$\{?(\w+)\}?", value) if v not in env]
    if missing:
        raise ConfigError(key, f"environment variable {missing[0]} is not set")
    path = Path(re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], value)).expanduser()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(key, f"{path} is empty")
    return secret


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names |= {list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# ---------------------------------------------------------------- loading


def load_config(
    path: Path | str, env: Mapping[str, str] | None = None, *, secrets: bool = True
) -> Config:
    """Read and validate the configuration file; raise ConfigError naming the key."""
    env = os.environ if env is None else env
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("toml", f"{path}: {exc}") from exc
    return parse_config(data, env, path, secrets=secrets)


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str],
    path: Path | None = None,
    *,
    secrets: bool = True,
) -> Config:
    """Validate parsed TOML; with `secrets=False` secrets that cannot be read stay unset."""
    for key in data:
        if key not in ("agent", "sources"):
            raise ConfigError(key, "unknown key (expected [agent] and [[sources]])")
    agent_data = data.get("agent")
    if not isinstance(agent_data, dict):
        raise ConfigError("agent", "the [agent] table is required")
    agent = _parse_agent(Table(agent_data, "agent", env, secrets=secrets))
    sources_data = data.get("sources", [])
    if not isinstance(sources_data, list) or not all(isinstance(s, dict) for s in sources_data):
        raise ConfigError("sources", "expected [[sources]] tables")
    sources = tuple(_parse_source(s, i, env, secrets) for i, s in enumerate(sources_data))
    _check_unique(sources)
    raw = {s.name: sources_data[i] for i, s in enumerate(sources)}
    return Config(agent, sources, path, raw)


def _check_unique(sources: tuple[SourceConfig, ...]) -> None:
    seen: set[str] = set()
    for index, source in enumerate(sources):
        if source.name in seen:
            raise ConfigError(f"sources[{index}].name", f"duplicate source name {source.name!r}")
        seen.add(source.name)


def _parse_agent(t: Table) -> AgentConfig:
    mirror = t.require("mirror_dir", str)
    default_state = t.env.get("STATE_DIRECTORY", "").split(":")[0] or "~/.local/state/sync-agent"
    state_dir = Path(t.get("state_dir", str, default_state) or default_state).expanduser()
    state_url = t.get("state_url", str) or f"sqlite+aiosqlite:///{state_dir / 'state.db'}"
    log_format = t.get("log_format", str, "auto")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(t.key("log_format"), "must be auto, json or console")
    log_level = (t.get("log_level", str, "info") or "info").lower()
    if log_level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(t.key("log_level"), "must be debug, info, warning, error or critical")
    bandwidth = t.get("bandwidth_limit", (int, str))
    config = AgentConfig(
        mirror_dir=Path(mirror).expanduser().absolute(),
        state_dir=state_dir.absolute(),
        state_url=state_url,
        max_concurrent_downloads=t.positive("max_concurrent_downloads", int, 8),
        max_connections_per_host=t.positive("max_connections_per_host", int, 8),
        log_format=log_format or "auto",
        log_level=log_level,
        listen=validate_listen(t.get("listen", str, "127.0.0.1:8749") or "", t.key("listen")),
        bandwidth_limit=None
        if bandwidth is None
        else parse_size(bandwidth, t.key("bandwidth_limit")) or None,
        min_free_space=parse_size(
            t.get("min_free_space", (int, str), "1G"), t.key("min_free_space")
        ),
        shutdown_timeout=parse_duration(
            t.get("shutdown_timeout", (int, float, str), 30), t.key("shutdown_timeout")
        ),
        api_token=t.secret("api_token"),
    )
    if "://" not in config.state_url:
        raise ConfigError(
            t.key("state_url"), "expected an SQLAlchemy async URL such as sqlite+aiosqlite:///path"
        )
    t.check_unknown()
    return config


def _parse_source(
    data: Mapping[str, Any], index: int, env: Mapping[str, str], secrets: bool
) -> SourceConfig:
    t = Table(data, f"sources[{index}]", env, secrets=secrets)
    name = t.require("name", str)
    if not NAME_RE.match(name):
        raise ConfigError(t.key("name"), "use 1-64 letters, digits, '-' or '_'")
    t.prefix = f"sources.{name}"
    kind = t.require("type", str)
    if kind not in SOURCE_TYPES:
        raise ConfigError(
            t.key("type"), f"unknown source type {kind!r} (one of {', '.join(SOURCE_TYPES)})"
        )
    parser = _SETTINGS_PARSERS[kind]
    base_default = _BASE_DEFAULTS.get(kind)
    base_url = t.get("base_url", str, base_default)
    if base_url is None:
        raise ConfigError(t.key("base_url"), "is required")
    base_url = validate_url(base_url, t.key("base_url"))
    minimum_poll = 300.0 if kind == "opencde" else 1.0
    poll = parse_duration(t.get("poll_interval", (int, float, str), "15m"), t.key("poll_interval"))
    rpm_default = 120.0 if kind == "standard-metrics" else None
    rpm = t.get("requests_per_minute", (int, float), rpm_default)
    if rpm is not None and rpm <= 0:
        raise ConfigError(t.key("requests_per_minute"), "must be greater than zero")
    settings = parser(t, base_url)
    config = SourceConfig(
        name=name,
        type=kind,
        base_url=base_url,
        poll_interval=max(poll, minimum_poll),
        requests_per_minute=rpm,
        enabled=bool(t.get("enabled", bool, True)),
        client_id=t.get("client_id", str),
        client_secret=t.secret(
            "client_secret", required=kind in ("standard-metrics", "index-health")
        ),
        write_metadata=bool(t.get("write_metadata", bool, False)),
        settings=settings,
    )
    if kind != "huddle" and config.client_id is None:
        raise ConfigError(t.key("client_id"), "is required")
    t.check_unknown()
    return config


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _standard_metrics(t: Table, base_url: str) -> StandardMetricsSettings:
    token_url = t.get("token_url", str, f"{_origin(base_url)}/o/token/") or ""
    validate_url(token_url, t.key("token_url"))
    company: object = t.get("company_id", (str, int))
    return StandardMetricsSettings(
        token_url=token_url,
        company_id=None if company is None else str(company),
    )


def _huddle(t: Table, base_url: str) -> HuddleSettings:
    token_url = t.get("token_url", str, "https://login.huddle.net/token") or ""
    scheme = t.get("auth_scheme", str, "Bearer") or "Bearer"
    if scheme not in ("Bearer", "OAuth2"):
        raise ConfigError(t.key("auth_scheme"), "must be Bearer or OAuth2")
    reason = t.get("download_reason", str, "offline-file") or ""
    workspaces = t.str_list("workspaces") or ()
    folders = tuple(validate_url(f, t.key("folders")) for f in t.str_list("folders") or ())
    if not workspaces and not folders:
        raise ConfigError(t.key("workspaces"), "give workspaces and/or folders to mirror")
    if t.get("client_id", str) is None:
        raise ConfigError(t.key("client_id"), "is required")
    return HuddleSettings(
        token_url=validate_url(token_url, t.key("token_url")),
        refresh_token=t.secret("refresh_token", required=True),
        workspaces=workspaces,
        folders=folders,
        download_reason=validate_download_reason(reason, t.key("download_reason")),
        auth_scheme=scheme,
        formats=_mime_list(t, "formats"),
    )


def _mime_list(t: Table, name: str) -> tuple[str, ...]:
    values = t.str_list(name) or ()
    for value in values:
        if not re.match(r"^[\w.+-]+/[\w.+-]+$", value):
            raise ConfigError(t.key(name), f"{value!r} is not a MIME type such as application/pdf")
    return values


def _index_health(t: Table, base_url: str) -> IndexHealthSettings:
    method = t.get("download_method", str, "presigned") or ""
    if method not in ("presigned", "direct"):
        raise ConfigError(t.key("download_method"), "must be presigned or direct")
    return IndexHealthSettings(
        user=_index_health_user(t),
        fingerprint=t.get("fingerprint", str),
        collections=t.str_list("collections"),
        download_method=method,
    )


def _index_health_user(parent: Table) -> IndexHealthUser:
    data = parent.get("user", dict)
    if data is None:
        raise ConfigError(parent.key("user"), "the [sources.user] table is required")
    t = Table(data, parent.key("user"), parent.env, secrets=parent.secrets)
    optional = {
        k: t.get(k, str) for k in ("email", "date_of_birth", "uid", "eid", "phone", "group_name")
    }
    user = IndexHealthUser(
        first_name=t.require("first_name", str), last_name=t.require("last_name", str), **optional
    )
    if not any((user.email, user.date_of_birth, user.uid, user.eid)):
        raise ConfigError(t.key("email"), "give at least one of email, date_of_birth, uid or eid")
    t.check_unknown()
    return user


def _opencde(t: Table, base_url: str) -> OpenCdeSettings:
    keep = t.positive("keep_versions", int, 1)
    return OpenCdeSettings(refresh_token=t.secret("refresh_token"), keep_versions=keep)


_SETTINGS_PARSERS: dict[str, Callable[[Table, str], SourceSettings]] = {
    "standard-metrics": _standard_metrics,
    "huddle": _huddle,
    "index-health": _index_health,
    "opencde": _opencde,
}
_BASE_DEFAULTS = {
    "standard-metrics": "https://api.standardmetrics.io/v1",
    "huddle": "https://api.huddle.net",
}
