"""Secrets: the wrapper that never prints, and reading `name`, `name_file` or `name_env`.

A key typed `Secret` may be written three ways, exactly one of them: the value itself
(`client_secret`), a file holding it (`client_secret_file`, `${VAR}` expanded, e.g.
`${CREDENTIALS_DIRECTORY}/sm` under systemd) or an environment variable naming it
(`client_secret_env`). Messages name the key, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ConfigError

VARIABLE_RE = re.compile(r"\$\{?(\w+)\}?")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VARIANTS = ("", "_file", "_env")


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


def secret_keys(name: str) -> tuple[str, ...]:
    """The keys a secret may be written under: `name`, `name_file`, `name_env`."""
    return tuple(name + suffix for suffix in VARIANTS)


def given_secret_key(table: Mapping[str, object], name: str, prefix: str) -> str | None:
    """Which of `name`, `name_file`, `name_env` the table uses; more than one is an error."""
    given = [k for k in secret_keys(name) if k in table]
    if len(given) > 1:
        raise ConfigError(f"{prefix}.{given[1]}", f"give only one of {', '.join(given)}")
    return given[0] if given else None


def read_secret(
    table: Mapping[str, object], key: str, prefix: str, env: Mapping[str, str]
) -> Secret:
    """The secret written under `key` (`name`, `name_file` or `name_env`) of `table`."""
    value = table[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{prefix}.{key}", "expected a non-empty string")
    if key.endswith("_env"):
        if not ENV_NAME_RE.match(value):  # perhaps the secret itself: never echo it
            raise ConfigError(f"{prefix}.{key}", "expected the name of an environment variable")
        if not env.get(value):
            raise ConfigError(f"{prefix}.{key}", f"environment variable {value} is not set")
        return Secret(env[value].strip())
    if key.endswith("_file"):
        return Secret(_read_file(f"{prefix}.{key}", value, env))
    return Secret(value)


def _read_file(key: str, value: str, env: Mapping[str, str]) -> str:
    missing = [v for v in VARIABLE_RE.findall(value) if v not in env]
    if missing:
        raise ConfigError(key, f"environment variable {missing[0]} is not set")
    path = Path(VARIABLE_RE.sub(lambda m: env[m.group(1)], value)).expanduser()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(key, f"{path} is empty")
    return secret
