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
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent.state.database import MIGRATIONS, SCHEMA_HEAD, upgrade
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
        await conn.run_sync(upgrade)
        differences = await conn.run_sync(_differences)
    assert differences == []


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
