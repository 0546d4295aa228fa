"""OpenCDE discovery and tokens: the Foundation API's endpoints and rotating refresh tokens.

Discovery asks `foundation/versions` and `foundation/1.0/auth` once and keeps the answer in
the `discovery` cursor. Tokens come from a single-use refresh token: the configured seed
until it has been spent once (or a login happened), then the one in the state database;
each new refresh token is saved before the access token that came with it is used.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from agent.config import OpenCdeSettings
from agent.errors import AuthenticationError, FatalSourceError
from agent.sources.auth import Grant, TokenAuth, post_grant
from agent.sources.base import SourceContext
from agent.sources.vendor import json_object, load_json

DISCOVERY = "discovery"
REFRESH_SEED = "refresh_seed"
DOCUMENTS_API = ("documents", "1.0")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the Documents API and the OAuth endpoints of one CDE live."""

    base_url: str
    api: str
    auth_url: str
    token_url: str


async def discover(ctx: SourceContext, *, fresh: bool = False) -> Endpoints:
    """The CDE's endpoints from the Foundation API, cached in the `discovery` cursor."""
    base = ctx.config.base_url
    if not fresh:
        cached = load_json(await ctx.state.load_cursor(DISCOVERY))
        if isinstance(cached, dict) and cached.get("base_url") == base:
            try:
                return Endpoints(**cached)
            except TypeError:
                pass  # an older shape: discover again
    versions = await _get_json(ctx, f"{base}/foundation/versions")
    auth = await _get_json(ctx, f"{base}/foundation/1.0/auth")
    endpoints = Endpoints(
        base_url=base,
        api=_documents_api(ctx.config.name, versions),
        auth_url=_string_field(ctx.config.name, auth, "oauth2_auth_url"),
        token_url=_string_field(ctx.config.name, auth, "oauth2_token_url"),
    )
    await ctx.state.save_cursor(DISCOVERY, json.dumps(asdict(endpoints)))
    return endpoints


async def _get_json(ctx: SourceContext, url: str) -> Any:
    response = await ctx.client.request("GET", url, headers={"Accept": "application/json"})
    if response.status != 200:
        raise FatalSourceError(
            ctx.config.name, f"discovery failed: {url} answered HTTP {response.status}"
        )
    return response.json()


def _documents_api(source: str, body: object) -> str:
    """`api_base_url` of the Documents API 1.0 (any 1.x when 1.0 itself is not listed)."""
    entries = json_object(body).get("versions")
    candidates = [
        e
        for e in entries or ()
        if isinstance(e, dict)
        and e.get("api_id") == DOCUMENTS_API[0]
        and isinstance(e.get("api_base_url"), str)
        and str(e.get("version_id", "")).startswith("1.")
    ]
    candidates.sort(key=lambda e: e.get("version_id") != DOCUMENTS_API[1])
    if not candidates:
        raise FatalSourceError(source, "the CDE does not offer the OpenCDE Documents API 1.0")
    return str(candidates[0]["api_base_url"]).rstrip("/")


def _string_field(source: str, body: object, key: str) -> str:
    value = json_object(body).get(key)
    if not isinstance(value, str) or not value:
        raise FatalSourceError(source, f"the CDE's auth discovery has no {key}")
    return value


def login_hint(source: str) -> str:
    return f"run `sync-agent login {source}`"


async def request_grant(
    ctx: SourceContext, token_url: str, form: Mapping[str, str], *, what: str
) -> Grant:
    """POST a grant to the token endpoint, once (codes and refresh tokens are single-use).

    The client authenticates with HTTP Basic; a public client (no secret) sends its id in
    the form. 200 and 201 both mean success; `expires_in` may be a number or a string.
    """
    name = ctx.config.name
    body = dict(form)
    secret = ctx.config.client_secret
    client_auth = None
    if secret is not None:
        client_auth = (ctx.config.client_id or "", secret.reveal())
    else:
        body["client_id"] = ctx.config.client_id or ""

    def refused(status: int, code: str | None) -> str:
        return f"{what} was refused ({code or f'HTTP {status}'}): {login_hint(name)}"

    return await post_grant(
        ctx.client,
        token_url,
        body,
        source=name,
        refused=refused,
        client_auth=client_auth,
        once=True,
    )


def seed_digest(ctx: SourceContext) -> str | None:
    """A hash of the configured refresh token (never the token itself), or None."""
    settings = ctx.config.settings
    assert isinstance(settings, OpenCdeSettings)
    if settings.refresh_token is None:
        return None
    return hashlib.sha256(settings.refresh_token.reveal().encode()).hexdigest()


async def mark_seed_spent(ctx: SourceContext) -> None:
    """From now on the stored refresh token wins over the configured one (until it changes)."""
    digest = seed_digest(ctx)
    if digest is not None:
        await ctx.state.save_cursor(REFRESH_SEED, digest)


class RefreshTokenAuth(TokenAuth):
    """Bearer tokens from a rotating, single-use refresh token (see the module docstring).

    `token_url` is the endpoint, or an async function that finds it (discovery runs only
    when a token is needed).
    """

    def __init__(
        self,
        ctx: SourceContext,
        token_url: str | Callable[[], Awaitable[str]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ctx.state, source=ctx.config.name, clock=clock)
        self.ctx = ctx
        self.token_url = token_url

    async def obtain(self) -> Grant:
        refresh, from_seed = await self._refresh_token()
        url = self.token_url if isinstance(self.token_url, str) else await self.token_url()
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        try:
            grant = await request_grant(self.ctx, url, form, what="the refresh token")
        except AuthenticationError:
            if from_seed:
                await mark_seed_spent(self.ctx)
            raise
        if grant.refresh is not None:
            await self.state.save_token("refresh", grant.refresh)
        if from_seed:
            await mark_seed_spent(self.ctx)
        return grant

    async def _refresh_token(self) -> tuple[str, bool]:
        settings = self.ctx.config.settings
        assert isinstance(settings, OpenCdeSettings)
        digest = seed_digest(self.ctx)
        if settings.refresh_token is not None and digest != await self.state.load_cursor(
            REFRESH_SEED
        ):
            return settings.refresh_token.reveal(), True
        stored = await self.state.load_token("refresh")
        if stored is not None and stored.value:
            return stored.value, False
        name = self.ctx.config.name
        raise AuthenticationError(name, f"not signed in: {login_hint(name)}")
