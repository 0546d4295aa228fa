"""End to end through the real CLI against the Index Health sandbox and its storage host."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.index_health import RICH, IndexHealthKnobs, IndexHealthSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import CliResult, run_cli, write_config

pytestmark = pytest.mark.e2e

SECRET_ENV = {"IH_SECRET": "demo-secret"}


@dataclass
class World:
    storage: StorageHost
    api: IndexHealthSandbox
    collection: str
    mirror: Path
    state: Path
    tmp: Path

    def config(self, **extra: Any) -> Path:
        source = {
            "name": "ih",
            "type": "index-health",
            "base_url": self.api.base_url,
            "client_id": "demo-client",
            "client_secret_env": "IH_SECRET",
            **extra,
            "user": {
                "first_name": "Sync",
                "last_name": "Agent",
                "email": "sync@example.com",
                "group_name": "cardio",
            },
        }
        agent = {"mirror_dir": str(self.mirror), "state_dir": str(self.state), "log_format": "json"}
        return write_config(self.tmp / "config.toml", agent, [source])


@asynccontextmanager
async def open_world(
    tmp_path: Path, knobs: IndexHealthKnobs = RICH, **options: Any
) -> AsyncIterator[World]:
    storage = StorageHost()
    api = IndexHealthSandbox(storage, **{**knobs, **options})
    collection = api.add_collection("Cardiology", plan_name="Ward plan")
    async with storage.running(), api.running():
        yield World(storage, api, collection, tmp_path / "mirror", tmp_path / "state", tmp_path)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path) as w:
        yield w


def mirror_files(mirror: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(mirror)): p.read_bytes()
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts and not p.name.endswith(".meta.json")
    }


def sidecars(mirror: Path) -> dict[str, Path]:
    return {str(p.relative_to(mirror)): p for p in mirror.rglob("*.meta.json")}


async def sync(world: World, **extra: Any) -> CliResult:
    return await run_cli("--config", str(world.config(**extra)), "sync", env=SECRET_ENV)


async def status(world: World) -> dict[str, Any]:
    result = await run_cli("--config", str(world.config()), "status", "--json", env=SECRET_ENV)
    assert result.code == 0, result.stderr
    (source,) = json.loads(result.stdout)["sources"]
    return source  # type: ignore[no-any-return]


def add_files(world: World, n: int = 4) -> dict[str, bytes]:
    contents = {f"Report {i}.pdf": f"%PDF-1.4 report {i}\n".encode() * (i + 1) for i in range(n)}
    for name, data in contents.items():
        world.api.add_document(world.collection, name, data, description=f"about {name}")
    return contents


@pytest.mark.parametrize("method", ["presigned", "direct"])
async def test_both_download_methods_mirror_byte_for_byte(world: World, method: str) -> None:
    contents = add_files(world)
    result = await sync(world, download_method=method)
    assert result.code == 0, result.stderr
    assert sorted(mirror_files(world.mirror).values()) == sorted(contents.values())
    assert world.storage.authorization_seen == []
    assert "demo-secret" not in result.stderr
    storage_gets = len(world.storage.log.records)
    assert storage_gets == (len(contents) if method == "presigned" else 0)


class LeapingClock:
    """Real time until armed; then, after `after` more reads, `jump` seconds ahead."""

    def __init__(self, jump: float) -> None:
        self.jump = jump
        self.countdown: int | None = None

    def arm(self, after: int) -> None:
        self.countdown = after

    def __call__(self) -> float:
        if self.countdown is not None:
            self.countdown -= 1
        leapt = self.countdown is not None and self.countdown < 0
        return time.time() + (self.jump if leapt else 0.0)


async def test_token_expiring_mid_pass_is_renewed_without_failing_a_document(
    tmp_path: Path,
) -> None:
    clock = LeapingClock(jump=7200.0)
    async with open_world(tmp_path, clock=clock) as world:
        contents = add_files(world, n=6)
        clock.arm(after=4)  # token issue, then plans, documents, first download: then it dies
        result = await sync(world)
        assert result.code == 0, result.stderr
        assert sorted(mirror_files(world.mirror).values()) == sorted(contents.values())
        assert world.api.tokens_issued >= 2
        assert (await status(world))["failed"] == 0


async def test_url_documents_are_reported_skipped_with_reason_and_url(world: World) -> None:
    contents = add_files(world, n=2)
    link = world.api.add_document(world.collection, "Guideline", None, url="https://x.test/g")
    result = await sync(world)
    assert result.code == 0, result.stderr
    assert sorted(mirror_files(world.mirror).values()) == sorted(contents.values())
    skipped = (await status(world))["skipped_documents"]
    assert [(s["remote_id"], s["reason"], s["url"]) for s in skipped] == [
        (link, "url-only document", "https://x.test/g")
    ]


@pytest.mark.parametrize("as_http", [True, False])
async def test_body_status_errors_map_to_outcomes(tmp_path: Path, as_http: bool) -> None:
    async with open_world(tmp_path, errors_as_http_status=as_http) as world:
        api, col = world.api, world.collection
        gone = api.add_document(col, "gone.pdf", b"gone")
        flaky = api.add_document(col, "flaky.pdf", b"flaky but fine")
        pathless = api.add_document(col, "pathless.pdf", b"no path")
        api.fail_document(gone, 437, times=99)
        api.fail_document(flaky, 500, times=1)
        api.fail_document(pathless, 435, times=99)
        result = await sync(world)
        assert result.code == 1, result.stderr  # one document failed for good
        assert list(mirror_files(world.mirror).values()) == [b"flaky but fine"]
        assert api.download_calls[flaky] == 2
        source = await status(world)
        assert source["failed"] == 1
        assert source["mirrored"] == 1
        (job,) = [j for j in source["jobs"] if j["remote_id"] == gone]
        assert job["state"] == "permanently-failed"
        assert [s["remote_id"] for s in source["skipped_documents"]] == [pathless]


async def test_sidecars_are_json_and_rewritten_only_when_the_document_changes(
    world: World,
) -> None:
    add_files(world, n=3)
    changed = world.api.document_ids()[0]
    assert (await sync(world, write_metadata=True)).code == 0
    cars = sidecars(world.mirror)
    assert len(cars) == 3
    for path in cars.values():
        meta = json.loads(path.read_text())
        assert isinstance(meta, dict)
        assert any("about Report" in str(v) for v in meta.values()), meta
    before = {k: (p.stat().st_mtime_ns, p.stat().st_ino) for k, p in cars.items()}
    details = sum(world.api.details_calls.values())
    assert (await sync(world, write_metadata=True)).code == 0
    assert {k: (p.stat().st_mtime_ns, p.stat().st_ino) for k, p in cars.items()} == before
    assert sum(world.api.details_calls.values()) == details
    world.api.set_tags(changed, ["urgent"])
    assert (await sync(world, write_metadata=True)).code == 0
    after = {k: (p.stat().st_mtime_ns, p.stat().st_ino) for k, p in sidecars(world.mirror).items()}
    moved = [k for k in before if after[k] != before[k]]
    assert len(moved) == 1
    assert "urgent" in sidecars(world.mirror)[moved[0]].read_text()
