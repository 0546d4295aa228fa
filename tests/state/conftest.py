"""State-layer fixtures: every store test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.state.store import Store


@dataclass
class ManualClock:
    """The state layer's clock, moved by hand."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A state database on each backend (PostgreSQL's copied from a migrated template)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("pg_migrated_url")
    return url


@pytest.fixture
async def store(state_url: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Store]:
    async with Store.open(state_url, tmp_path / "state", clock=clock) as opened:
        yield opened
