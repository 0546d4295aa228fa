"""The source types: each one's settings class, defaults, and the rules that span its keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.config.model import (
    HuddleSettings,
    IndexHealthSettings,
    OpenCdeSettings,
    Settings,
    StandardMetricsSettings,
)
from agent.errors import ConfigError


def _no_defaults(base_url: str) -> Mapping[str, object]:
    del base_url
    return {}


def _no_check(settings: Settings, prefix: str) -> None:
    del settings, prefix


@dataclass(frozen=True)
class SourceKind:
    """What one value of `type` means for a `[[sources]]` table."""

    settings: type[Settings]
    defaults: Mapping[str, object] = field(default_factory=dict)  # of the common keys
    min_poll_interval: float = 1.0
    required_secrets: tuple[str, ...] = ()
    settings_defaults: Callable[[str], Mapping[str, object]] = _no_defaults  # from base_url
    check: Callable[[Settings, str], None] = _no_check  # (settings, "sources.<name>")


def _standard_metrics_defaults(base_url: str) -> Mapping[str, object]:
    parts = urlsplit(base_url)
    return {"token_url": f"{parts.scheme}://{parts.netloc}/o/token/"}


def _huddle_check(settings: Settings, prefix: str) -> None:
    assert isinstance(settings, HuddleSettings)
    if not settings.workspaces and not settings.folders:
        raise ConfigError(f"{prefix}.workspaces", "give workspaces and/or folders to mirror")


def _index_health_check(settings: Settings, prefix: str) -> None:
    assert isinstance(settings, IndexHealthSettings)
    user = settings.user
    if not any((user.email, user.date_of_birth, user.uid, user.eid)):
        raise ConfigError(
            f"{prefix}.user.email", "give at least one of email, date_of_birth, uid or eid"
        )


KINDS: dict[str, SourceKind] = {
    "standard-metrics": SourceKind(
        StandardMetricsSettings,
        {"base_url": "https://api.standardmetrics.io/v1", "requests_per_minute": 120.0},
        required_secrets=("client_secret",),
        settings_defaults=_standard_metrics_defaults,
    ),
    "huddle": SourceKind(
        HuddleSettings, {"base_url": "https://api.huddle.net"}, check=_huddle_check
    ),
    "index-health": SourceKind(
        IndexHealthSettings, required_secrets=("client_secret",), check=_index_health_check
    ),
    "opencde": SourceKind(OpenCdeSettings, min_poll_interval=300.0),  # the standard's floor
}
SOURCE_TYPES = tuple(KINDS)
