"""End to end through the real CLI against the Huddle sandbox and its storage host."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.huddle import RICH, HuddleSandbox
from agent.sandbox.huddle_http import HuddleKnobs
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import CliResult, run_cli, write_config

pytestmark = pytest.mark.e2e

PDF = "application/pdf"


@dataclass
class World:
    storage: StorageHost
    api: HuddleSandbox
    ws: str
    mirror: Path
    state: Path
    tmp: Path

    def config(self, **extra: Any) -> Path:
        source = {
            "name": "hd",
            "type": "huddle",
            "base_url": self.api.base_url,
            "token_url": self.api.token_url,
            "client_id": "demo-client",
            "refresh_token": "demo-refresh-0",
            "workspaces": [self.ws],
            **extra,
        }
        agent = {"mirror_dir": str(self.mirror), "state_dir": str(self.state), "log_format": "json"}
        return write_config(self.tmp / "config.toml", agent, [source])


async def open_world(
    tmp_path: Path, knobs: HuddleKnobs = RICH, **options: Any
) -> AsyncIterator[World]:
    storage = StorageHost()
    api = HuddleSandbox(storage, **{**knobs, **options})
    ws = api.add_workspace("Projects")
    async with storage.running(), api.running():
        yield World(storage, api, ws, tmp_path / "mirror", tmp_path / "state", tmp_path)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        yield w


@pytest.fixture
async def redirecting(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path, content_redirect=True):
        yield w


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirror_files(mirror: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(mirror)): p.read_bytes()
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts
    }


async def sync(world: World, **extra: Any) -> CliResult:
    return await run_cli("--config", str(world.config(**extra)), "sync")


async def status(world: World) -> dict[str, Any]:
    result = await run_cli("--config", str(world.config()), "status", "--json")
    assert result.code == 0, result.stderr
    (source,) = json.loads(result.stdout)["sources"]
    return source  # type: ignore[no-any-return]


def nested_tree(world: World, bulk_size: int = 260) -> list[str]:
    """Root/Design/Drawings (3 docs), Root/Bulk (`bulk_size` docs), and one at the root."""
    api, root = world.api, world.api.root_folder_id(world.ws)
    design = api.add_folder(root, "Design")
    drawings = api.add_folder(design, "Drawings")
    bulk = api.add_folder(root, "Bulk")
    ids = [api.add_document(root, "readme.txt", b"top level\n", filename="readme.txt")]
    ids += [
        api.add_document(drawings, f"plan-{i}.dwg", f"plan {i}\n".encode() * 50) for i in range(3)
    ]
    ids += api.populate_bulk(bulk, bulk_size)
    return ids


async def test_nested_tree_past_250_per_folder_is_mirrored_with_offline_reason(
    world: World,
) -> None:
    ids = nested_tree(world)
    result = await sync(world)
    assert result.code == 0, result.stderr
    files = mirror_files(world.mirror)
    assert sorted(sha(b) for b in files.values()) == sorted(
        sha(world.api.document(i).data) for i in ids
    )
    assert any("Drawings" in Path(p).parts for p in files)
    assert sum(1 for p in files if "Bulk" in Path(p).parts) == 260
    assert {doc for doc, _ in world.api.download_reasons} == set(ids)
    assert {reason for _, reason in world.api.download_reasons} == {"offline-file"}
    assert world.storage.authorization_seen == []


async def test_unchanged_tree_costs_one_folder_request_when_folder_times_are_trusted(
    world: World,
) -> None:
    """`trust_folder_times` against the subtree-time (RICH) server: the root's 304 is all."""
    nested_tree(world, bulk_size=5)
    assert (await sync(world, trust_folder_times=True)).code == 0
    world.api.log.clear()
    second = await sync(world, trust_folder_times=True)
    assert second.code == 0, second.stderr
    folder_calls = [r for r in world.api.log.records if r.path.startswith("/files/")]
    assert len(folder_calls) == 1, [(r.method, r.path) for r in folder_calls]
    assert "0 downloaded" in second.stdout


