"""Bearer tokens that renew themselves: early refresh, single-flight renewal, persistence."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.state.source_state import SourceState


@dataclass(frozen=True, slots=True)
class Token:
    access: str
    expires_at: float  # epoch seconds


def parse_expires_in(value: object, default: float = 3600.0) -> float:
    """`expires_in` as a number or a numeric string (OpenCDE sends strings)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return default
    return default


class TokenAuth(ABC):
    """Supplies `Authorization` and renews the token ahead of expiry or when rejected.

    Renewal is single-flight: concurrent tasks wait for one renewal, and a task whose
    rejected header is already stale does not renew again (so a rotating refresh token is
    never spent twice). Access tokens are kept in the state database so that a new process
    reuses a still-valid token instead of asking for another.
    """

    retry_statuses: frozenset[int] = frozenset({401})

    def __init__(
        self,
        state: SourceState,
        *,
        scheme: str = "Bearer",
        early: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.scheme = scheme
        self.early = early
        self.clock = clock
        self.token: Token | None = None
        self._loaded = False
        self._lock = asyncio.Lock()

    def _header(self, token: Token) -> str:
        return f"{self.scheme} {token.access}"

    def _fresh(self, token: Token | None) -> bool:
        return token is not None and token.expires_at - self.early > self.clock()

    async def authorization(self) -> str:
        if not self._fresh(self.token):
            async with self._lock:
                await self._load_saved()
                if not self._fresh(self.token):
                    await self._renew()
        assert self.token is not None
        return self._header(self.token)

    async def refresh(self, rejected: str) -> None:
        async with self._lock:
            if self.token is not None and self._header(self.token) != rejected:
                return  # another task renewed already
            await self._renew()

    async def _load_saved(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = await self.state.load_token("access")
        if saved is not None and saved.expires_at is not None:
            self.token = Token(saved.value, saved.expires_at.timestamp())

    async def _renew(self) -> None:
        self.token = await self.obtain()
        expires = datetime.fromtimestamp(self.token.expires_at, UTC)
        await self.state.save_token("access", self.token.access, expires)

    @abstractmethod
    async def obtain(self) -> Token:
        """Get a new access token from the authorisation server (called under the lock)."""
