"""`[[webhooks]]`: reading the tables, and the values a webhook takes beyond its plain type.

A webhook's `secret` is a Standard Webhooks signing secret, `whsec_` and 24 to 64 random
bytes in base64; its `types` are change-journal event types; its `sources` name configured
sources. An endpoint is known by its `name` (in metrics and in the state, which keeps where
it stands in the journal); without one the name is taken from the URL's host and path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

import msgspec

from agent.config.model import WebhookConfig
from agent.config.schema import Context, read_table
from agent.config.values import NAME_RE
from agent.errors import ConfigError

SECRET_PREFIX = "whsec_"  # noqa: S105 - how such secrets begin, not a secret
SECRET_BYTES = (24, 64)  # the specification: at least 24 bytes, at most 512 bits


def read_webhooks(
    tables: object, sources: Collection[str], ctx: Context
) -> tuple[WebhookConfig, ...]:
    """Every `[[webhooks]]` table, checked against the configured source names."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("webhooks", "expected [[webhooks]] tables")
    hooks = tuple(_read(table, i, sources, ctx) for i, table in enumerate(tables))
    seen: dict[str, int] = {}
    for index, hook in enumerate(hooks):
        if hook.name in seen:
            raise ConfigError(
                f"webhooks[{index}].name",
                f"duplicate webhook name {hook.name!r} (webhooks[{seen[hook.name]}] has it); "
                "give each endpoint its own name",
            )
        seen[hook.name] = index
    return hooks


def _read(
    table: Mapping[str, object], index: int, sources: Collection[str], ctx: Context
) -> WebhookConfig:
    prefix = f"webhooks[{index}]"
    hook = read_table(WebhookConfig, table, prefix, ctx)
    if hook.secret is not None:
        check_secret(hook.secret.reveal(), f"{prefix}.secret")
    for i, name in enumerate(hook.sources):
        if name not in sources:
            raise ConfigError(f"{prefix}.sources[{i}]", f"no source named {name!r}")
    if not hook.name:
        hook = msgspec.structs.replace(hook, name=endpoint_name(hook.url))
    return hook


def check_secret(secret: str, key: str) -> bytes:
    """The signing key of a `whsec_...` secret; ConfigError names the key, never the value."""
    problem = (
        "expected a Standard Webhooks secret: 'whsec_' then 24 to 64 random bytes in base64 "
        "(make one with: echo whsec_$(openssl rand -base64 32))"
    )
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(key, problem)
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(key, problem) from None
    if not SECRET_BYTES[0] <= len(raw) <= SECRET_BYTES[1]:
        raise ConfigError(key, f"{problem}; this one holds {len(raw)} bytes")
    return raw


def endpoint_name(url: str) -> str:
    """A name for an endpoint without one: its host, port and path (never its query)."""
    parts = urlsplit(url)
    host = parts.hostname or "webhook"
    port = f"-{parts.port}" if parts.port else ""
    path = parts.path.strip("/").replace("/", "-")
    name = "".join(c if NAME_RE.match(c) else "_" for c in f"{host}{port}-{path}".rstrip("-"))
    if len(name) <= 64:
        return name
    return f"{name[:55]}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def fingerprint(hook: WebhookConfig) -> str:
    """What identifies an endpoint's destination: a new URL or secret enables it again."""
    secret = hook.secret.reveal() if hook.secret is not None else ""
    return hashlib.sha256(f"{hook.url}\n{secret}".encode()).hexdigest()
