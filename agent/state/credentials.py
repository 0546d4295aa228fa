"""Credentials and cursors: tokens a source obtained (encrypted at rest) and listing cursors.

Sources see this through the `SourceState` interface (`agent.state.source_state`), scoped to
themselves by `Credentials.for_source`.

Replicas on one PostgreSQL database renew a source's tokens one at a time (`renewal`): the
renewer opens a transaction holding a transaction-level advisory lock for the source, and
every read and write of that source's tokens and cursors within the renewal (in the same
task) goes through that transaction. So it re-reads the stored tokens under the lock,
spends the refresh token, and what it saves commits together with the lock's release (also
when the renewal fails: what was saved stays saved); the next holder reads the new tokens,
never the spent ones. One connection per renewal, and a transaction lock, not a session
lock, keep this working behind a transaction-pooling PgBouncer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import cast

from cryptography.fernet import InvalidToken
from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.state.database import Database, translated
from agent.state.replicas import shared, upsert
from agent.state.source_state import SourceState, StoredToken
from agent.state.tables import CursorRow, TokenRow

TOKEN_HISTORY = 5  # rotated refresh tokens kept (encrypted) for forensics
RENEWAL_LOCKS = 0x746F6B6E  # the advisory lock space of token renewals (the key: the source)
TOKENS = cast(Table, TokenRow.__table__)
CURSORS = cast(Table, CursorRow.__table__)

# The renewal this task is in, if any: (source, the connection holding its lock).
_renewing: ContextVar[tuple[str, AsyncConnection] | None] = ContextVar("renewing", default=None)


class Credentials:
    """Tokens and cursors of every source."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def for_source(self, source: str) -> SourceState:
        return ScopedCredentials(self, source)

    @asynccontextmanager
    async def renewal(self, source: str) -> AsyncIterator[None]:
        """Hold `source`'s token renewal across processes (see the module); SQLite has one
        process, whose callers serialise their renewals themselves."""
        if not shared(self.db):
            yield
            return
        conn = await self._renewal_lock(source)
        entered = _renewing.set((source, conn))
        try:
            yield
        finally:
            _renewing.reset(entered)
            async with translated(self.db.where, None):
                try:
                    await conn.commit()  # what the renewal saved, and the lock let go
                finally:
                    await conn.close()

    async def _renewal_lock(self, source: str) -> AsyncConnection:
        """A connection in a transaction that holds the source's renewal lock (waiting for it)."""
        async with translated(self.db.where, None):
            conn = await self.db.engine.connect()
            try:
                await conn.begin()
                key = func.hashtext(source)
                await conn.execute(select(func.pg_advisory_xact_lock(RENEWAL_LOCKS, key)))
            except BaseException:
                await conn.close()
                raise
            return conn

    @asynccontextmanager
    async def _connection(self, source: str, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """The renewal's transaction when this task renews `source`'s tokens, else a new
        writing transaction or a reading connection."""
        held = _renewing.get()
        if held is not None and held[0] == source:
            async with translated(self.db.where, None):
                yield held[1]
            return
        async with self.db.begin() if write else self.db.connect() as conn:
            yield conn

    async def load_token(self, source: str, kind: str) -> StoredToken | None:
        mine = (TOKENS.c.source == source) & (TOKENS.c.kind == kind)
        async with self._connection(source, write=False) as conn:
            newest = select(TOKENS).where(mine).order_by(TOKENS.c.id.desc()).limit(1)
            row = (await conn.execute(newest)).first()
        if row is None:
            return None
        try:
            value = self.db.cipher.decrypt(row.value.encode()).decode()
        except InvalidToken:
            return None  # the key file was replaced: the token is unreadable, obtain a new one
        expires = None if row.expires_at is None else datetime.fromtimestamp(row.expires_at, UTC)
        return StoredToken(value, expires)

    async def save_token(
        self, source: str, kind: str, value: str, expires_at: datetime | None
    ) -> None:
        row = {
            "source": source,
            "kind": kind,
            "value": self.db.cipher.encrypt(value.encode()).decode(),
            "expires_at": None if expires_at is None else expires_at.timestamp(),
            "created_at": self.db.clock(),
        }
        mine = (TOKENS.c.source == source) & (TOKENS.c.kind == kind)
        keep = select(TOKENS.c.id).where(mine).order_by(TOKENS.c.id.desc()).limit(TOKEN_HISTORY)
        async with self._connection(source, write=True) as conn:
            await conn.execute(insert(TOKENS).values(row))
            await conn.execute(
                delete(TOKENS).where(mine, TOKENS.c.id.not_in(keep.scalar_subquery()))
            )

    async def load_cursor(self, source: str, key: str) -> str | None:
        async with self._connection(source, write=False) as conn:
            value = await conn.scalar(
                select(CURSORS.c.value).where(CURSORS.c.source == source, CURSORS.c.key == key)
            )
        return None if value is None else str(value)

    async def save_cursor(self, source: str, key: str, value: str | None) -> None:
        mine = (CURSORS.c.source == source) & (CURSORS.c.key == key)
        async with self._connection(source, write=True) as conn:
            if value is None:
                await conn.execute(delete(CURSORS).where(mine))
                return
            row = {"source": source, "key": key, "value": value, "updated_at": self.db.clock()}
            await upsert(conn, CURSORS, row, ["source", "key"])


class ScopedCredentials:
    """The `SourceState` a source sees: the credentials store, scoped to that source."""

    def __init__(self, credentials: Credentials, source: str) -> None:
        self.credentials = credentials
        self.source = source

    async def load_token(self, kind: str) -> StoredToken | None:
        return await self.credentials.load_token(self.source, kind)

    async def save_token(self, kind: str, value: str, expires_at: datetime | None = None) -> None:
        await self.credentials.save_token(self.source, kind, value, expires_at)

    async def load_cursor(self, key: str) -> str | None:
        return await self.credentials.load_cursor(self.source, key)

    async def save_cursor(self, key: str, value: str | None) -> None:
        await self.credentials.save_cursor(self.source, key, value)

    def renewal(self) -> AbstractAsyncContextManager[None]:
        return self.credentials.renewal(self.source)
