"""What a source may keep in the state database (tokens, cursors): the interface and a fake.

The state layer owns this interface; sources depend on it, never the reverse. The real
implementation is the store scoped to one source; `MemorySourceState` is the in-memory
fake beside it, for tests of a single source.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredToken:
    value: str
    expires_at: datetime | None = None


class SourceState(Protocol):
    """What a source may keep in the state database: tokens (encrypted) and cursors."""

    async def load_token(self, kind: str) -> StoredToken | None: ...

    async def save_token(
        self, kind: str, value: str, expires_at: datetime | None = None
    ) -> None: ...

    async def load_cursor(self, key: str) -> str | None: ...

    async def save_cursor(self, key: str, value: str | None) -> None: ...

    def renewal(self) -> AbstractAsyncContextManager[None]:
        """Hold the source's token renewal: while held, no other process renews its tokens,
        so what the holder reads is current and a refresh token it spends is spent once."""
        ...


@dataclass
class MemorySourceState:
    """An in-memory SourceState for tests of a single source."""

    tokens: dict[str, StoredToken] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    token_history: list[tuple[str, str]] = field(default_factory=list)
    renewing: asyncio.Lock = field(default_factory=asyncio.Lock)  # shared by its users

    async def load_token(self, kind: str) -> StoredToken | None:
        return self.tokens.get(kind)

    async def save_token(self, kind: str, value: str, expires_at: datetime | None = None) -> None:
        self.tokens[kind] = StoredToken(value, expires_at)
        self.token_history.append((kind, value))

    async def load_cursor(self, key: str) -> str | None:
        return self.cursors.get(key)

    async def save_cursor(self, key: str, value: str | None) -> None:
        if value is None:
            self.cursors.pop(key, None)
        else:
            self.cursors[key] = value

    @asynccontextmanager
    async def renewal(self) -> AsyncIterator[None]:
        async with self.renewing:
            yield
