"""Credentials and cursors: tokens a source obtained (encrypted at rest) and listing cursors.

Sources see this through the `SourceState` interface (`agent.state.source_state`), scoped to
themselves by `Credentials.for_source`.

Replicas on one PostgreSQL database renew a source's tokens one at a time (`renewal`): the
renewer holds a transaction-level advisory lock for the source while it re-reads the stored
tokens, spends the refresh token and saves what it got, each save committed before the lock
is let go; the next holder then reads the new tokens, never the spent ones. A transaction
lock (not a session lock) keeps this working behind a transaction-pooling PgBouncer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime

from cryptography.fernet import InvalidToken
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.state.database import Database, translated
from agent.state.replicas import shared
from agent.state.source_state import SourceState, StoredToken
from agent.state.tables import CursorRow, TokenRow

TOKEN_HISTORY = 5  # rotated refresh tokens kept (encrypted) for forensics
RENEWAL_LOCKS = 0x746F6B6E  # the advisory lock space of token renewals (the key: the source)


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
        try:
            yield
        finally:
            async with translated(self.db.where, None):
                await conn.close()  # ends the transaction, and with it the lock

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

    async def load_token(self, source: str, kind: str) -> StoredToken | None:
        async with self.db.session() as s:
            row = await s.scalar(
                select(TokenRow)
                .where(TokenRow.source == source, TokenRow.kind == kind)
                .order_by(TokenRow.id.desc())
                .limit(1)
            )
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
        encrypted = self.db.cipher.encrypt(value.encode()).decode()
        async with self.db.transaction() as s:
            s.add(
                TokenRow(
                    source=source,
                    kind=kind,
                    value=encrypted,
                    expires_at=None if expires_at is None else expires_at.timestamp(),
                    created_at=self.db.clock(),
                )
            )
            await s.flush()
            keep = select(TokenRow.id).where(TokenRow.source == source, TokenRow.kind == kind)
            keep = keep.order_by(TokenRow.id.desc()).limit(TOKEN_HISTORY)
            await s.execute(
                delete(TokenRow).where(
                    TokenRow.source == source,
                    TokenRow.kind == kind,
                    TokenRow.id.not_in(keep.scalar_subquery()),
                )
            )

    async def load_cursor(self, source: str, key: str) -> str | None:
        async with self.db.session() as s:
            return await s.scalar(
                select(CursorRow.value).where(CursorRow.source == source, CursorRow.key == key)
            )

    async def save_cursor(self, source: str, key: str, value: str | None) -> None:
        async with self.db.transaction() as s:
            row = await s.get(CursorRow, (source, key))
            if value is None:
                if row is not None:
                    await s.delete(row)
                return
            if row is None:
                s.add(CursorRow(source=source, key=key, value=value, updated_at=self.db.clock()))
            elif row.value != value:
                row.value, row.updated_at = value, self.db.clock()


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
