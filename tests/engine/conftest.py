"""Engine fixtures: the Standard Metrics sandbox pair on loopback, and a state database on
each backend for the tests that ask for `state_url`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from tests.transfer.transfer_kit import World


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = StorageHost()
    sandbox = StandardMetricsSandbox(storage, **RICH)
    async with storage.running(), sandbox.running() as base:
        # more documents than Standard Metrics' default budget of 120 requests a minute
        yield World(storage, sandbox, base, tmp_path, source_options={"requests_per_minute": 1e6})


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The agent's state database on each backend (PostgreSQL's from a migrated template)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state' / 'state.db'}"
    url: str = request.getfixturevalue("pg_migrated_url")
    return url
