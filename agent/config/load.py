"""Loading: the TOML file, its environment overrides, and the tables read in order.

`load_config` reads the file, applies `SYNC_AGENT_*` overrides and validates; `parse_config`
validates already-parsed data. Both raise `ConfigError` naming the key (exit 78).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from agent.config.env import apply_overrides, blame_override
from agent.config.kinds import KINDS, SOURCE_TYPES, SourceKind
from agent.config.model import AgentConfig, Config, SourceConfig
from agent.config.proxies import read_proxies
from agent.config.schema import Context, convert, file_keys, prepare, read_table
from agent.config.values import parse_name
from agent.config.webhooks import read_webhooks
from agent.errors import ConfigError

DEFAULT_STATE_DIR = "~/.local/state/sync-agent"


def load_config(
    path: Path | str, env: Mapping[str, str] | None = None, *, secrets: bool = True
) -> Config:
    """Read the file, apply the environment's overrides, validate; ConfigError names the key."""
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
    data, overrides = apply_overrides(data, env)
    try:
        config = parse_config(data, env, path, secrets=secrets)
    except ConfigError as exc:
        raise blame_override(exc, overrides) from None
    return dataclasses.replace(config, overrides=overrides, proxies=read_proxies(env))


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str],
    path: Path | None = None,
    *,
    secrets: bool = True,
) -> Config:
    """Validate parsed TOML; with `secrets=False` secrets that cannot be read stay unset."""
    for key in data:
        if key not in ("agent", "sources", "webhooks"):
            raise ConfigError(key, "unknown key (expected [agent], [[sources]], [[webhooks]])")
    ctx = Context(env, secrets)
    agent_data = data.get("agent")
    if not isinstance(agent_data, dict):
        raise ConfigError("agent", "the [agent] table is required")
    agent = read_agent(agent_data, ctx)
    sources_data = data.get("sources", [])
    if not isinstance(sources_data, list) or not all(isinstance(s, dict) for s in sources_data):
        raise ConfigError("sources", "expected [[sources]] tables")
    sources = tuple(read_source(s, i, ctx) for i, s in enumerate(sources_data))
    _check_unique(sources)
    raw = {s.name: sources_data[i] for i, s in enumerate(sources)}
    webhooks = read_webhooks(data.get("webhooks", []), [s.name for s in sources], ctx)
    return Config(agent, sources, path, raw, webhooks=webhooks)


def read_agent(table: Mapping[str, object], ctx: Context) -> AgentConfig:
    """`[agent]`; the state folder defaults to systemd's StateDirectory when there is one."""
    state_dir = ctx.env.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR
    prepared = prepare(AgentConfig, {"state_dir": state_dir, **table}, "agent", ctx)
    state = prepared["state_dir"]
    prepared.setdefault("state_url", f"sqlite+aiosqlite:///{Path(str(state)) / 'state.db'}")
    return convert(AgentConfig, prepared, "agent")


def read_source(table: Mapping[str, object], index: int, ctx: Context) -> SourceConfig:
    """One `[[sources]]` table: the common keys, then its type's keys into `settings`."""
    if "name" not in table:
        raise ConfigError(f"sources[{index}].name", "is required")
    prefix = f"sources.{parse_name(table['name'], f'sources[{index}].name')}"
    kind = _kind(table, prefix)
    if "settings" in table:
        raise ConfigError(f"{prefix}.settings", "unknown key")
    own = file_keys(kind.settings)
    common = {**kind.defaults, **{k: v for k, v in table.items() if k not in own}}
    common = prepare(SourceConfig, common, prefix, ctx, kind.required_secrets)
    if "base_url" not in common:  # the type's settings may derive their defaults from it
        raise ConfigError(f"{prefix}.base_url", "is required")
    defaults = kind.settings_defaults(str(common["base_url"]))
    specific = {**defaults, **{k: v for k, v in table.items() if k in own}}
    settings = read_table(kind.settings, specific, prefix, ctx)
    kind.check(settings, prefix)
    source = convert(SourceConfig, {**common, "settings": settings}, prefix)
    _check_sizes(source, prefix)
    if source.poll_interval < kind.min_poll_interval:
        return msgspec.structs.replace(source, poll_interval=kind.min_poll_interval)
    return source


def _check_sizes(source: SourceConfig, prefix: str) -> None:
    low, high = source.min_size, source.max_size
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"{prefix}.min_size", f"is larger than max_size ({low} > {high} bytes): nothing passes"
        )


def _kind(table: Mapping[str, object], prefix: str) -> SourceKind:
    if "type" not in table:
        raise ConfigError(f"{prefix}.type", "is required")
    kind = KINDS.get(table["type"]) if isinstance(table["type"], str) else None
    if kind is None:
        raise ConfigError(
            f"{prefix}.type",
            f"unknown source type {table['type']!r} (one of {', '.join(SOURCE_TYPES)})",
        )
    return kind


def _check_unique(sources: tuple[SourceConfig, ...]) -> None:
    seen: set[str] = set()
    for index, source in enumerate(sources):
        if source.name in seen:
            raise ConfigError(f"sources[{index}].name", f"duplicate source name {source.name!r}")
        seen.add(source.name)
