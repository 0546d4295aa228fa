"""Helpers for the transfer tests: the sandbox pair, an agent config for it, mirror checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from agent.agent import Agent
from agent.config import Config, parse_config
from agent.models import PassStats
from agent.sandbox.standard_metrics import StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.state.store import Store

SOURCE = "sm"


class Sleeps:
    """An injected retry sleep: records each pause, returns at once, may run a hook first."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.hooks: list[Callable[[], None]] = []  # each runs once, on the next pause

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if self.hooks:
            self.hooks.pop(0)()
        await asyncio.sleep(0)


@dataclass
class World:
    """The sandbox pair on loopback plus the folders and config of one agent."""

    storage: StorageHost
    sandbox: StandardMetricsSandbox
    base_url: str
    tmp: Path
    sleeps: Sleeps = field(default_factory=Sleeps)
    source_options: dict[str, Any] = field(default_factory=dict)
    agent_options: dict[str, Any] = field(default_factory=dict)

    @property
    def mirror(self) -> Path:
        return self.tmp / "mirror"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def staging(self) -> Path:
        return self.mirror / ".sync-agent" / "staging"

    def raw_config(self) -> dict[str, Any]:
        agent = {
            "mirror_dir": str(self.mirror),
            "state_dir": str(self.state_dir),
            "log_format": "json",
            "log_level": "warning",
            "min_free_space": 0,
            **self.agent_options,
        }
        source = {
            "name": SOURCE,
            "type": "standard-metrics",
            "base_url": f"{self.base_url}/v1",
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            **self.source_options,
        }
        return {"agent": agent, "sources": [source]}

    def config(self) -> Config:
        return parse_config(self.raw_config(), env={})

    def write_config(self) -> Path:
        """The same configuration as a TOML file, for the real CLI."""
        raw = self.raw_config()
        lines = ["[agent]", *_toml_pairs(raw["agent"])]
        for source in raw["sources"]:
            lines += ["", "[[sources]]", *_toml_pairs(source)]
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def sync(self, **hooks: Any) -> PassStats | BaseException:
        """One in-process pass with the fast retry sleep; returns the pass outcome."""
        async with Agent.open(self.config(), sleep=self.sleeps, **hooks) as agent:
            return (await agent.sync_once([SOURCE]))[SOURCE]

    def add(self, name: str, data: bytes) -> str:
        return self.sandbox.add_document(name, data)

    def blob_key(self, doc_id: str) -> str:
        key = self.sandbox.document(doc_id).storage_key
        assert key is not None
        return key

    async def mirrored_path(self, doc_id: str) -> Path | None:
        async with Store.open(self.config().agent.state_url, self.state_dir) as store:
            row = await store.documents.get(SOURCE, doc_id)
        return self.mirror / row.rel_path if row and row.rel_path else None

    async def row_digest(self, doc_id: str) -> str | None:
        async with Store.open(self.config().agent.state_url, self.state_dir) as store:
            row = await store.documents.get(SOURCE, doc_id)
        return row.digest if row else None

    def digest(self, data: bytes) -> str:
        """The digest the agent records for `data` under this world's configuration."""
        algorithm = self.config().agent.hash_algorithm
        hasher = blake3.blake3 if algorithm == "blake3" else hashlib.sha256
        return f"{algorithm}:{hasher(data).hexdigest()}"

    async def assert_exact(self) -> None:
        """Every sandbox document is in the mirror, byte for byte, with the right digest."""
        for doc_id in self.sandbox.document_ids():
            want = sha256(self.sandbox.content(doc_id))
            path = await self.mirrored_path(doc_id)
            assert path is not None, f"{doc_id} is not in the state"
            assert path.is_file(), f"{doc_id} is not in the mirror"
            assert sha256(path.read_bytes()) == want, f"{path} differs from the sandbox"
            assert await self.row_digest(doc_id) == self.digest(self.sandbox.content(doc_id))


def _toml_pairs(table: dict[str, Any]) -> list[str]:
    return [f"{key} = {json.dumps(value)}" for key, value in table.items()]


def at_dir_fd(dir_fd: int | None, name: Any) -> str:
    """The real path `name` names, relative to `dir_fd` when given (for patched `os` calls)."""
    return str(name) if dir_fd is None else f"{os.readlink(f'/proc/self/fd/{dir_fd}')}/{name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    block = hashlib.sha256(f"seed-{seed}".encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:size])
