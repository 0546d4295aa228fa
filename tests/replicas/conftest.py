"""Replica tests: the state layer's fixtures (a store on SQLite and on PostgreSQL), the
engine's sandbox world, and a PgBouncer in transaction pooling mode in front of the test
PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.engine.conftest import world
from tests.pg import PgCluster
from tests.replicas.bouncer import Bouncer, find_pgbouncer, start_bouncer
from tests.state.conftest import clock, state_url, store

__all__ = ["clock", "pgbouncer", "state_url", "store", "world"]

NO_PGBOUNCER = "no pgbouncer binary: install Debian's pgbouncer package to run this test"


@pytest.fixture(scope="session")
def pgbouncer(postgres: PgCluster) -> Iterator[Bouncer]:
    """PgBouncer for the session; skips without the binary unless CI is set."""
    binary = find_pgbouncer()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {NO_PGBOUNCER}", pytrace=False)
        pytest.skip(NO_PGBOUNCER)
    bouncer = start_bouncer(binary, postgres)
    try:
        yield bouncer
    finally:
        bouncer.stop()
