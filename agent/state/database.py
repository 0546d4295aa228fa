"""The state database's lifecycle and boundary: open, check, migrate, pragmas, the token key.

`Database.open` checks an SQLite file before trusting it (`agent.state.damage`), sets a
damaged one aside when the caller may (`repair`, the holder of the instance lock), applies
the migrations, and reads or creates the key that encrypts tokens at rest. Every statement
of the state layer then runs inside `connect()`, `begin()`, `session()` or `transaction()`,
which translate the drivers' errors into the agent's own in one place (`translated`):
`CorruptStateError` for a damaged file (leaving a marker, so the next open sets it aside
even where its cheap check would not see the damage), `StateError` for everything else,
with the driver's one-line reason and never the SQL.

A damaged file found during a pass is not replaced under the running process (other passes
hold rows of it): the pass fails with `CorruptStateError`, and the next start rebuilds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict, Unpack

from cryptography.fernet import Fernet
from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    event,
    inspect,
    make_url,
    text,
)
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from agent.errors import CorruptStateError, StateError
from agent.log import get_logger
from agent.state import damage
from agent.state.tables import Base

Clock = Callable[[], float]
MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0009"  # the newest migration; tests/test_schema.py keeps it equal to Alembic's
MIGRATION_LOCK = 0x73796E63  # PostgreSQL advisory lock held while migrating: one migrator
DRIVER_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError)
_ADAPTED = re.compile(r"^<class '[\w.]+'>: ")  # how SQLAlchemy's asyncpg adapter prefixes
# Alembic's own version table, as `alembic stamp` creates it (alembic.runtime.migration)
VERSION_TABLE = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
WRITE = "sync_agent_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class OpenOptions(TypedDict, total=False):
    clock: Clock  # time.time
    repair: bool  # False; only the holder of the instance lock may set a damaged file aside
    connections: int  # 8; a server database's pool (SQLite keeps SQLAlchemy's default)


class Database:
    """An open state database: its engine, the token key, the clock, and the error boundary."""

    def __init__(
        self,
        engine: AsyncEngine,
        cipher: Fernet,
        clock: Clock,
        *,
        where: str,
        path: Path | None,
        rebuilt_from: Path | None,
    ) -> None:
        self.engine = engine
        self.cipher = cipher
        self.clock = clock
        self.where = where  # how errors name the database: a path, or a URL without secrets
        self.path = path  # the SQLite file; None for PostgreSQL and in-memory databases
        self.rebuilt_from = rebuilt_from  # where a damaged file was set aside by this open
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._writer = engine.execution_options(**{WRITE: True})
        self._write_sessions = async_sessionmaker(self._writer, expire_on_commit=False)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, state_dir: Path, **options: Unpack[OpenOptions]
    ) -> AsyncIterator[Database]:
        """Open (checking, repairing when allowed, migrating) and dispose of it on exit."""
        clock = options.get("clock", time.time)
        repair = options.get("repair", False)
        connections = options.get("connections", 8)
        cipher = load_cipher(state_dir)
        path, where = sqlite_file(url), describe_url(url)
        rebuilt_from = None
        if path is not None:
            rebuilt_from = await _checked(path, where, repair=repair, clock=clock)
        try:
            engine = await _migrated(url, where, path, connections)
        except CorruptStateError as exc:
            if path is None or not repair or rebuilt_from is not None:
                raise
            rebuilt_from = await _set_aside(path, exc.reason, clock)
            engine = await _migrated(url, where, path, connections)
        try:
            yield cls(engine, cipher, clock, where=where, path=path, rebuilt_from=rebuilt_from)
        finally:
            await engine.dispose()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (Core)."""
        async with translated(self.where, self.path), self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on exit (Core)."""
        async with translated(self.where, self.path), self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An ORM session for reads."""
        async with translated(self.where, self.path), self._sessions() as s:
            yield s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """An ORM session in a transaction, committed on exit."""
        async with translated(self.where, self.path), self._write_sessions.begin() as s:
            yield s


