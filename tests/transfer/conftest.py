"""Fixtures for the transfer tests: the Standard Metrics sandbox and its storage host, running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from transfer_kit import World

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = StorageHost()
    sandbox = StandardMetricsSandbox(storage, **RICH)
    async with storage.running(), sandbox.running() as base:
        yield World(storage, sandbox, base, tmp_path)
