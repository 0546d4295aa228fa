"""The configuration's tables and keys, declared once: the frozen objects the agent reads.

Each class is one TOML table; each field is one key, with its type (checked by msgspec),
its default, and, where a plain type is not enough, `Parse(parser)` naming the parser of the
value as written. A field typed `Secret` also accepts `<key>_file` and `<key>_env`. The
rules that span keys or depend on the source type live in `agent/config/load.py`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from agent.config.proxies import Proxies
from agent.config.schema import Parse
from agent.config.secret import Secret
from agent.config.values import (
    lowercase,
    parse_database_url,
    parse_directory,
    parse_download_reason,
    parse_duration,
    parse_durations,
    parse_endpoint,
    parse_event_types,
    parse_globs,
    parse_listen,
    parse_mime_types,
    parse_name,
    parse_optional_size,
    parse_size,
    parse_url,
    parse_urls,
    text,
)
from agent.errors import ConfigError

Positive = Annotated[int, Meta(gt=0)]
Words = tuple[Annotated[str, Meta(min_length=1)], ...]
Duration = Annotated[float, Parse(parse_duration)]
Url = Annotated[str, Parse(parse_url)]
HashAlgorithm = Literal["blake3", "sha256"]  # what agent/transfer/digests.py can record
# The Standard Webhooks specification's example schedule, each delay after the failed attempt
# before it: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (about three days).
WEBHOOK_RETRIES = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


class Table(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A TOML table: unknown keys refused, frozen, built by keyword.

    Subclasses repeat `frozen=True, kw_only=True`: msgspec does not inherit `kw_only`, and
    mypy does not see an inherited `frozen`.
    """


class AgentConfig(Table, frozen=True, kw_only=True):
    """`[agent]`: where the mirror and the state live, and how the agent behaves."""

    mirror_dir: Annotated[Path, Parse(parse_directory)]
    state_dir: Annotated[Path, Parse(parse_directory)]
    state_url: Annotated[str, Parse(parse_database_url)]
    state_listen_url: Annotated[str | None, Parse(parse_database_url)] = None
    max_concurrent_downloads: Positive = 8
    max_connections_per_host: Positive = 8
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], Parse(lowercase)
    ] = "info"
    listen: Annotated[str, Parse(parse_listen)] = "127.0.0.1:8749"
    bandwidth_limit: Annotated[int | None, Parse(parse_optional_size)] = None
    min_free_space: Annotated[int | None, Parse(parse_size)] = None  # None: files.reserve
    hash_algorithm: HashAlgorithm = "blake3"  # of downloaded content
    shutdown_timeout: Duration = 30.0
    lease_duration: Duration = 30.0  # how long claims outlive a replica that stops renewing
    api_token: Secret | None = None
    journal_retention: Duration = 30 * 86400.0
    on_change: Words = ()  # a command run after each pass that changed the mirror
    on_change_timeout: Duration = 300.0


class Settings(Table, frozen=True, kw_only=True, tag=True):
    """The keys of one source type, written in the same `[[sources]]` table."""


class StandardMetricsSettings(Settings, frozen=True, kw_only=True):
    token_url: Annotated[str, Parse(parse_endpoint)]  # default: <origin of base_url>/o/token/
    company_id: Annotated[str | None, Parse(text)] = None


class HuddleSettings(Settings, frozen=True, kw_only=True):
    token_url: Url = "https://login.huddle.net/token"  # noqa: S105 - a URL, not a secret
    refresh_token: Secret | None  # required; unset only when secrets are not read
    workspaces: Words = ()
    folders: Annotated[tuple[str, ...], Parse(parse_urls)] = ()
    download_reason: Annotated[str, Parse(parse_download_reason)] = "offline-file"
    auth_scheme: Literal["Bearer", "OAuth2"] = "Bearer"
    formats: Annotated[tuple[str, ...], Parse(parse_mime_types)] = ()
    # Only for servers whose folder `Last-Modified` moves for any change below the folder:
    # then a folder answering 304 is replayed from cache with its whole subtree.
    trust_folder_times: bool = False


class IndexHealthUser(Table, frozen=True, kw_only=True):
    """`[sources.user]` of an Index Health source: who the agent acts as."""

    first_name: str
    last_name: str
    email: str | None = None
    date_of_birth: str | None = None
    uid: str | None = None
    eid: str | None = None
    phone: str | None = None
    group_name: str | None = None


class IndexHealthSettings(Settings, frozen=True, kw_only=True):
    user: IndexHealthUser
    fingerprint: str | None = None
    collections: Words | None = None
    download_method: Literal["presigned", "direct"] = "presigned"


class OpenCdeSettings(Settings, frozen=True, kw_only=True):
    refresh_token: Secret | None = None
    keep_versions: Positive = 1


SourceSettings = StandardMetricsSettings | HuddleSettings | IndexHealthSettings | OpenCdeSettings


class SourceConfig(Table, frozen=True, kw_only=True):
    """`[[sources]]`: one remote API to mirror; its type's keys are read into `settings`."""

    name: str
    type: str
    base_url: Url
    poll_interval: Duration = 900.0
    requests_per_minute: Annotated[float, Meta(gt=0)] | None = None
    enabled: bool = True
    client_id: str | None
    client_secret: Secret | None = None
    write_metadata: bool = False
    on_change: Words | None = None  # None: [agent] on_change; () runs none for this source
    on_local_delete: Literal["restore", "forget"] = "restore"
    include: Annotated[tuple[str, ...], Parse(parse_globs)] = ()  # (): every document
    exclude: Annotated[tuple[str, ...], Parse(parse_globs)] = ()
    ignore_case: bool = False  # include/exclude compared without case
    min_size: Annotated[int | None, Parse(parse_size)] = None
    max_size: Annotated[int | None, Parse(parse_size)] = None
    on_filter_exclude: Literal["keep", "remove"] = "keep"  # mirrored files a filter now excludes
    settings: SourceSettings


class WebhookConfig(Table, frozen=True, kw_only=True):
    """`[[webhooks]]`: an endpoint sent each change as a signed CloudEvent (Standard Webhooks)."""

    url: Annotated[str, Parse(parse_endpoint)]
    secret: Secret | None  # required, `whsec_...`; unset only when secrets are not read
    name: Annotated[str, Parse(parse_name)] = ""  # "": taken from the URL's host and path
    types: Annotated[tuple[str, ...], Parse(parse_event_types)] = ()  # (): every type
    sources: Words = ()  # (): every source
    retry_schedule: Annotated[tuple[float, ...], Parse(parse_durations)] = WEBHOOK_RETRIES


@dataclass(frozen=True)
class EnvOverride:
    """One key set by an environment variable; `shown` is `***` for a secret."""

    variable: str
    key: str
    shown: str


@dataclass(frozen=True)
class Config:
    """The whole configuration: `[agent]`, the sources, and where it came from."""

    agent: AgentConfig
    sources: tuple[SourceConfig, ...]
    path: Path | None = None
    raw_sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    overrides: tuple[EnvOverride, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()
    proxies: Proxies = field(default_factory=Proxies)  # from the environment (`proxies.py`)

    def on_change(self, source: SourceConfig) -> tuple[str, ...]:
        """The command to run after a pass of `source` changed the mirror (() for none)."""
        return self.agent.on_change if source.on_change is None else source.on_change

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError("--source", f"no source named {name!r} in the configuration")
