"""End to end through the real CLI against the OpenCDE sandbox, with a scripted browser."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.opencde import RICH, OpenCdeKnobs, OpenCdeSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.browser import free_port, write_browser
from tests.e2e.cli import CliResult, run_cli, write_config

pytestmark = pytest.mark.e2e


@dataclass
class World:
    storage: StorageHost
    api: OpenCdeSandbox
    mirror: Path
    tmp: Path
    env: dict[str, str]
    visits: Path

    def config(self, keep_versions: int = 1) -> Path:
        source = {
            "name": "cde",
            "type": "opencde",
            "base_url": self.api.base_url,
            "client_id": "demo-client",
            "client_secret_env": "CDE_SECRET",
            "keep_versions": keep_versions,
        }
        agent = {
            "mirror_dir": str(self.mirror),
            "state_dir": str(self.tmp / "state"),
            "log_format": "json",
            "listen": f"127.0.0.1:{free_port()}",
        }
        return write_config(self.tmp / "config.toml", agent, [source])

    async def cli(self, *args: str, keep_versions: int = 1) -> CliResult:
        config = self.config(keep_versions)
        return await run_cli("--config", str(config), *args, env=self.env, timeout=60.0)


async def open_world(tmp_path: Path, knobs: OpenCdeKnobs = RICH) -> AsyncIterator[World]:
    storage = StorageHost()
    api = OpenCdeSandbox(storage, **knobs)
    browser, visits = write_browser(tmp_path)
    env = {"CDE_SECRET": "demo-secret", "BROWSER": str(browser)}
    async with storage.running(), api.running():
        yield World(storage, api, tmp_path / "mirror", tmp_path, env, visits)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        yield w


def mirror_files(mirror: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(mirror)): p.read_bytes()
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts
    }


async def signed_in_with(world: World, ids: list[str], **kw: Any) -> None:
    login = await world.cli("login", "cde", "--timeout", "20", **kw)
    assert login.code == 0, login.stderr + login.stdout
    world.api.auto_select = ids
    select = await world.cli("select", "cde", "--timeout", "20", **kw)
    assert select.code == 0, select.stderr + select.stdout


async def test_login_and_select_through_the_browser_then_mirror(world: World) -> None:
    ids = [
        world.api.add_document(f"Doc {i}", f"doc-{i}.ifc", f"IFC {i}".encode()) for i in range(3)
    ]
    await signed_in_with(world, ids[:2])
    visited = world.visits.read_text().splitlines()
    assert len(visited) == 2  # the sign-in page, then the picker
    listed = await world.cli("select", "cde", "--list")
    assert listed.code == 0
    assert sorted(line.split("\t")[0] for line in listed.stdout.splitlines() if "\t" in line) == (
        sorted(ids[:2])
    )
    result = await world.cli("sync")
    assert result.code == 0, result.stderr
    assert sorted(mirror_files(world.mirror).values()) == [b"IFC 0", b"IFC 1"]
    assert world.storage.authorization_seen == []
    assert "demo-secret" not in result.stderr


async def test_cancelled_selection_exits_non_zero_with_a_clear_message(world: World) -> None:
    world.api.add_document("Doc", "doc.ifc", b"IFC")
    login = await world.cli("login", "cde", "--timeout", "20")
    assert login.code == 0, login.stderr
    world.api.auto_cancel = True
    select = await world.cli("select", "cde", "--timeout", "20")
    assert select.code == 1
    assert "selection cancelled in the browser" in select.stderr
    listed = await world.cli("select", "cde", "--list")
    assert listed.stdout.count("\t") == 0  # nothing was added
    assert "Traceback" not in select.stderr


@pytest.mark.parametrize("keep", [1, 2])
async def test_new_version_is_mirrored_and_old_kept_per_keep_versions(
    world: World, keep: int
) -> None:
    doc = world.api.add_document("Model", "model.ifc", b"version one")
    await signed_in_with(world, [doc], keep_versions=keep)
    assert (await world.cli("sync", keep_versions=keep)).code == 0
    assert list(mirror_files(world.mirror).values()) == [b"version one"]
    world.api.publish_version(doc, b"version two")
    result = await world.cli("sync", keep_versions=keep)
    assert result.code == 0, result.stderr
    files = mirror_files(world.mirror)
    expected = [b"version one", b"version two"] if keep == 2 else [b"version two"]
    assert sorted(files.values()) == expected
    assert files.get("cde/model.ifc", files.get("model.ifc")) == b"version two", sorted(files)


async def test_second_pass_is_a_304_and_downloads_nothing(world: World) -> None:
    ids = [
        world.api.add_document(f"Doc {i}", f"doc-{i}.ifc", f"IFC {i}".encode()) for i in range(2)
    ]
    await signed_in_with(world, ids)
    assert (await world.cli("sync")).code == 0
    storage_before = len(world.storage.log.records)
    world.api.log.clear()
    second = await world.cli("sync")
    assert second.code == 0, second.stderr
    assert "0 downloaded" in second.stdout
    assert len(world.storage.log.records) == storage_before
    polls = world.api.log.matching(method="POST", path_prefix="/documents/1.0/document-versions")
    assert polls
    assert all("if-none-match" in r.headers for r in polls)
    assert not world.api.log.matching(path_prefix="/documents/1.0/documents/")
    assert world.storage.authorization_seen == []


async def test_nothing_selected_is_a_warning_naming_the_source_in_sync_and_status(
    world: World,
) -> None:
    """Signed in but with nothing selected, `sync` succeeds and warns, naming the source
    and the command that picks documents; `status` shows it as a warning of a pass that went
    well (not as its error), in text and JSON, until documents are selected."""
    doc = world.api.add_document("Doc", "doc.ifc", b"IFC doc")
    login = await world.cli("login", "cde", "--timeout", "20")
    assert login.code == 0, login.stderr + login.stdout
    empty = await world.cli("sync")
    assert empty.code == 0, empty.stderr
    assert "sync-agent: warning: cde: nothing selected" in empty.stderr
    assert "sync-agent select cde" in empty.stderr
    status = await world.cli("status", "--json")
    (source,) = json.loads(status.stdout)["sources"]
    assert (source["last_pass_ok"], source["last_error"]) == (True, None)
    assert source["last_warning"].startswith("nothing selected to mirror")
    text = (await world.cli("status")).stdout
    assert "cde: warning: nothing selected to mirror" in text
    assert "(ok)" in text

    world.api.auto_select = [doc]
    assert (await world.cli("select", "cde", "--timeout", "20")).code == 0
    full = await world.cli("sync")
    assert full.code == 0, full.stderr
    assert "sync-agent: warning" not in full.stderr
    (source,) = json.loads((await world.cli("status", "--json")).stdout)["sources"]
    assert (source["last_error"], source["last_warning"]) == (None, None)
    assert "warning" not in (await world.cli("status")).stdout
