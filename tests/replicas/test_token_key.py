"""Replicas sharing one state folder share one token key, however they start together."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from agent.state.database import load_cipher

STARTERS = 8


def test_replicas_starting_together_all_read_the_one_key(tmp_path: Path) -> None:
    """No starter reads a half-written key or writes over another's: every one of them can
    read what any other encrypted."""
    for attempt in range(5):
        folder = tmp_path / f"state-{attempt}"
        barrier = threading.Barrier(STARTERS)

        def start(folder: Path = folder, barrier: threading.Barrier = barrier) -> Fernet:
            barrier.wait()
            return load_cipher(folder)

        with ThreadPoolExecutor(STARTERS) as pool:
            ciphers = list(pool.map(lambda _: start(), range(STARTERS)))
        sealed = ciphers[0].encrypt(b"token")
        assert all(c.decrypt(sealed) == b"token" for c in ciphers)
        assert sorted(p.name for p in folder.iterdir()) == ["secret.key"]


def test_a_file_system_without_hard_links_still_gets_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMB shares (Azure Files, say) refuse link(2): the key is created in place instead."""

    def no_links(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    first = load_cipher(tmp_path / "state")
    second = load_cipher(tmp_path / "state")
    assert second.decrypt(first.encrypt(b"token")) == b"token"
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["secret.key"]
