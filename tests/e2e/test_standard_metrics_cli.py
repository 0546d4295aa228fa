"""End to end through the real CLI against the Standard Metrics sandbox over loopback."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsKnobs, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import run_cli, write_config

pytestmark = pytest.mark.e2e


@dataclass
class World:
    storage: StorageHost
    api: StandardMetricsSandbox
    base: str
    mirror: Path
    config: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        yield w


async def open_world(tmp_path: Path, knobs: StandardMetricsKnobs = RICH) -> AsyncIterator[World]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **knobs)
    api.populate_demo(n=30, seed=1)
    async with storage.running(), api.running() as base:
        mirror = tmp_path / "mirror"
        config = write_config(
            tmp_path / "config.toml",
            {"mirror_dir": str(mirror), "state_dir": str(tmp_path / "state"), "log_format": "json"},
            [
                {
                    "name": "sm",
                    "type": "standard-metrics",
                    "base_url": f"{base}/v1",
                    "client_id": "demo-client",
                    "client_secret_env": "SM_SECRET",
                }
            ],
        )
        yield World(storage, api, base, mirror, config)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirror_digests(mirror: Path) -> dict[str, str]:
    return {
        str(p.relative_to(mirror)): sha(p.read_bytes())
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts
    }


async def sync(world: World, *extra: str):  # type: ignore[no-untyped-def]
    return await run_cli(
        "--config", str(world.config), "sync", *extra, env={"SM_SECRET": "demo-secret"}
    )


async def test_first_pass_mirrors_everything_byte_for_byte(world: World) -> None:
    result = await sync(world)
    assert result.code == 0, result.stderr
    digests = sorted(mirror_digests(world.mirror).values())
    assert digests == sorted(sha(world.api.content(i)) for i in world.api.document_ids())
    assert world.storage.authorization_seen == []
    assert "demo-secret" not in result.stderr
    assert "X-Signature" not in result.stderr


async def test_second_pass_downloads_nothing(world: World) -> None:
    assert (await sync(world)).code == 0
    before = len(world.storage.log.records)
    second = await sync(world)
    assert second.code == 0
    assert len(world.storage.log.records) == before
    assert "0 downloaded" in second.stdout


async def test_changed_document_is_downloaded_again_and_rename_is_a_move(world: World) -> None:
    assert (await sync(world)).code == 0
    ids = world.api.document_ids()
    world.api.update_document(ids[0], b"new content")
    world.api.rename_document(ids[1], "Renamed.pdf")
    before = len(world.storage.log.records)
    result = await sync(world)
    assert result.code == 0, result.stderr
    assert len(world.storage.log.records) == before + 1  # only the changed document
    assert (world.mirror / "sm" / "Renamed.pdf").read_bytes() == world.api.content(ids[1])
    assert sha(world.api.content(ids[0])) in mirror_digests(world.mirror).values()


async def test_status_json_reports_the_mirror(world: World) -> None:
    assert (await sync(world)).code == 0
    result = await run_cli("--config", str(world.config), "status", "--json")  # no secret needed
    assert result.code == 0
    (source,) = json.loads(result.stdout)["sources"]
    assert source["name"] == "sm"
    assert source["mirrored"] == len(world.api.document_ids())
    assert source["last_pass_ok"] is True


async def test_rejected_credentials_exit_77(world: World) -> None:
    result = await run_cli("--config", str(world.config), "sync", env={"SM_SECRET": "wrong"})
    assert result.code == 77
    assert "wrong" not in result.stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "[agent]\nmirror_dir = '/tmp/x'\n[[sources]]\nname='a'\ntype='standard-metrics'\n"
            "client_id='c'\nclient_secret='s'\nspeed=3\n",
            "sources.a.speed",
        ),
        ("[agent]\n", "agent.mirror_dir"),
        ("[agent\n", "toml"),
        (
            "[agent]\nmirror_dir='/tmp/x'\nmax_concurrent_downloads='many'\n",
            "agent.max_concurrent_downloads",
        ),
    ],
)
async def test_bad_configs_exit_78_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for command in ("sync", "check-config"):
        result = await run_cli("--config", str(path), command)
        assert result.code == 78
        assert key in result.stderr
        assert "Traceback" not in result.stderr
