"""Migrations that move data, on SQLite and on PostgreSQL: 0006 (sha256 values recorded
before digests named their algorithm stay readable as "sha256:<hex>", and a downgrade gives
them back) and 0008 (a pass that went well no longer records its warnings as its error)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent.state.database import MIGRATIONS

BEFORE, AFTER = "0005", "0006"  # the migration under test, and the revision before it
OLD = "ab" * 32  # a sha256 hex value as the revision before stored it


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def _migrate(conn: Connection, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(cfg, revision)


async def test_old_sha256_values_are_tagged_and_a_downgrade_restores_them(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, BEFORE)
        await conn.execute(
            text(
                "INSERT INTO documents (source, remote_id, version, name, state, prune, sha256, "
                "updated_at) VALUES ('s', 'a', '1', 'a.pdf', 'mirrored', false, :old, 0), "
                "('s', 'b', '1', 'b.pdf', 'pending', false, NULL, 0)"
            ),
            {"old": OLD},
        )
        await conn.run_sync(_migrate, AFTER)
        upgraded = (
            await conn.execute(text("SELECT digest FROM documents ORDER BY remote_id"))
        ).all()
        await conn.execute(
            text("UPDATE documents SET digest = :d WHERE remote_id = 'b'"),
            {"d": "blake3:" + "cd" * 32},
        )
        await conn.run_sync(_migrate, BEFORE, down=True)
        downgraded = (
            await conn.execute(text("SELECT sha256 FROM documents ORDER BY remote_id"))
        ).all()

    assert upgraded == [(f"sha256:{OLD}",), (None,)]
    assert downgraded == [(OLD,), (None,)]  # a BLAKE3 value means nothing to the old code


# Tables whose numbers must never be used twice: the journal's `seq` (a reader that saw 3
# must not miss the next entry) and the jobs' ids (a lease's fence must never match a later
# job). SQLite copies a table to rename a column; the copy must keep AUTOINCREMENT.
NUMBERED = {
    "events": (
        "INSERT INTO events (id, type, source, time, data) "
        "VALUES (:key, 'document.added', 's', 0, '{}')",
        "SELECT seq FROM events",
    ),
    "jobs": (
        "INSERT INTO jobs (source, remote_id, version, rel_path, attrs_json, state, bytes_done, "
        "temp_name, attempts, created_at, updated_at) "
        "VALUES ('s', :key, '1', 's/a', '{}', 'queued', 0, 't', 0, 0, 0)",
        "SELECT id FROM jobs",
    ),
}


@pytest.mark.parametrize("table", sorted(NUMBERED))
async def test_numbers_are_never_used_twice_across_the_migration(
    engine: AsyncEngine, table: str
) -> None:
    insert, number = NUMBERED[table]
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, BEFORE)
        for n in range(3):
            await conn.execute(text(insert), {"key": f"k{n}"})
        await conn.execute(text(f"DELETE FROM {table}"))  # every entry pruned, every job retired
        await conn.run_sync(_migrate, AFTER)
        await conn.execute(text(insert), {"key": "after"})
        after = (await conn.execute(text(number))).scalar_one()

    assert after > 3


async def test_warnings_recorded_as_the_error_of_a_pass_that_went_well_move_to_their_own(
    engine: AsyncEngine,
) -> None:
    """0008: "warning: ..." in `last_error` of a successful pass becomes its `last_warning`;
    the error of a failed pass stays an error."""
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, "0007")
        await conn.execute(
            text(
                "INSERT INTO sources (name, type, last_pass_ok, last_error) VALUES "
                "('cde', 'opencde', true, 'warning: nothing selected; warning: x'), "
                "('sm', 'standard-metrics', false, 'a.pdf: HTTP 503'), "
                "('ok', 'huddle', true, NULL)"
            )
        )
        await conn.run_sync(_migrate, "0008")
        rows = (
            await conn.execute(
                text("SELECT name, last_error, last_warning FROM sources ORDER BY name")
            )
        ).all()

    assert rows == [
        ("cde", None, "nothing selected; x"),
        ("ok", None, None),
        ("sm", "a.pdf: HTTP 503", None),
    ]
