"""Session-wide fixtures: a real PostgreSQL (see tests/pg.py) for the tests that ask for one,
and webhook receivers on loopback (see tests/events/receiver.py); Hypothesis without its
per-example deadline."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from agent.state.database import Database
from tests.events.receiver import SECRET, Receiver
from tests.pg import PgCluster, find_bin_dir, start_cluster

# Properties are checked, not timed: a per-example deadline fails them on a loaded 2-core
# machine (CI) for what is only slowness (performance is measured in bench/).
settings.register_profile("untimed", deadline=None)
settings.load_profile("untimed")

MIGRATED = "sync_agent_migrated"  # a template database at the newest schema
NO_POSTGRES = (
    "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin: "
    "install Debian's postgresql package to run the PostgreSQL-backed tests"
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A PostgreSQL cluster for the whole session; skips without binaries unless CI is set."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {NO_POSTGRES}", pytrace=False)
        pytest.skip(NO_POSTGRES)
    cluster = start_cluster(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def pg_url(postgres: PgCluster) -> str:
    """The SQLAlchemy URL of a fresh, empty PostgreSQL database for this test."""
    return postgres.url(await postgres.create_database())


@pytest.fixture
async def pg_migrated_url(postgres: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a fresh PostgreSQL database already at the newest schema (a template copy,
    so the test's store opens without running Alembic)."""
    if MIGRATED not in postgres.templates:
        await postgres.execute(f'CREATE DATABASE "{MIGRATED}" TEMPLATE template0')
        async with Database.open(postgres.url(MIGRATED), tmp_path_factory.mktemp("pg")):
            postgres.templates.add(MIGRATED)
    return postgres.url(await postgres.create_database(MIGRATED))


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """Start receivers (`await receivers(answers=[500])`); all stop when the test ends."""
    started: list[Receiver] = []

    async def start(**options: Any) -> Receiver:
        receiver = Receiver(SECRET, **options)
        await receiver.start()
        started.append(receiver)
        return receiver

    try:
        yield start
    finally:
        for receiver in started:
            await receiver.stop()
