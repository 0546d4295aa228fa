"""The migrations build exactly the schema the tables declare, and the store knows the head."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from agent.state.database import MIGRATIONS, SCHEMA_HEAD, upgrade
from agent.state.tables import Base


def test_the_store_knows_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_migrations_produce_the_declared_tables(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as conn:
        upgrade(conn)
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_an_up_to_date_database_is_not_migrated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as conn:
        upgrade(conn)

    def refuse(*_: object) -> None:
        raise AssertionError("Alembic ran on a database already at the head")

    monkeypatch.setattr(command, "upgrade", refuse)
    with engine.begin() as conn:
        upgrade(conn)
        revisions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert revisions == [(SCHEMA_HEAD,)]
