"""Fixtures of the event tests: a state store on SQLite, and a signing secret."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.state.store import Store
from tests.events.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"receiver-secret-of-32-bytes!!!!!").decode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}", tmp_path / "s") as s:
        yield s


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
