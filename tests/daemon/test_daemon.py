"""`sync-agent run` as a real subprocess: notify protocol, signals, reload, lock and HTTP routes.

Each test starts the daemon with `python -m agent --config X run` while the Standard Metrics
sandbox and its storage host serve from the test's own event loop on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import run_cli, write_config

pytestmark = pytest.mark.e2e

ENV = {"SM_SECRET": "demo-secret"}
DOCS = 6


def free_port() -> int:
    """A port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    tmp: Path
    storage: StorageHost
    api: StandardMetricsSandbox
    base: str
    listen: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")

    @property
    def mirror(self) -> Path:
        return self.tmp / "mirror"

    @property
    def config(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def source(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "standard-metrics",
            "base_url": f"{self.base}/v1",
            "client_id": "demo-client",
            "client_secret_env": "SM_SECRET",
            "poll_interval": "1h",
        }

    def write(self, *names: str, **agent: Any) -> Path:
        settings = {
            "mirror_dir": str(self.mirror),
            "state_dir": str(self.tmp / "state"),
            "log_format": "json",
            "listen": self.listen,
            **agent,
        }
        return write_config(self.config, settings, [self.source(n) for n in names])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **RICH)
    api.populate_demo(n=DOCS, seed=3)
    async with storage.running(), api.running() as base:
        yield World(tmp_path, storage, api, base)


class Running:
    """A daemon subprocess whose stderr (JSON log lines) is collected as it arrives."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode())

    def events(self, name: str) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.lines if line.startswith("{")]
        return [e for e in found if e.get("event") == name]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader


@asynccontextmanager
async def daemon(config: Path, env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "--config",
        str(config),
        "run",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV, **(env or {})},
    )
    running = Running(proc)
    try:
        yield running
    finally:
        await running.kill()


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def post(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(url) as response:
        return response.status, await response.text()


async def status_of(world: World) -> dict[str, dict[str, Any]]:
    """The daemon's /status by source name; empty while it does not answer yet."""
    try:
        code, body = await get(f"{world.url}/status")
    except aiohttp.ClientConnectionError:
        return {}
    if code != 200:
        return {}
    return {s["name"]: s for s in json.loads(body)["sources"]}


async def mirrored(world: World, name: str) -> bool:
    return (await status_of(world)).get(name, {}).get("mirrored") == DOCS


def mirror_files(world: World, name: str) -> list[Path]:
    return [p for p in (world.mirror / name).rglob("*") if p.is_file()]


# ---------------------------------------------------------------- notify protocol


