"""The OpenCDE sandbox's OAuth 2 state: clients, one-use codes, expiring and rotating tokens.

Pure bookkeeping with an injected clock; the HTTP handlers in `opencde.py` call it.
Refresh tokens are single-use: spending one twice is recorded in `reused_refresh_tokens`
and refused with `invalid_grant`, so tests can prove a client serialises its refreshes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

CODE_LIFETIME = 60.0


class GrantError(Exception):
    """A token request the server refuses; `error` is the OAuth error code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class TokenGrant:
    """What a successful token request hands out."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect: str
    expires_at: float


class _Refresh(Enum):
    LIVE = "live"
    SPENT = "spent"
    REVOKED = "revoked"


@dataclass
class OAuthServer:
    """Clients, authorization codes and tokens of one sandbox."""

    clients: dict[str, str]  # client_id -> client_secret
    token_lifetime: int
    clock: Callable[[], float]
    issued_access_tokens: list[str] = field(default_factory=list)
    issued_refresh_tokens: list[str] = field(default_factory=list)
    reused_refresh_tokens: list[str] = field(default_factory=list)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _access: dict[str, float] = field(default_factory=dict)  # token -> expires at
    _refresh: dict[str, tuple[str, _Refresh]] = field(default_factory=dict)

    def register(self, client_name: str) -> tuple[str, str]:
        """Dynamic client registration: a new (client_id, client_secret)."""
        client_id = f"{client_name.lower().replace(' ', '-')[:32]}-{secrets.token_hex(4)}"
        secret = secrets.token_urlsafe(24)
        self.clients[client_id] = secret
        return client_id, secret

    def issue_code(self, client_id: str, redirect: str) -> str:
        code = f"code_{secrets.token_urlsafe(18)}"
        self._codes[code] = _Code(client_id, redirect, self.clock() + CODE_LIFETIME)
        return code

    def authenticate_client(self, authorization: str | None) -> str:
        """The client id from a valid HTTP Basic header, else GrantError 401."""
        client_id, _, secret = _basic_credentials(authorization).partition(":")
        expected = self.clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected, secret):
            raise GrantError("invalid_client", "client authentication failed", 401)
        return client_id

    def redeem_code(self, client_id: str, code: str, redirect: str | None) -> TokenGrant:
        entry = self._codes.pop(code, None)  # single use, whatever the outcome
        if entry is None or entry.expires_at < self.clock():
            raise GrantError("invalid_grant", "unknown, used or expired authorization code")
        if entry.client_id != client_id:
            raise GrantError("invalid_grant", "the code was issued to another client")
        if redirect is not None and redirect != entry.redirect:
            raise GrantError("invalid_grant", "redirect URL does not match the authorization")
        return self._grant(client_id)

    def refresh(self, client_id: str, refresh_token: str) -> TokenGrant:
        owner, state = self._refresh.get(refresh_token, ("", _Refresh.REVOKED))
        if state is _Refresh.SPENT:
            self.reused_refresh_tokens.append(refresh_token)
            raise GrantError("invalid_grant", "refresh token already used")
        if state is _Refresh.REVOKED or owner != client_id:
            raise GrantError("invalid_grant", "unknown or revoked refresh token")
        self._refresh[refresh_token] = (owner, _Refresh.SPENT)
        return self._grant(client_id)

    def access_problem(self, token: str) -> str | None:
        """Why `token` is not accepted, or None when it is."""
        expires_at = self._access.get(token)
        if expires_at is None:
            return "unknown access token"
        if expires_at <= self.clock():
            return "access token expired"
        return None

    def expire_all_tokens(self) -> None:
        for token in self._access:
            self._access[token] = float("-inf")

    def revoke_refresh_tokens(self) -> None:
        for token, (owner, _) in self._refresh.items():
            self._refresh[token] = (owner, _Refresh.REVOKED)

    def _grant(self, client_id: str) -> TokenGrant:
        access = f"at_{secrets.token_urlsafe(24)}"
        refresh = f"rt_{secrets.token_urlsafe(24)}"
        self._access[access] = self.clock() + self.token_lifetime
        self._refresh[refresh] = (client_id, _Refresh.LIVE)
        self.issued_access_tokens.append(access)
        self.issued_refresh_tokens.append(refresh)
        return TokenGrant(access, refresh, self.token_lifetime)


def _basic_credentials(authorization: str | None) -> str:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        raise GrantError("invalid_client", "HTTP Basic client authentication required", 401)
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise GrantError("invalid_client", "malformed Basic credentials", 401) from exc
