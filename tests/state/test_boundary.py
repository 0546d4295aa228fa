"""The state database's driver boundary: driver errors reach the user as the agent's
StateError (the driver's reason and the database's name, never the SQL, SQLAlchemy's
documentation link or a password), SQLite's settings, and a cancelled write's lock."""

from __future__ import annotations

import asyncio
import gc
import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.errors import StateError
from agent.state.database import Database, describe_url
from agent.state.store import Store


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


def assert_plain(message: str) -> None:
    for leak in ("[SQL", "sqlalche.me", "Traceback", "hunter2"):
        assert leak not in message


async def test_an_unreachable_postgresql_is_named_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://agent:hunter2@127.0.0.1:{closed_port()}/state"

    with pytest.raises(StateError) as caught:
        async with Store.open(url, tmp_path):
            pass

    message = str(caught.value)
    assert message.startswith("state database postgresql+asyncpg://agent@127.0.0.1:")
    assert_plain(message)


async def test_a_wrong_password_is_the_servers_reason(pg_url: str, tmp_path: Path) -> None:
    url = pg_url.replace("postgres:", "postgres:x", 1)  # the fixture's user, a wrong password

    with pytest.raises(StateError) as caught:
        async with Store.open(url, tmp_path):
            pass

    assert 'password authentication failed for user "postgres"' in str(caught.value)
    assert_plain(str(caught.value))


async def test_a_missing_driver_names_the_extra_to_install(tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        async with Store.open("postgresql+psycopg://u:hunter2@127.0.0.1/x", tmp_path):
            pass
    assert "sync-agent[postgres]" in str(caught.value)
    assert_plain(str(caught.value))


async def test_a_synchronous_driver_is_refused_plainly(tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        async with Store.open(f"sqlite:///{tmp_path / 'state.db'}", tmp_path):
            pass
    assert str(caught.value).startswith("state_url: ")
    assert_plain(str(caught.value))


async def test_a_constraint_violation_is_a_state_error(store: Store) -> None:
    """Any statement's failure crosses the boundary as StateError, on both backends."""

    async def insert_twice() -> None:
        async with store.db.begin() as conn:
            for name in ("a", "b"):
                await conn.exec_driver_sql(
                    f"INSERT INTO sources (id, name, type) VALUES (1, '{name}', 't')"
                )

    with pytest.raises(StateError) as caught:
        await insert_twice()
    assert_plain(str(caught.value))
    assert "INSERT" not in str(caught.value)


def test_urls_are_named_without_password_or_query() -> None:
    assert (
        describe_url("postgresql+asyncpg://u:hunter2@db:5432/state?ssl=require&password=hunter2")
        == "postgresql+asyncpg://u@db:5432/state"
    )
    assert describe_url("sqlite+aiosqlite:////var/lib/sync-agent/state.db") == (
        "/var/lib/sync-agent/state.db"
    )


async def test_sqlite_commits_reach_the_disk_so_journal_numbers_never_repeat(
    tmp_path: Path,
) -> None:
    """Every SQLite commit is synced (synchronous=FULL, 2), not only at WAL checkpoints:
    a power cut may not take back journal entries that readers already hold the `seq` of."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    async with Database.open(url, tmp_path) as db, db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"


def write_lock_free(path: Path) -> bool:
    """Can another connection take the write lock at once (no busy wait)?"""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def test_a_write_cancelled_while_its_statement_runs_lets_the_lock_go(
    tmp_path: Path,
) -> None:
    """A task cancelled while a statement of its write transaction runs (a stop, a lost
    lease) leaves SQLite's write lock free once it ended. It used to stay held until the
    garbage collector freed the statement's cursor, and every other writer of the process
    failed after busy_timeout with "database is locked"."""
    path = tmp_path / "state.db"
    started, release = threading.Event(), threading.Event()

    def hold() -> int:  # runs in the driver's thread, inside the statement
        started.set()
        release.wait(10)
        return 1

    async def write() -> None:
        async with db.begin() as conn:  # BEGIN IMMEDIATE: the write lock
            raw = await conn.get_raw_connection()
            await raw.driver_connection.create_function("hold", 0, hold)  # type: ignore[union-attr]
            await conn.exec_driver_sql("SELECT hold()")

    gc.disable()  # a collection would free the cursor and hide the held lock
    try:
        async with Database.open(f"sqlite+aiosqlite:///{path}", tmp_path) as db:
            writing = asyncio.create_task(write())
            assert await asyncio.to_thread(started.wait, 10)
            writing.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await writing
            assert write_lock_free(path)
    finally:
        gc.enable()