async def test_rotated_refresh_token_is_persisted_and_never_reused(world: World) -> None:
    nested_tree(world, bulk_size=5)
    assert (await sync(world)).code == 0
    issued_after_first = len(world.api.issued_refresh_tokens)
    assert issued_after_first >= 2  # the configured token was spent and replaced
    world.api.expire_all_tokens()
    world.api.update_document(
        world.api.add_document(world.api.root_folder_id(world.ws), "new.txt", b"x"), b"fresh"
    )
    second = await sync(world)
    assert second.code == 0, second.stderr
    assert world.api.reused_refresh_tokens == []
    assert len(world.api.issued_refresh_tokens) > issued_after_first
    assert b"fresh" in mirror_files(world.mirror).values()


async def test_conversions_ready_polled_and_refused(world: World) -> None:
    root = world.api.root_folder_id(world.ws)
    ready = world.api.add_document(root, "ready.docx", b"ready doc")
    world.api.add_rendition(ready, PDF)
    polled = world.api.add_document(root, "polled.docx", b"polled doc")
    refused = world.api.add_document(root, "refused.bin", b"no pdf", supported=())
    result = await sync(world, formats=[PDF])
    assert result.code == 0, result.stderr
    files = mirror_files(world.mirror)
    pdfs = sorted(p for p in files if p.endswith(".pdf"))
    assert len(pdfs) == 2, sorted(files)
    assert any("ready" in p for p in pdfs), pdfs
    assert any("polled" in p for p in pdfs), pdfs
    for doc in (ready, polled, refused):  # originals are mirrored whatever the conversion
        assert world.api.document(doc).data in files.values()
    progress_polls = [r for r in world.api.log.records if "conversion" in r.path.lower()]
    assert progress_polls, "the 202 conversion was never polled"
    skipped = (await status(world))["skipped_documents"]
    (refusal,) = [s["reason"] for s in skipped if "refused" in (s["name"] or "")]
    assert refusal.startswith("format not supported"), skipped


@pytest.fixture
async def quick_conversions(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path, conversion_polls=0):
        yield w


@pytest.mark.slow  # a failed conversion is retried with jittered backoff in the pass (~5-30 s)
async def test_failed_conversion_is_reported_failed_and_original_kept(
    quick_conversions: World,
) -> None:
    world = quick_conversions
    root = world.api.root_folder_id(world.ws)
    broken = world.api.add_document(root, "broken.docx", b"broken doc")
    world.api.fail_conversion(broken, PDF)
    result = await sync(world, formats=[PDF])
    assert result.code == 1, result.stderr
    files = mirror_files(world.mirror)
    assert list(files.values()) == [b"broken doc"]
    source = await status(world)
    assert source["failed"] == 1
    assert source["last_pass_ok"] is False
    assert "conversion failed" in result.stderr


async def test_killed_download_resumes_and_keeps_offline_reason(
    redirecting: World, tmp_path: Path
) -> None:
    world = redirecting
    big = os.urandom(3 << 20)
    doc = world.api.add_document(world.api.root_folder_id(world.ws), "big.bin", big)
    world.storage.faults.bytes_per_second = 400_000
    staging = world.mirror / ".sync-agent" / "staging"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "--config",
        str(world.config()),
        "sync",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_partial(staging, minimum=300_000)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert mirror_files(world.mirror) == {}
    world.storage.faults.bytes_per_second = None
    result = await sync(world)
    assert result.code == 0, result.stderr
    assert list(mirror_files(world.mirror).values()) == [big]
    reasons = [r for d, r in world.api.download_reasons if d == doc]
    assert len(reasons) >= 2
    assert set(reasons) == {"offline-file"}
    ranges = [r.headers.get("range") for r in world.storage.log.records]
    assert ranges[0] is None
    assert ranges[-1] is not None
    assert ranges[-1] != "bytes=0-"  # the second run went on from the partial
    assert world.storage.authorization_seen == []


async def wait_for_partial(staging: Path, minimum: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        sizes = [p.stat().st_size for p in staging.glob("*")] if staging.is_dir() else []
        if any(s >= minimum for s in sizes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the staging partial never grew")