async def test_notify_protocol_ready_status_watchdog_stopping(world: World) -> None:
    """READY=1 at start, STATUS= after the first pass, WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
    path = world.tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    messages: list[str] = []

    async def receive_until(predicate: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + 15
        while not any(predicate(m) for m in messages):
            left = deadline - time.monotonic()
            assert left > 0, f"notify message not seen; got {messages}"
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
            messages.append(data.decode())

    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    try:
        async with daemon(world.write("sm"), env) as run:
            await receive_until(lambda m: "READY=1" in m.splitlines())
            await receive_until(lambda m: m.startswith("STATUS=") and "mirrored" in m)
            assert f"STATUS={DOCS} documents mirrored, 0 failed" in messages
            pings = messages.count("WATCHDOG=1")
            await receive_until(lambda _: messages.count("WATCHDOG=1") >= pings + 3)
            run.signal(signal.SIGTERM)
            await receive_until(lambda m: m == "STOPPING=1")
            await receive_until(lambda m: m.startswith("EXTEND_TIMEOUT_USEC="))
            assert await run.wait(10) == 0
            assert "Traceback" not in "".join(run.lines)
    finally:
        sock.close()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m.splitlines())
    status = messages.index(f"STATUS={DOCS} documents mirrored, 0 failed")
    assert ready < status < messages.index("STOPPING=1")
    assert messages.count("WATCHDOG=1") >= 3
    # systemd is asked to wait out the drain: the default shutdown_timeout (30 s) + 15 s
    assert "EXTEND_TIMEOUT_USEC=45000000" in messages


# ---------------------------------------------------------------- SIGTERM mid-transfer


def jobs_in(state_db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(state_db) as db:
        return list(db.execute("SELECT state, temp_name, bytes_done FROM jobs"))


async def test_sigterm_mid_transfer_leaves_a_resumable_job(world: World) -> None:
    """SIGTERM during a slow download exits 0 within shutdown_timeout; `sync` resumes the rest."""
    for doc_id in world.api.document_ids():
        world.api.remove_document(doc_id)
    size = 3 * 1024 * 1024
    big = bytes(range(256)) * (size // 256)
    world.api.add_document("big.bin", big)
    world.storage.faults.bytes_per_second = 500_000  # about 6 s for the whole file
    config = world.write("sm", shutdown_timeout="2s")
    async with daemon(config) as run:
        await until(lambda: world.storage.bytes_sent >= 300_000, what="the transfer to start")
        run.signal(signal.SIGTERM)
        started = time.monotonic()
        assert await run.wait(2 + 3) == 0
        assert time.monotonic() - started < 2 + 3
        assert run.events("daemon.stopped")
        assert "Traceback" not in "".join(run.lines)
    sent_before = world.storage.bytes_sent
    assert sent_before < size, "the transfer finished before the signal: not mid-transfer"
    staging = world.mirror / ".sync-agent" / "staging"
    partials = [p for p in staging.iterdir() if p.is_file() and p.stat().st_size > 0]
    assert len(partials) == 1
    jobs = jobs_in(world.tmp / "state" / "state.db")
    assert [temp for _, temp, _ in jobs] == [partials[0].name]
    assert not (world.mirror / "sm" / "big.bin").exists()

    world.storage.faults.bytes_per_second = None
    resumed_from = partials[0].stat().st_size
    result = await run_cli("--config", str(config), "sync", env=ENV)
    assert result.code == 0, result.stderr
    assert (world.mirror / "sm" / "big.bin").read_bytes() == big
    ranges = [r.headers.get("range") for r in world.storage.log.records]
    assert f"bytes={resumed_from}-" in ranges
    assert size <= world.storage.bytes_sent < size * 1.3  # about the file once, not twice
    assert jobs_in(world.tmp / "state" / "state.db") == []


# ---------------------------------------------------------------- SIGHUP reload


async def test_sighup_adds_and_removes_sources_without_restart(world: World) -> None:
    """Adding B by SIGHUP mirrors it in the same process; removing A makes /sync/A a 404."""
    async with daemon(world.write("a")) as run:
        await until(lambda: mirrored(world, "a"), what="source a mirrored")
        world.write("a", "b")
        run.signal(signal.SIGHUP)
        await until(lambda: mirrored(world, "b"), what="source b mirrored after SIGHUP")
        assert len(mirror_files(world, "b")) == DOCS
        assert run.proc.returncode is None
        assert (await post(f"{world.url}/sync/b"))[0] == 202

        world.write("b")
        run.signal(signal.SIGHUP)
        await until(lambda: run.events("reload.applied")[1:], what="the second reload")
        assert run.events("reload.applied")[-1]["sources"] == ["b"]
        code, body = await post(f"{world.url}/sync/a")
        assert code == 404
        assert "'a'" in json.loads(body)["error"]
        assert json.loads((await post(f"{world.url}/sync"))[1]) == {"accepted": ["b"]}
        assert set(await status_of(world)) == {"b"}  # a removed source leaves /status
        run.signal(signal.SIGTERM)
        assert await run.wait(10) == 0


async def test_invalid_reload_is_refused_and_the_daemon_keeps_running(world: World) -> None:
    """A broken config on SIGHUP is logged as reload.refused naming the key; the old one stays."""
    async with daemon(world.write("sm")) as run:
        await until(lambda: mirrored(world, "sm"), what="the first pass")
        text = world.config.read_text()
        world.config.write_text(text + "speed = 3\n")
        run.signal(signal.SIGHUP)
        (refused,) = await until(lambda: run.events("reload.refused"), what="reload.refused")
        assert "sources.sm.speed" in refused["error"]
        assert run.proc.returncode is None
        assert await get(f"{world.url}/healthz") == (200, "ok")
        code, body = await post(f"{world.url}/sync")
        assert (code, json.loads(body)) == (202, {"accepted": ["sm"]})
        assert run.events("reload.applied") == []


# ---------------------------------------------------------------- one instance per state folder


async def test_second_instance_on_the_same_state_folder_exits_75(world: World) -> None:
    """A second `run` with the same state_dir exits 75 with one clear line, no traceback."""
    async with daemon(world.write("sm")) as run:
        await until(lambda: status_of(world), what="the first daemon to serve")
        other = world.tmp / "other.toml"
        settings = {
            "mirror_dir": str(world.mirror),
            "state_dir": str(world.tmp / "state"),
            "listen": f"127.0.0.1:{free_port()}",
        }
        write_config(other, settings, [world.source("sm")])
        second = await run_cli("--config", str(other), "run", env=ENV, timeout=20)
        assert second.code == 75
        assert "already running" in second.stderr
        assert str(world.tmp / "state") in second.stderr
        assert "Traceback" not in second.stderr
        assert run.proc.returncode is None


# ---------------------------------------------------------------- HTTP routes


async def metric_samples(world: World) -> dict[tuple[str, str | None, str | None], float]:
    """/metrics parsed by prometheus-client; empty until the first pass has been recorded."""
    code, text = await get(f"{world.url}/metrics")
    assert code == 200
    samples = {
        (s.name, s.labels.get("source"), s.labels.get("state")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("sync_agent_")
    }
    return samples if ("sync_agent_documents", "sm", "mirrored") in samples else {}


async def test_every_http_route_answers_on_the_listen_address(world: World) -> None:
    """healthz, readyz, metrics (with sync_agent_ series for the source), status, sync triggers."""
    async with daemon(world.write("sm")) as run:
        await until(lambda: mirrored(world, "sm"), what="the first pass")
        assert await get(f"{world.url}/healthz") == (200, "ok")
        assert await get(f"{world.url}/readyz") == (200, "ready")

        samples = await until(lambda: metric_samples(world), what="the pass's metrics")
        assert samples[("sync_agent_documents", "sm", "mirrored")] == DOCS
        assert samples[("sync_agent_downloaded_files_total", "sm", None)] == DOCS
        assert samples[("sync_agent_last_pass_success", "sm", None)] == 1

        (source,) = (await status_of(world)).values()
        assert (source["name"], source["last_pass_ok"]) == ("sm", True)

        passes = len(run.events("pass.done"))
        assert passes == 1
        code, body = await post(f"{world.url}/sync")
        assert (code, json.loads(body)) == (202, {"accepted": ["sm"]})
        code, body = await post(f"{world.url}/sync/sm")
        assert (code, json.loads(body)) == (202, {"accepted": ["sm"]})
        assert (await post(f"{world.url}/sync/nope"))[0] == 404
        await until(lambda: len(run.events("pass.done")) > passes, what="a triggered pass")
