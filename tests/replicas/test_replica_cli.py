"""A `run` replica on PostgreSQL through the real CLI: it registers, is listed, answers /sync."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.state.database import MIGRATION_LOCK
from agent.state.store import Store
from tests.daemon.test_daemon import ENV, World, daemon, get, post, until
from tests.e2e.cli import run_cli

pytestmark = pytest.mark.e2e

DOCS = 4


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **RICH)
    api.populate_demo(n=DOCS, seed=5)
    async with storage.running(), api.running() as base:
        yield World(tmp_path, storage, api, base)


async def status_json(config: Path) -> dict[str, Any]:
    result = await run_cli("--config", str(config), "status", "--json", env=ENV)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


async def served_status(world: World) -> dict[str, Any] | None:
    try:
        code, body = await get(f"{world.url}/status")
    except OSError:
        return None
    return json.loads(body) if code == 200 else None


async def test_a_replica_registers_is_listed_and_leaves_on_sigterm(
    world: World, pg_migrated_url: str
) -> None:
    config = world.write("sm", state_url=pg_migrated_url)
    async with daemon(config) as run:
        served = await until(lambda: served_status(world), what="the replica to serve")
        (me,) = served["replicas"]
        assert (me["id"], me["pid"], me["state"]) == (served["replica"], run.proc.pid, "live")

        (listed,) = (await status_json(config))["replicas"]
        assert listed["id"] == me["id"]
        readable = await run_cli("--config", str(config), "status", env=ENV)
        assert me["id"] in readable.stdout

        code, text = await get(f"{world.url}/metrics")
        assert code == 200
        info = [
            s.labels
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "sync_agent_replica_info"
        ]
        assert info == [{"replica": me["id"], "host": me["host"], "pid": str(run.proc.pid)}]

        run.signal(signal.SIGTERM)
        assert await run.wait(30) == 0
    assert (await status_json(config))["replicas"] == []


async def test_post_sync_is_recorded_and_answered_by_a_pass(
    world: World, pg_migrated_url: str
) -> None:
    """POST /sync records a request in the state; the replica hears of it, runs the pass,
    and the request is answered (gone from the state)."""
    config = world.write("sm", state_url=pg_migrated_url)
    async with daemon(config) as run:
        await until(lambda: run.events("pass.done"), what="the first pass")
        world.api.populate_demo(n=1, seed=6)
        code, body = await post(f"{world.url}/sync/sm")
        assert (code, json.loads(body)) == (202, {"accepted": ["sm"]})
        await until(lambda: len(run.events("pass.done")) > 1, what="the asked-for pass")
        assert run.events("pass.done")[-1]["downloaded"] == 1
        await until(lambda: no_pending(pg_migrated_url, world.tmp), what="the request answered")


async def no_pending(url: str, tmp: Path) -> bool:
    async with Store.open(url, tmp / "reader") as store:
        return await store.requests.pending() == {}


async def test_sigterm_while_migrating_is_a_clean_stop(world: World, pg_url: str) -> None:
    """A replica stopped while it waits to migrate a shared database exits 0, not by signal.

    Another replica holds the migration lock; this one waits for it in its start-up. SIGTERM
    there cancels the start-up through the same exit as a stop after it (systemd, Kubernetes
    and `podman stop` stop replicas whenever they like, including while they start).
    """
    holder = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        config = world.write("sm", state_url=pg_url)
        async with daemon(config) as run:

            async def waiting() -> bool:
                rows = await holder.fetch(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                return bool(rows)

            await until(waiting, what="the replica to wait for the migration lock")
            run.signal(signal.SIGTERM)
            assert await run.wait(30) == 0
            (stopped,) = run.events("daemon.stopped")
            assert stopped["while_starting"] is True
            assert run.events("daemon.ready") == []
    finally:
        await holder.close()