@asynccontextmanager
async def translated(where: str, path: Path | None) -> AsyncIterator[None]:
    """The one place where driver errors become the agent's (`raise ... from`)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        error = translate(exc, where)
        if isinstance(error, CorruptStateError) and path is not None:
            damage.leave_marker(path, error.reason)
        raise error from exc


def translate(exc: BaseException, where: str) -> StateError:
    """A driver error as the agent's own: the driver's first line of reason, never the SQL."""
    reason = driver_reason(exc)
    if damage.is_corruption(exc):
        return CorruptStateError(where, reason)
    return StateError(f"state database {where}: {reason}")


def driver_reason(exc: BaseException) -> str:
    """What the database driver said, without SQLAlchemy's SQL echo and documentation link."""
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    if isinstance(cause, SQLAlchemyError):
        said = str(cause.args[0]) if cause.args else ""
    else:
        said = str(cause)
    lines = _ADAPTED.sub("", said.strip()).splitlines()
    return lines[0] if lines else type(cause).__name__


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL; None for a server or an in-memory database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def describe_url(url: str) -> str:
    """The database as messages name it: the SQLite file, or the URL without password/query."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return "(unparsable state_url)"
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "(in memory)"
    user = f"{parsed.username}@" if parsed.username else ""
    port = f":{parsed.port}" if parsed.port else ""
    database = f"/{parsed.database}" if parsed.database else ""
    return f"{parsed.drivername}://{user}{parsed.host or ''}{port}{database}"


def load_cipher(state_dir: Path) -> Fernet:
    """The key that encrypts tokens at rest, created once in the state folder (mode 0600).

    It stays a local file with PostgreSQL too: the database alone never holds readable tokens.
    Replicas must share it (one state folder, or the same key file in each). A new key is
    written aside and linked into place, so replicas starting together on one folder all
    read the one key that won, never a half-written file.
    """
    key_file = state_dir / "secret.key"
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not key_file.exists():
            _create_key(key_file)
        return Fernet(key_file.read_bytes().strip())
    except OSError as exc:
        raise StateError(f"cannot use the token key {key_file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise StateError(
            f"the token key {key_file} is not a key this agent wrote: move it aside to start "
            "a new one (tokens stored with the old key must then be obtained again)"
        ) from exc


def _create_key(key_file: Path) -> None:
    """A new key at `key_file`, unless another process put one there first."""
    fd, name = tempfile.mkstemp(prefix=f".{key_file.name}.", dir=key_file.parent)  # 0600
    draft = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, key_file)
        except FileExistsError:
            pass  # another replica's key won
        except OSError:  # a file system without hard links (SMB shares): create in place
            with contextlib.suppress(FileExistsError):
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(draft.read_bytes())
    finally:
        draft.unlink(missing_ok=True)


def upgrade(connection: Connection) -> None:
    """Apply the migrations the database lacks (Alembic is imported only when needed).

    A database without a table yet gets the newest schema at once, from the tables'
    declarations, stamped with the head revision as Alembic stamps it: 0.06 s here instead
    of 0.4 s for importing Alembic and running every migration, at every first start (the
    test suite checks both roads build the same schema; the columns a migration added come
    last on that road only, which nothing reads by position). So a migration must not insert
    rows: a new database gets only what `tables.py` declares.
    """
    if connection.dialect.name == "postgresql":  # replicas starting together migrate once
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    tables = inspect(connection).get_table_names()
    if not tables:
        create_head(connection)
        return
    if _current_revision(connection, tables) != SCHEMA_HEAD:
        migrate(connection)


def migrate(connection: Connection) -> None:
    """Run Alembic's migrations from the database's revision up to the head."""
    from alembic import command  # noqa: PLC0415 - a start-up cost only when migrating
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def create_head(connection: Connection) -> None:
    """Create every table of the newest schema in an empty database, stamped at the head."""
    Base.metadata.create_all(connection)
    VERSION_TABLE.create(connection)
    connection.execute(VERSION_TABLE.insert().values(version_num=SCHEMA_HEAD))


def _current_revision(connection: Connection, tables: list[str]) -> str | None:
    if VERSION_TABLE.name not in tables:
        return None
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


async def _checked(path: Path, where: str, *, repair: bool, clock: Clock) -> Path | None:
    """Check the SQLite file; set a damaged one aside (returning where) or refuse it."""
    try:
        reason = await asyncio.to_thread(damage.find_damage, path)
    except OSError as exc:
        raise StateError(f"state database {where}: {exc.strerror or exc}") from exc
    if reason is None:
        return None
    if not repair:
        raise CorruptStateError(where, reason)
    return await _set_aside(path, reason, clock)


async def _set_aside(path: Path, reason: str, clock: Clock) -> Path:
    try:
        aside = await asyncio.to_thread(damage.set_aside, path, clock())
    except OSError as exc:
        raise StateError(
            f"the state database {path} is damaged ({reason}) and cannot be moved aside: "
            f"{exc.strerror or exc}"
        ) from exc
    get_logger().warning(
        "state.damaged_database_set_aside",
        database=str(path),
        set_aside=str(aside),
        reason=reason,
        action="started a fresh state database; passes rebuild it from the mirror and listings",
    )
    return aside


async def _migrated(url: str, where: str, path: Path | None, connections: int) -> AsyncEngine:
    """A new engine on a database brought to the newest schema."""
    if path is not None:
        async with translated(where, None):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = _engine(url, connections)
    try:
        writer = engine.execution_options(**{WRITE: True})  # SQLite: BEGIN IMMEDIATE, so a
        async with translated(where, path), writer.begin() as conn:  # second opener waits
            await conn.run_sync(upgrade)
    except BaseException:
        await engine.dispose()
        raise
    return engine


def _engine(url: str, connections: int) -> AsyncEngine:
    try:
        if make_url(url).get_backend_name() == "sqlite":
            engine = create_async_engine(url)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
            event.listen(engine.sync_engine, "handle_error", _sqlite_cancelled)
            return engine
        # A pool as large as the downloads that checkpoint at once (a new PostgreSQL
        # connection costs a fork): overflow covers bursts, pre-ping a restarted server.
        return create_async_engine(
            url,
            pool_size=connections,
            max_overflow=connections // 2,
            pool_pre_ping=True,
            connect_args=_driver_numbers(url),
        )
    except ImportError as exc:
        raise StateError(
            f"state database {describe_url(url)}: its driver is not installed ({exc.name}); "
            'for PostgreSQL install "sync-agent[postgres]"'
        ) from exc
    except SQLAlchemyError as exc:
        raise StateError(f"state_url: {driver_reason(exc)}") from exc


def _driver_numbers(url: str) -> dict[str, int]:
    """asyncpg's numeric options given in the URL's query, as the numbers asyncpg wants.

    SQLAlchemy hands the query to asyncpg as text; `?statement_cache_size=0` (with
    `prepared_statement_cache_size=0`, which SQLAlchemy reads itself) is what running behind
    a transaction-pooling PgBouncer needs (docs/replicas.md).
    """
    numbers: dict[str, int] = {}
    for key in ("statement_cache_size", "max_cached_statement_lifetime"):
        value = make_url(url).query.get(key)
        if isinstance(value, str):
            try:
                numbers[key] = int(value)
            except ValueError:
                raise StateError(f"state_url: {key} must be a whole number") from None
    return numbers


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver stays out: `_sqlite_begin` begins
    cursor = dbapi_connection.cursor()
    # First: until it is set, the driver's default (5 s) bounds the wait for a lock, and
    # switching a file that is not in WAL mode yet needs one another process may hold.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: every commit reaches the disk. NORMAL would lose the last commits to a power cut,
    # and with them journal entries readers had seen, whose `seq` a new entry could take.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_cancelled(context: ExceptionContext) -> None:
    """Close the cursor of a statement whose task was cancelled (a stop, a lost lease).

    SQLAlchemy takes the connection for lost and closes it, leaving the cursor to the
    garbage collector; SQLite cannot close a connection whose statement is unfinished, so it
    stayed open holding the write lock of its transaction, and every other writer failed
    after `busy_timeout` with "database is locked" until a collection ran. Closed cursor
    first, the close releases the lock at once.
    """
    statement = context.execution_context  # (its `cursor` is unset in SQLAlchemy 2.1)
    if isinstance(context.original_exception, asyncio.CancelledError) and statement:
        statement.cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take SQLite's write lock when they begin, readers never.

    A deferred transaction that reads and then writes must upgrade its lock, and when another
    connection committed in between SQLite refuses the upgrade at once ("database is
    locked") instead of waiting `busy_timeout`: the pass failed under load. `BEGIN IMMEDIATE`
    waits for the lock up front, so concurrent writers queue instead of failing.

    Sent straight to aiosqlite's connection: one hop to its thread, where a statement through
    SQLAlchemy's cursor takes three (open, execute, close), and every transaction begins.
    """
    immediate = conn.get_execution_options().get(WRITE, False)
    driver: Any = conn.connection.driver_connection  # aiosqlite's, live as a transaction begins
    await_only(driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN"))
