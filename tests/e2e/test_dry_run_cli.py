"""`sync --dry-run` through the real CLI against the Huddle sandbox: it lists, changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import run_cli
from tests.e2e.test_huddle_cli import World, mirror_files, nested_tree, open_world, sync
from tests.e2e.test_index_health_cli import SECRET_ENV as IH_SECRET
from tests.e2e.test_index_health_cli import mirror_files as ih_files
from tests.e2e.test_index_health_cli import open_world as ih_world

pytestmark = pytest.mark.e2e


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        yield w


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder below these folders: its sha256, or "dir"."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            key = str(path)
            found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


async def dry_run(world: World, *args: str, **extra: Any) -> dict[str, Any]:
    result = await run_cli("--config", str(world.config(**extra)), "sync", "--dry-run", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def actions(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    (source,) = document["sources"]
    return {a["path"]: a for a in source["actions"] if a["action"] == kind}


async def test_dry_run_leaves_mirror_and_state_byte_identical_and_lists_the_changes(
    world: World,
) -> None:
    """After a real pass and remote changes, a dry run lists the new, updated, removed and
    locally edited files with their sizes, and every file of the mirror and of the state
    folder (the SQLite database included) is byte for byte what it was."""
    ids = nested_tree(world, bulk_size=3)
    assert (await sync(world)).code == 0
    api, root = world.api, world.api.root_folder_id(world.ws)
    added = api.add_document(root, "new.txt", b"n" * 1234, filename="new.txt")
    api.update_document(ids[1], b"a new version\n" * 10)
    api.delete_document(ids[2])
    edited = world.mirror / "hd" / "Projects" / "readme.txt"
    edited.write_bytes(b"edited here\n")
    api.update_document(ids[0], b"remote readme v2\n")
    before = snapshot(world.mirror, world.state)
    assert any(key.endswith("state.db") for key in before)
    fetched_before = list(api.download_reasons)

    document = await dry_run(world, "--json")

    assert snapshot(world.mirror, world.state) == before
    assert api.download_reasons == fetched_before  # no content was fetched
    downloads = actions(document, "download")
    assert downloads["hd/Projects/new.txt"]["size"] == 1234
    assert downloads["hd/Projects/new.txt"]["why"] == "new"
    updated = world.api.document(ids[1])
    assert [a["size"] for a in downloads.values() if a["id"] == ids[1]] == [len(updated.data)]
    assert actions(document, "keep_aside")["hd/Projects/readme.txt"]["id"] == ids[0]
    (removed,) = actions(document, "remove").values()
    assert removed["id"] == ids[2]
    assert removed["deletes_file"] is False
    totals = document["totals"]
    assert totals["download"] == 3
    assert totals["download_bytes"] == sum(
        len(api.document(i).data) for i in (added, ids[0], ids[1])
    )
    assert document["dry_run"] is True


async def test_dry_run_before_the_first_pass_writes_no_mirror_and_prints_a_total(
    world: World,
) -> None:
    """The quick start's `sync --dry-run` on a fresh configuration: every document is listed
    to download with the total of their sizes, and no mirror folder appears."""
    ids = nested_tree(world, bulk_size=2)
    result = await run_cli("--config", str(world.config()), "sync", "--dry-run")
    assert result.code == 0, result.stderr
    total = sum(len(world.api.document(i).data) for i in ids)
    assert f"{len(ids)} to download" in result.stdout
    assert "hd/Projects/Design/Drawings/plan-0.dwg" in result.stdout
    assert "dry run: nothing was downloaded" in result.stdout
    assert not world.mirror.exists()
    document = await dry_run(world, "--json")
    assert document["totals"]["download_bytes"] == total
    assert world.api.download_reasons == []
    assert (await sync(world)).code == 0  # the tokens the dry run rotated were kept
    assert len(mirror_files(world.mirror)) == len(ids)


async def test_run_dry_run_surveys_once_and_exits(world: World) -> None:
    """`run --dry-run` is one cycle: it prints the preview and exits instead of polling."""
    nested_tree(world, bulk_size=1)
    result = await run_cli("--config", str(world.config()), "run", "--dry-run", timeout=60)
    assert result.code == 0, result.stderr
    assert "dry run: nothing was downloaded" in result.stdout
    assert not world.mirror.exists()


async def test_json_without_dry_run_is_a_usage_error(world: World) -> None:
    """`sync --json` alone is refused (exit 2) before anything is listed or downloaded."""
    nested_tree(world, bulk_size=1)
    result = await run_cli("--config", str(world.config()), "sync", "--json")
    assert result.code == 2
    assert "--dry-run" in result.stderr
    assert not world.mirror.exists()


async def test_readme_quick_start_init_check_dry_run_sync(tmp_path: Path) -> None:
    """The README's quick start as written (init, check-config, sync --dry-run, sync), the
    sandbox's address given by environment overrides: the dry run lists every document and
    writes no file; the pass then mirrors exactly those."""
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **RICH)
    api.populate_demo(n=4, seed=1)
    config, mirror = tmp_path / "sync-agent.toml", tmp_path / "mirror"
    async with storage.running(), api.running() as base:
        env = {
            "SYNC_AGENT_CONFIG": str(config),
            "PORTFOLIO_CLIENT_SECRET": "demo-secret",  # the *_env the written file names
            "SYNC_AGENT_SOURCES__PORTFOLIO__BASE_URL": f"{base}/v1",
            "SYNC_AGENT_AGENT__STATE_DIR": str(tmp_path / "state"),
        }
        init = await run_cli(
            "init", "--type", "standard-metrics", "--mirror-dir", str(mirror),
            "--client-id", "demo-client", env=env,
        )  # fmt: skip
        assert init.code == 0, init.stderr
        assert (await run_cli("check-config", env=env)).code == 0
        preview = await run_cli("sync", "--dry-run", env=env)
        assert preview.code == 0, preview.stderr
        assert "4 to download" in preview.stdout
        assert not mirror.exists()
        synced = await run_cli("sync", env=env)
        assert synced.code == 0, synced.stderr
        assert "4 downloaded" in synced.stdout
        assert len([p for p in (mirror / "portfolio").rglob("*") if p.is_file()]) == 4


async def test_first_dry_run_keeps_the_credentials_it_made(tmp_path: Path) -> None:
    """An Index Health source's first dry run makes its device fingerprint and token; both
    are kept (credentials, unlike listing caches): the pass after it needs no new token,
    and a later renewal is asked for by the same device."""
    async with ih_world(tmp_path) as world:
        world.api.add_document(world.collection, "a.pdf", b"a" * 30)
        config = str(world.config())
        preview = await run_cli("--config", config, "sync", "--dry-run", env=IH_SECRET)
        assert preview.code == 0, preview.stderr
        assert "1 to download" in preview.stdout
        assert not world.mirror.exists()
        assert (await run_cli("--config", config, "sync", env=IH_SECRET)).code == 0
        assert len(world.api.auth_requests) == 1  # the dry run's token served the pass
        world.api.expire_all_tokens()
        assert (await run_cli("--config", config, "sync", env=IH_SECRET)).code == 0
        first, second = world.api.auth_requests
        assert first.fingerprint
        assert second.fingerprint == first.fingerprint
        assert len(ih_files(world.mirror)) == 1
