"""The migrations build exactly the schema the tables declare, on SQLite and on PostgreSQL,
and the store knows the head."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent.state.database import MIGRATIONS, SCHEMA_HEAD, migrate, upgrade
from agent.state.tables import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def engine(empty_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(empty_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def _differences(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_the_store_knows_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


async def test_migrations_produce_the_declared_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(migrate)
        differences = await conn.run_sync(_differences)
    assert differences == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_new_database_gets_the_schema_the_migrations_build(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The shortcut for an empty database (the declarations, stamped at the head) and the
    whole migration chain leave the same tables, columns, defaults, keys and indexes."""
    schemas = []
    for road in (migrate, upgrade):
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / road.__name__}.db"
        else:
            postgres = request.getfixturevalue("postgres")
            url = postgres.url(await postgres.create_database())
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(road)
                schemas.append(await conn.run_sync(_schema))
        finally:
            await engine.dispose()
    assert schemas[0] == schemas[1]
    assert schemas[1]["alembic_version"]["rows"] == [(SCHEMA_HEAD,)]


async def test_an_empty_database_is_created_without_alembic(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("Alembic ran on an empty database")

    monkeypatch.setattr(command, "upgrade", refuse)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
        differences = await conn.run_sync(_differences)
        revision = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    assert differences == []
    assert revision == SCHEMA_HEAD


def _schema(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every table as the database describes it, in an order that does not depend on
    the order columns were added in."""
    inspector = inspect(conn)
    schema: dict[str, dict[str, Any]] = {}
    for table in inspector.get_table_names():
        columns = inspector.get_columns(table)
        schema[table] = {
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in columns
            ),
            "primary_key": _named(inspector.get_pk_constraint(table)),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"])
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)
            ),
            "rows": conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one(),
            "sql": _autoincrement(conn, table),
        }
    schema["alembic_version"]["rows"] = conn.execute(
        text("SELECT version_num FROM alembic_version")
    ).all()
    return schema


def _named(constraint: Any) -> tuple[Any, tuple[str, ...]]:
    return constraint.get("name"), tuple(constraint["constrained_columns"])


def _autoincrement(conn: Connection, table: str) -> bool | None:
    """Whether SQLite never reuses the table's row ids (AUTOINCREMENT), which
    the inspector does not report; None on other databases."""
    if conn.dialect.name != "sqlite":
        return None
    sql = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar_one()
    return "AUTOINCREMENT" in str(sql).upper()


async def test_an_up_to_date_database_is_not_migrated_again(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(upgrade)

    def refuse(*_: object) -> None:
        raise AssertionError("Alembic ran on a database already at the head")

    monkeypatch.setattr(command, "upgrade", refuse)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
        revisions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert revisions == [(SCHEMA_HEAD,)]


async def test_a_remote_id_longer_than_512_characters_is_stored(engine: AsyncEngine) -> None:
    """PostgreSQL enforces VARCHAR lengths (SQLite does not): vendor strings are unbounded."""
    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
        await conn.execute(
            text(
                "INSERT INTO documents (source, remote_id, version, name, state, prune, "
                "updated_at) VALUES ('s', :rid, :ver, 'n', 'pending', false, 0)"
            ),
            {"rid": "r" * 2000, "ver": "v" * 2000},
        )
        stored = (await conn.execute(text("SELECT length(remote_id) FROM documents"))).scalar()
    assert stored == 2000
