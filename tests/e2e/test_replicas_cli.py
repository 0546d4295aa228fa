"""Three `sync-agent run` replicas on one PostgreSQL split a source; one is SIGKILLed mid-pass.

The replicas share one configuration file (the same `state_url`, `mirror_dir` and even
`state_dir`; only the HTTP port differs, set through the environment as a container would),
the Standard Metrics sandbox lists 500 documents and its storage host sends every body
slowly. Once the replicas have downloaded part of the pass, one of them is killed: the
other two take over its jobs when its leases run out, from the offsets it checkpointed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

import asyncpg
import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.state.jobs import partial_name
from tests.daemon.test_daemon import Running, until
from tests.e2e.cli import write_config
from tests.transfer.transfer_kit import payload

pytestmark = pytest.mark.e2e

SOURCE = "sm"
SMALL, BIG = 24 * 1024, 1_300_000  # a big body is checkpointed before it streams
BIGS, DOCS = 6, 500
RATE = 200_000  # bytes per second for every body the storage host sends
LEASE = "3s"


class Replica(Running):
    """One `sync-agent run` process whose JSON log lines are collected as they arrive."""

    @property
    def replica_id(self) -> str | None:
        ready = self.events("daemon.ready")
        return str(ready[0]["replica"]) if ready else None

    @property
    def downloads(self) -> int:
        return len(self.events("download.done"))

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code


@asynccontextmanager
async def replica(config: Path, port: int) -> AsyncIterator[Replica]:
    env = {**os.environ, "SYNC_AGENT_AGENT__LISTEN": f"127.0.0.1:{port}"}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "--config", str(config), "run"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    running = Replica(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
        with suppress(ProcessLookupError, TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[StorageHost, StandardMetricsSandbox, str]]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **RICH)
    async with storage.running(), api.running() as base:
        yield storage, api, base


async def test_three_replicas_share_a_source_and_survive_one_killed_mid_pass(
    tmp_path: Path,
    pg_url: str,
    sandbox: tuple[StorageHost, StandardMetricsSandbox, str],
) -> None:
    """Every document in the mirror exactly once and byte-exact, no local copies, the
    storage host sending the data once (plus at most what the killed replica had under
    way), and the downloads spread over the surviving replicas."""
    storage, api, base = sandbox
    started = time.monotonic()
    config = write_config(
        tmp_path / "config.toml",
        {
            "mirror_dir": str(tmp_path / "mirror"),
            "state_dir": str(tmp_path / "state"),  # shared too
            "state_url": pg_url,
            "log_format": "json",
            "min_free_space": 0,
            "lease_duration": LEASE,
        },
        [
            {
                "name": SOURCE,
                "type": "standard-metrics",
                "base_url": f"{base}/v1",
                "client_id": "demo-client",
                "client_secret": "demo-secret",
                "poll_interval": "2s",
                "requests_per_minute": 1_000_000,
            }
        ],
    )
    db = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(db.close)
        replicas = [await stack.enter_async_context(replica(config, free_port())) for _ in range(3)]
        await until(lambda: all(r.replica_id for r in replicas), 45, "three replicas ready")

        # The documents appear once every replica serves the source, as a busy source's do.
        contents = {
            f"doc-{i:03}.bin": payload(BIG if i < BIGS else SMALL, seed=i) for i in range(DOCS)
        }
        for name, data in contents.items():
            api.add_document(name, data)
        storage.faults.bytes_per_second = RATE

        staging = tmp_path / "mirror" / ".sync-agent" / "staging"

        async def streaming_a_big_one() -> Replica | None:
            """A replica with downloads done and a big body well under way."""
            rows = await db.fetch(
                "SELECT id, attempt, owner FROM jobs WHERE state = 'active' "
                "AND validator IS NOT NULL"  # only big bodies checkpoint as they start
            )
            for row in rows:
                partial = staging / partial_name(SOURCE, row["id"], row["attempt"])
                owner = next((r for r in replicas if r.replica_id == row["owner"]), None)
                with suppress(FileNotFoundError):
                    if owner and owner.downloads >= 10 and partial.stat().st_size > 300_000:
                        return owner
            return None

        victim = await until(streaming_a_big_one, 45, "a replica mid-way through a big body")
        victim.proc.kill()  # SIGKILL: no checkpoint, no release, leases left to run out
        await victim.proc.wait()
        rows = await db.fetch("SELECT remote_id FROM jobs WHERE owner = $1", victim.replica_id)
        held = sum(len(api.content(row["remote_id"])) for row in rows)  # its partials, at most
        survivors = [r for r in replicas if r is not victim]

        async def settled() -> bool:
            mirrored = await db.fetchval(
                "SELECT count(*) FROM documents WHERE source = $1 AND state = 'mirrored'",
                SOURCE,
            )
            return mirrored == DOCS and await db.fetchval("SELECT count(*) FROM jobs") == 0

        await until(settled, 45, "every document mirrored by the survivors")
        assert [await r.stop() for r in survivors] == [0, 0]

    elapsed = time.monotonic() - started
    mirror = tmp_path / "mirror" / SOURCE
    files = {p.name: p for p in mirror.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(contents), "each document once, nothing else"
    assert all(sha(files[n].read_bytes()) == sha(d) for n, d in contents.items())
    assert not [p for p in (tmp_path / "mirror").rglob("*") if "local copy" in p.name]
    total = sum(len(d) for d in contents.values())
    assert held > 0, "the killed replica held jobs: it was killed mid-pass"
    assert storage.bytes_sent <= 1.05 * total + held, (storage.bytes_sent, total, held)
    counts = [r.downloads for r in survivors]
    assert all(n > 0 for n in counts), counts
    assert victim.downloads + sum(counts) >= DOCS  # every document downloaded by someone
    taken = sum(len(r.events("download.taken_over")) for r in survivors)
    assert taken >= 1, "a survivor continued the killed replica's big body from its bytes"
    print(
        f"replicas: {elapsed:.1f} s; downloads {victim.downloads} (killed) + {counts}; "
        f"storage sent {storage.bytes_sent / total:.3f} x the data; "
        f"killed replica held {held} bytes of jobs; {taken} partials taken over"
    )
    assert "Traceback" not in "".join(line for r in replicas for line in r.lines)
