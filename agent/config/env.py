"""Environment overrides for containers: `SYNC_AGENT_AGENT__<KEY>` and per-source keys.

`SYNC_AGENT_SOURCES__<NAME>__<KEY>` sets a key of one source. An override replaces (or
adds) one key of the parsed file before validation, so it is checked exactly like the file.
`<NAME>` matches a source's name without regard to case, `-` written as `_`; `__` separates
the parts, and `SOURCES__<NAME>__USER__EMAIL` reaches a nested table. The value is read as
the key's type asks: text as it is, numbers and booleans as TOML (`8`, `2.5`, `true`), lists
as a JSON array or comma-separated. A mistake names both the variable and the key.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_origin

import msgspec

from agent.config.kinds import KINDS
from agent.config.model import AgentConfig, EnvOverride, SourceConfig
from agent.config.schema import fields_of, nested_table, plain_type, takes_secret
from agent.config.secret import Secret, secret_keys
from agent.errors import ConfigError

PREFIX = "SYNC_AGENT_"
SEPARATOR = "__"
TEXT_TYPES = (str, Path, Secret)
FIXED_KEYS = ("name", "type")  # a source's identity stays in the file
Classes = Sequence[type[msgspec.Struct]]  # the tables whose keys a variable may set


def apply_overrides(
    data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], tuple[EnvOverride, ...]]:
    """The data with every `SYNC_AGENT_*__*` variable applied, and what each one set."""
    out = copy.deepcopy(dict(data))
    applied = tuple(
        _apply(out, variable, env[variable])
        for variable in sorted(env)
        if variable.startswith(PREFIX) and SEPARATOR in variable
    )
    return out, applied


def blame_override(exc: ConfigError, overrides: tuple[EnvOverride, ...]) -> ConfigError:
    """The error, naming the variable when the key it concerns came from the environment."""
    for override in overrides:
        if exc.key == override.key or exc.key.startswith((f"{override.key}.", f"{override.key}[")):
            return ConfigError(exc.key, f"{exc.message} (set by {override.variable})")
    return exc


def env_name(name: str) -> str:
    """How a source name is written in a variable: upper case, `-` as `_`."""
    return name.upper().replace("-", "_")


def _apply(data: dict[str, Any], variable: str, text: str) -> EnvOverride:
    section, *parts = variable.removeprefix(PREFIX).split(SEPARATOR)
    table, prefix, classes = _section(data, section, parts, variable)
    keys = [part.lower() for part in parts]
    key = ".".join([prefix, *keys])
    if not all(keys):
        raise ConfigError(variable, "empty key between '__' separators")
    if prefix.startswith("sources.") and keys[0] in FIXED_KEYS:
        raise ConfigError(key, f"cannot be set from the environment ({variable})")
    for name in keys[:-1]:
        prefix = f"{prefix}.{name}"
        table = _subtable(table, name, prefix, variable)
        nested = nested_table(_annotation(classes, name))
        classes = (nested,) if nested else ()
    annotation = _annotation(classes, keys[-1])
    if takes_secret(annotation):  # the variable replaces the file's value, file or variable
        for variant in secret_keys(keys[-1]):
            table.pop(variant, None)
    table[keys[-1]] = _value(annotation, text, key, variable)
    return EnvOverride(variable, key, "***" if takes_secret(annotation) else text)


def _section(
    data: dict[str, Any], section: str, parts: list[str], variable: str
) -> tuple[dict[str, Any], str, Classes]:
    """The table a variable addresses (`parts` keeps only the keys inside it)."""
    if section == "AGENT" and parts:
        return _subtable(data, "agent", "agent", variable), "agent", (AgentConfig,)
    if section == "SOURCES" and len(parts) > 1:
        return _source(data, parts.pop(0), variable)
    raise ConfigError(variable, "use SYNC_AGENT_AGENT__<KEY> or SYNC_AGENT_SOURCES__<NAME>__<KEY>")


def _source(
    data: dict[str, Any], wanted: str, variable: str
) -> tuple[dict[str, Any], str, Classes]:
    sources = data.get("sources")
    found = [
        s
        for s in (sources if isinstance(sources, list) else [])
        if isinstance(s, dict)
        and isinstance(s.get("name"), str)
        and env_name(s["name"]) == wanted.upper()
    ]
    if len(found) != 1:
        problem = "no source has this name" if not found else "several sources match this name"
        raise ConfigError(variable, f"{problem} (names are matched upper-case, '-' as '_')")
    table = found[0]
    kind = KINDS.get(str(table.get("type")))
    classes: Classes = (SourceConfig, kind.settings) if kind else (SourceConfig,)
    return table, f"sources.{table['name']}", classes


def _subtable(table: dict[str, Any], name: str, key: str, variable: str) -> dict[str, Any]:
    inner = table.setdefault(name, {})
    if not isinstance(inner, dict):
        raise ConfigError(key, f"is not a table, so {variable} cannot set a key in it")
    return inner


def _annotation(classes: Classes, name: str) -> Any:
    for cls in classes:
        fields = fields_of(cls)
        if name in fields:
            return fields[name].type
        if any(name in secret_keys(f.name)[1:] for f in fields.values() if takes_secret(f.type)):
            return str  # `<secret>_file` or `<secret>_env`: a path or a variable name
    return None


def _value(annotation: Any, text: str, key: str, variable: str) -> object:
    kind = plain_type(annotation)
    if kind in TEXT_TYPES or get_origin(kind) is Literal:
        return text
    if get_origin(kind) is tuple:
        return _list(text, key, variable)
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # a duration or a size such as 30s or 1G, checked by the key's parser


def _list(text: str, key: str, variable: str) -> object:
    if not text.lstrip().startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:  # a JSON array of strings or numbers is also a TOML array
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(
            key, f'expected a list such as ["a", "b"] or a,b (set by {variable})'
        ) from None
