"""Huddle's refresh-token grant: single-use refresh tokens, persisted before they are spent.

Every token response carries a NEW refresh token and the old one dies, so the new one is
written to the state database before its access token is used. The saved value is tagged
with a fingerprint of the configured seed token: when the user puts a fresh refresh token
in the configuration (after a revocation, say) the saved chain from the old seed is dropped.
Renewal runs under `TokenAuth`'s lock and the state's renewal lock, and reads the refresh
token from the state each time, so neither concurrent tasks nor replicas spend one twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from agent.config import HuddleSettings
from agent.errors import AuthenticationError
from agent.sources.auth import Grant, TokenAuth, post_grant
from agent.sources.base import SourceContext

REFRESH_KIND = "refresh"
TOKEN_LIFETIME = 1200.0  # Huddle's documented 20 minutes, when `expires_in` is missing
EARLY_REFRESH = 120.0  # renew this long before expiry


def seed_fingerprint(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def pick_refresh_token(seed: str, saved: str | None) -> str:
    """The refresh token to spend: the saved rotation when it grew from this seed, else the seed."""
    if saved:
        fingerprint, _, token = saved.partition(":")
        if fingerprint == seed_fingerprint(seed) and token:
            return token
    return seed


class HuddleAuth(TokenAuth):
    """`Authorization: Bearer <t>` (or `OAuth2 <t>`), renewed with the refresh-token grant.

    An expired token is refused with 401 (newer docs) or 403 (older docs): both renew.
    """

    renew_statuses = frozenset({401, 403})

    def __init__(
        self,
        ctx: SourceContext,
        settings: HuddleSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            ctx.state,
            source=ctx.config.name,
            scheme=settings.auth_scheme,
            early=EARLY_REFRESH,
            lifetime=TOKEN_LIFETIME,
            clock=clock,
        )
        if settings.refresh_token is None or ctx.config.client_id is None:
            raise AuthenticationError(ctx.config.name, "refresh_token and client_id are required")
        self._seed = settings.refresh_token.reveal()
        self._client_id = ctx.config.client_id
        secret = ctx.config.client_secret
        self._client_secret = secret.reveal() if secret is not None else None
        self.ctx = ctx
        self.token_url = settings.token_url

    def rejected_hint(self) -> str:
        """Huddle's two generations name the scheme differently and a server may take one."""
        other = "OAuth2" if self.scheme == "Bearer" else "Bearer"
        return (
            f'a Huddle server that takes only the {other} scheme refuses "{self.scheme}": '
            f'try auth_scheme = "{other}"'
        )

    async def obtain(self) -> Grant:
        spent = await self._current_refresh_token()
        grant = await post_grant(
            self.ctx.client, self.token_url, self._form(spent), source=self.source, refused=_refused
        )
        await self._keep_refresh_token(grant.refresh, spent)
        return grant

    def _form(self, refresh_token: str) -> dict[str, str]:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self._client_id,
        }
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        return form

    async def _current_refresh_token(self) -> str:
        """The stored one (read again: another replica may have rotated it), or the seed."""
        saved = await self.state.load_token(REFRESH_KIND)
        return pick_refresh_token(self._seed, saved.value if saved else None)

    async def _keep_refresh_token(self, new: str | None, spent: str) -> None:
        """Persist a rotated refresh token before anything uses the new access token."""
        if not new or new == spent:
            return  # not rotated: the old one stays valid
        await self.state.save_token(REFRESH_KIND, f"{seed_fingerprint(self._seed)}:{new}")


def _refused(status: int, code: str | None) -> str:
    if code == "invalid_client":
        return f"the token endpoint refused client_id/client_secret (HTTP {status})"
    detail = f"{code}, " if code else ""
    return (
        f"the token endpoint refused the refresh token ({detail}HTTP {status}): "
        "it was revoked or already used; put a new refresh_token in the config"
    )
