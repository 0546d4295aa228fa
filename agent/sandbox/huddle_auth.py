"""Huddle sandbox auth: single-use rotating refresh tokens, 20-minute access tokens, checks.

`POST /token` takes a form-encoded `grant_type=refresh_token&refresh_token=..&client_id=..`
(`client_secret` optional, in the form or as HTTP Basic) and answers
`{"access_token","expires_in","refresh_token"}` with a NEW refresh token every time. A spent
refresh token is refused with 400 `invalid_grant` and recorded in `reused_refresh_tokens`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import BasicAuth, web

from agent.sandbox.server import json_body

SCHEMES = ("bearer", "oauth2")


@dataclass
class TokenIssuer:
    """Who holds which token, and which refresh tokens have been spent."""

    client_id: str
    client_secret: str | None
    lifetime: int
    clock: Callable[[], float]
    issued_refresh_tokens: list[str] = field(default_factory=list)
    reused_refresh_tokens: list[str] = field(default_factory=list)
    _live_refresh: set[str] = field(default_factory=set)
    _spent_refresh: set[str] = field(default_factory=set)
    _access: dict[str, float] = field(default_factory=dict)
    _counter: int = 0

    def add_refresh_token(self, token: str) -> None:
        """Make `token` a valid, unspent refresh token."""
        self.issued_refresh_tokens.append(token)
        self._live_refresh.add(token)

    def issue_access_token(self) -> str:
        self._counter += 1
        token = f"huddle-access-{self._counter}"
        self._access[token] = self.clock() + self.lifetime
        return token

    def access_token_valid(self, token: str) -> bool:
        expiry = self._access.get(token)
        return expiry is not None and self.clock() < expiry

    def expire_all_tokens(self) -> None:
        self._access.clear()

    def revoke_refresh_tokens(self) -> None:
        self._live_refresh.clear()

    def spend(self, refresh_token: str, *, revoke_access: bool) -> dict[str, object] | None:
        """A new token pair for a live refresh token, or None (recording any reuse).

        With `revoke_access` every access token issued before dies with the refresh.
        """
        if refresh_token not in self._live_refresh:
            if refresh_token in self._spent_refresh:
                self.reused_refresh_tokens.append(refresh_token)
            return None
        if revoke_access:
            self._access.clear()
        self._live_refresh.discard(refresh_token)
        self._spent_refresh.add(refresh_token)
        self._counter += 1
        new_refresh = f"huddle-refresh-{self._counter}"
        self.add_refresh_token(new_refresh)
        return {
            "access_token": self.issue_access_token(),
            "expires_in": self.lifetime,
            "refresh_token": new_refresh,
        }

    def client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        if client_id is None or not hmac.compare_digest(client_id, self.client_id):
            return False
        if self.client_secret is None:
            return True
        return client_secret is not None and hmac.compare_digest(client_secret, self.client_secret)


async def token_endpoint(
    issuer: TokenIssuer, request: web.Request, *, revoke_access: bool
) -> web.Response:
    """`POST /token` with the refresh-token grant."""
    form = await request.post()
    client_id, client_secret = _client_credentials(request, form)
    if not issuer.client_ok(client_id, client_secret):
        return json_body({"error": "invalid_client"}, 401)
    grant = form.get("grant_type")
    if grant != "refresh_token":
        return json_body({"error": "unsupported_grant_type"}, 400)
    refresh_token = form.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        return json_body({"error": "invalid_request"}, 400)
    pair = issuer.spend(refresh_token, revoke_access=revoke_access)
    if pair is None:
        return json_body({"error": "invalid_grant"}, 400)
    return json_body(pair, headers={"Cache-Control": "no-store"})


def _client_credentials(
    request: web.Request, form: Mapping[str, object]
) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            basic = BasicAuth.decode(header)
        except ValueError:
            return None, None
        return basic.login, basic.password
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    return (
        client_id if isinstance(client_id, str) else None,
        client_secret if isinstance(client_secret, str) else None,
    )


def auth_refusal(
    issuer: TokenIssuer, header: str | None, *, scheme: str | None, expired_status: int
) -> web.Response | None:
    """None when the `Authorization` header carries a live token in an accepted scheme."""
    given, _, token = (header or "").strip().partition(" ")
    allowed = SCHEMES if scheme is None else (scheme.lower(),)
    if given.lower() not in allowed or not token.strip():
        return json_body(
            {"message": "Authentication required"},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="huddle"'},
        )
    if issuer.access_token_valid(token.strip()):
        return None
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if expired_status == 401 else {}
    return json_body(
        {"message": "The access token is invalid or has expired"}, expired_status, headers
    )
