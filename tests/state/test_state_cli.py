"""End to end through the real CLI: a damaged state database between two passes, credentials
lost with it, and the agent on a PostgreSQL state database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.huddle import HuddleSandbox
from agent.sandbox.standard_metrics import StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import CliResult, run_cli, write_config

pytestmark = pytest.mark.e2e

SET_ASIDE = "state.damaged_database_set_aside"
SECRET_ENV = {"SM_SECRET": "demo-secret"}


@dataclass
class World:
    storage: StorageHost
    api: StandardMetricsSandbox
    base: str
    tmp: Path

    @property
    def mirror(self) -> Path:
        return self.tmp / "mirror"

    @property
    def database(self) -> Path:
        return self.tmp / "state" / "state.db"

    def standard_metrics(self) -> dict[str, Any]:
        return {
            "name": "sm",
            "type": "standard-metrics",
            "base_url": f"{self.base}/v1",
            "client_id": "demo-client",
            "client_secret_env": "SM_SECRET",
        }

    def config(self, *extra_sources: dict[str, Any], **agent: Any) -> Path:
        settings = {
            "mirror_dir": str(self.mirror),
            "state_dir": str(self.tmp / "state"),
            "log_format": "json",
            **agent,
        }
        sources = [self.standard_metrics(), *extra_sources]
        return write_config(self.tmp / "config.toml", settings, sources)

    async def sync(self, config: Path | None = None) -> CliResult:
        return await run_cli("--config", str(config or self.config()), "sync", env=SECRET_ENV)

    def documents(self) -> set[str]:
        return {sha(self.api.content(i)) for i in self.api.document_ids()}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage)
    api.populate_demo(n=30, seed=3)
    async with storage.running(), api.running() as base:
        yield World(storage, api, base, tmp_path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirrored(mirror: Path) -> set[str]:
    return {
        sha(p.read_bytes())
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts and not p.name.endswith(".meta.json")
    }


def garble_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 4)
        handle.write((b"\xde\xad\xbe\xef" * size)[: size // 2])


def assert_no_internals(stderr: str) -> None:
    for leak in ("Traceback", "[SQL", "sqlalche.me", "SELECT "):
        assert leak not in stderr


def set_aside_events(result: CliResult) -> list[dict[str, Any]]:
    return [e for e in result.json_lines() if e.get("event") == SET_ASIDE]


async def test_garbage_over_the_state_file_between_two_passes_is_set_aside(world: World) -> None:
    assert (await world.sync()).code == 0
    garble_middle(world.database)
    damaged = world.database.read_bytes()

    result = await world.sync()

    assert result.code == 0, result.stderr
    (aside,) = world.database.parent.glob("state.damaged-*.db")
    assert aside.read_bytes() == damaged  # kept, byte for byte, beside the fresh one
    (event,) = set_aside_events(result)
    assert (event["level"], event["database"], event["set_aside"]) == (
        "warning",
        str(world.database),
        str(aside),
    )
    assert_no_internals(result.stderr)
    assert world.documents() <= mirrored(world.mirror)


async def test_a_state_file_that_is_not_sqlite_is_set_aside(world: World) -> None:
    world.database.parent.mkdir(parents=True)
    world.database.write_text("this was never a database\n")

    result = await world.sync()

    assert result.code == 0, result.stderr
    (aside,) = world.database.parent.glob("state.damaged-*.db")
    assert aside.read_text() == "this was never a database\n"
    assert len(set_aside_events(result)) == 1
    assert_no_internals(result.stderr)
    assert world.documents() == mirrored(world.mirror)


async def test_status_refuses_a_damaged_file_plainly_and_leaves_it_for_sync(world: World) -> None:
    """`status` does not hold the instance lock, so it must not move the file."""
    assert (await world.sync()).code == 0
    world.database.write_bytes(b"\x00" * 4096)

    result = await run_cli("--config", str(world.config()), "status")

    assert result.code == 74
    assert "is damaged" in result.stderr
    assert "sync-agent sync" in result.stderr
    assert_no_internals(result.stderr)
    assert world.database.read_bytes() == b"\x00" * 4096
    assert list(world.database.parent.glob("state.damaged-*")) == []


async def test_a_huddle_token_lost_with_the_database_exits_77_while_others_carry_on(
    world: World,
) -> None:
    huddle = HuddleSandbox(world.storage)
    workspace = huddle.add_workspace("Projects")
    huddle.add_document(huddle.root_folder_id(workspace), "plan.dwg", b"plan\n" * 100)
    async with huddle.running():
        hd = {
            "name": "hd",
            "type": "huddle",
            "base_url": huddle.base_url,
            "token_url": huddle.token_url,
            "client_id": "demo-client",
            "refresh_token": "demo-refresh-0",
            "workspaces": [workspace],
        }
        config = world.config(hd)
        assert (await world.sync(config)).code == 0  # the seed token is spent and rotated
        garble_middle(world.database)
        world.api.add_document("after the rebuild.pdf", b"new document")

        result = await world.sync(config)

    assert result.code == 77, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("hd: ")]
    assert "the state database was damaged and rebuilt at start-up" in line
    (aside,) = world.database.parent.glob("state.damaged-*.db")
    assert str(aside) in line
    assert "put a new refresh_token in its configuration" in line
    assert "sm: 31 listed" in result.stdout  # the other source carried on
    assert world.documents() <= mirrored(world.mirror)
    assert_no_internals(result.stderr)


async def test_a_pass_on_a_postgresql_state_database(world: World, pg_url: str) -> None:
    config = world.config(state_url=pg_url)

    first = await world.sync(config)
    second = await world.sync(config)
    status = await run_cli("--config", str(config), "status", "--json")

    assert first.code == 0, first.stderr
    assert world.documents() == mirrored(world.mirror)
    assert second.code == 0, second.stderr
    assert "0 downloaded" in second.stdout
    (source,) = json.loads(status.stdout)["sources"]
    assert (source["mirrored"], source["last_pass_ok"]) == (30, True)
    assert not (world.tmp / "state" / "state.db").exists()  # nothing went to SQLite
