"""End to end through the CLI: the mirror survives a lost state folder and heals hand edits."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.standard_metrics import StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from tests.e2e.cli import CliResult, run_cli, write_config
from tests.e2e.crash import KILLED, kill_at
from tests.e2e.test_huddle_cli import World as HuddleWorld
from tests.e2e.test_huddle_cli import nested_tree, open_world

pytestmark = pytest.mark.e2e
MOVES_RECORDED = "agent.state.documents:Documents.record_moves"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirror_files(mirror: Path) -> dict[str, Path]:
    """Every file of the mirror (sidecars included, staging excluded), by relative path."""
    return {
        str(p.relative_to(mirror)): p
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts
    }


def identities(mirror: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) per file: unchanged means neither moved aside nor rewritten."""
    return {rel: (p.stat().st_ino, p.stat().st_mtime_ns) for rel, p in mirror_files(mirror).items()}


@dataclass
class SmWorld:
    storage: StorageHost
    api: StandardMetricsSandbox
    mirror: Path
    state: Path
    config: Path

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        env = {"SM_SECRET": "demo-secret", **(env or {})}
        return await run_cli("--config", str(self.config), *args, env=env)

    def downloads(self) -> int:
        return len(self.storage.log.records)

    def contents(self) -> list[str]:
        return sorted(sha(self.api.content(i)) for i in self.api.document_ids())


@pytest.fixture
def sm_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def sm(tmp_path: Path, sm_options: dict[str, Any]) -> AsyncIterator[SmWorld]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage)
    api.populate_demo(n=12, seed=3)
    async with storage.running(), api.running() as base:
        mirror, state = tmp_path / "mirror", tmp_path / "state"
        source = {
            "name": "sm",
            "type": "standard-metrics",
            "base_url": f"{base}/v1",
            "client_id": "demo-client",
            "client_secret_env": "SM_SECRET",
            **sm_options,
        }
        agent = {"mirror_dir": str(mirror), "state_dir": str(state), "log_format": "json"}
        config = write_config(tmp_path / "config.toml", agent, [source])
        yield SmWorld(storage, api, mirror, state, config)


async def test_a_lost_state_folder_costs_no_duplicate_and_the_next_pass_downloads_nothing(
    sm: SmWorld,
) -> None:
    first = await sm.cli("sync")
    assert first.code == 0, first.stderr
    before = identities(sm.mirror)
    shutil.rmtree(sm.state)

    rebuild = await sm.cli("sync")

    assert rebuild.code == 0, rebuild.stderr
    assert identities(sm.mirror) == before  # adopted: not moved aside, not rewritten
    assert not any("(local copy" in rel for rel in before)
    files = [p for rel, p in mirror_files(sm.mirror).items() if not rel.endswith(".meta.json")]
    assert sorted(sha(p.read_bytes()) for p in files) == sm.contents()
    adopted = [e for e in rebuild.json_lines() if e.get("event") == "document.adopted"]
    assert len(adopted) == len(files)  # no size in this API's listing: fetched, then compared
    storage_before = len(sm.storage.log.records)
    again = await sm.cli("sync")
    assert again.code == 0, again.stderr
    assert "0 downloaded" in again.stdout
    assert len(sm.storage.log.records) == storage_before


async def test_a_file_deleted_by_hand_comes_back_and_an_edited_one_is_untouched(
    sm: SmWorld,
) -> None:
    assert (await sm.cli("sync")).code == 0
    deleted, edited = sorted(p for p in mirror_files(sm.mirror).values())[:2]
    wanted = deleted.read_bytes()
    deleted.unlink()
    edited.write_bytes(b"my own notes")

    result = await sm.cli("sync")

    assert result.code == 0, result.stderr
    assert deleted.read_bytes() == wanted
    assert edited.read_bytes() == b"my own notes"
    assert not any("(local copy" in rel for rel in mirror_files(sm.mirror))
    restoring = [e for e in result.json_lines() if e.get("event") == "document.restoring"]
    assert [e["path"] for e in restoring] == [str(deleted.relative_to(sm.mirror))]


@pytest.mark.parametrize("sm_options", [{"on_local_delete": "forget"}])
async def test_forget_leaves_a_deleted_file_deleted_until_a_newer_version_arrives(
    sm: SmWorld,
) -> None:
    assert (await sm.cli("sync")).code == 0
    files = mirror_files(sm.mirror)
    victim = sorted(files.values())[0]
    doc_id = next(i for i in sm.api.document_ids() if sm.api.content(i) == victim.read_bytes())
    victim.unlink()

    kept_away = await sm.cli("sync")
    assert kept_away.code == 0, kept_away.stderr
    assert not victim.exists()
    assert "0 downloaded" in kept_away.stdout
    assert (await sm.cli("verify")).code == 0  # a choice, not damage
    status = json.loads((await sm.cli("status", "--json")).stdout)["sources"][0]
    assert status["deleted_locally"] == 1

    sm.api.update_document(doc_id, b"a newer version")
    newer = await sm.cli("sync")
    assert newer.code == 0, newer.stderr
    assert victim.read_bytes() == b"a newer version"


@pytest.mark.parametrize("sm_options", [{"on_local_delete": "forget"}])
async def test_a_deleted_source_folder_is_restored_even_under_forget(sm: SmWorld) -> None:
    assert (await sm.cli("sync")).code == 0
    shutil.rmtree(sm.mirror / "sm")
    result = await sm.cli("sync")
    assert result.code == 0, result.stderr
    files = mirror_files(sm.mirror).values()
    assert sorted(sha(p.read_bytes()) for p in files) == sm.contents()
    assert any(e.get("event") == "mirror.source_folder_missing" for e in result.json_lines())


async def test_verify_reports_damage_and_repair_heals_it_through_the_next_pass(
    sm: SmWorld,
) -> None:
    assert (await sm.cli("sync")).code == 0
    clean = await sm.cli("verify", "--json")
    assert clean.code == 0, clean.stdout + clean.stderr
    files = sorted(mirror_files(sm.mirror).values())
    missing, damaged = files[0], files[1]
    wanted = {missing: missing.read_bytes(), damaged: damaged.read_bytes()}
    missing.unlink()
    damaged.write_bytes(b"bit rot")
    stray = sm.mirror / "sm" / "stray.txt"
    stray.write_bytes(b"who put this here")
    stale = sm.mirror / ".sync-agent" / "staging" / "sm-gone.part"
    stale.write_bytes(b"left by a crash")

    before = await sm.cli("verify", "--json")

    assert before.code == 1
    report = json.loads(before.stdout)
    (source,) = report["sources"]
    rel = {p: str(p.relative_to(sm.mirror)) for p in (missing, damaged, stray)}
    assert source["missing"] == [rel[missing]]
    assert source["changed"] == [rel[damaged]]
    assert source["unknown"] == [rel[stray]]
    assert report["stale_staging"] == ["sm-gone.part"]

    repair = await sm.cli("verify", "--repair")
    assert repair.code == 1  # what it found; the re-downloads happen on the next pass
    assert not stale.exists()
    assert (await sm.cli("sync")).code == 0
    for path, data in wanted.items():
        assert path.read_bytes() == data
    (kept,) = damaged.parent.glob(f"{damaged.stem} (local copy *){damaged.suffix}")
    assert kept.read_bytes() == b"bit rot"  # a changed file is never simply overwritten
    stray.unlink()
    kept.unlink()
    after = await sm.cli("verify")
    assert after.code == 0, after.stdout
    assert "clean" in after.stdout


async def test_a_sync_killed_between_renaming_files_and_recording_it_duplicates_nothing(
    sm: SmWorld, tmp_path: Path
) -> None:
    """Files renamed in the mirror before the process died are found where they went, even
    after the documents were renamed again meanwhile: neither fetched again nor left twice."""
    assert (await sm.cli("sync")).code == 0
    first, second = sm.api.document_ids()[:2]
    sm.api.rename_document(first, "renamed once.pdf")
    sm.api.rename_document(second, "renamed.pdf")
    killed = await sm.cli("sync", env=kill_at(tmp_path / "kill", MOVES_RECORDED))
    assert killed.code == KILLED, killed.stderr
    assert (sm.mirror / "sm" / "renamed once.pdf").exists()  # moved, never recorded
    sm.api.rename_document(first, "renamed twice.pdf")
    downloads = sm.downloads()

    result = await sm.cli("sync")

    assert result.code == 0, result.stderr
    assert sm.downloads() == downloads
    names = sorted(rel for rel in mirror_files(sm.mirror) if not rel.endswith(".meta.json"))
    assert len(names) == len(sm.contents())
    assert {"sm/renamed twice.pdf", "sm/renamed.pdf"} <= set(names)
    files = [mirror_files(sm.mirror)[rel] for rel in names]
    assert sorted(sha(p.read_bytes()) for p in files) == sm.contents()
    assert (await sm.cli("verify")).code == 0


EMPTY_PAGE = {"count": 0, "next": None, "previous": None, "results": []}


async def test_documents_back_after_a_listing_that_came_back_empty_are_not_fetched_again(
    sm: SmWorld,
) -> None:
    """A flaky server's empty listing marks the documents removed but deletes no file; when
    they are listed again, the files still as the agent wrote them are taken back as they
    are, and a file edited meanwhile is fetched again, the edit kept beside it."""
    assert (await sm.cli("sync")).code == 0
    before = identities(sm.mirror)
    sm.api.faults.add("/v1/documents", 200, body=EMPTY_PAGE, method="GET")
    empty = await sm.cli("sync")
    assert empty.code == 0, empty.stderr
    assert "0 listed" in empty.stdout
    assert identities(sm.mirror) == before  # removed from the listing, files kept
    edited = sorted(p for rel, p in mirror_files(sm.mirror).items() if "~" not in rel)[0]
    wanted = edited.read_bytes()
    edited.write_bytes(b"my notes")
    downloads = sm.downloads()

    back = await sm.cli("sync")

    assert back.code == 0, back.stderr
    assert "1 downloaded" in back.stdout
    assert sm.downloads() == downloads + 1
    assert edited.read_bytes() == wanted
    (kept,) = edited.parent.glob(f"{edited.stem} (local copy *){edited.suffix}")
    assert kept.read_bytes() == b"my notes"
    unchanged = {rel: i for rel, i in identities(sm.mirror).items() if "local copy" not in rel}
    del unchanged[str(edited.relative_to(sm.mirror))], before[str(edited.relative_to(sm.mirror))]
    assert unchanged == before
    status = json.loads((await sm.cli("status", "--json")).stdout)["sources"][0]
    assert status["mirrored"] == len(sm.contents())
    assert (await sm.cli("verify")).code == 0


# ---- Huddle: a listing with sizes and dates ----------------------------------------------


@pytest.fixture
async def huddle(tmp_path: Path) -> AsyncIterator[HuddleWorld]:
    async for world in open_world(tmp_path):
        nested_tree(world, bulk_size=6)
        yield world


async def test_a_lost_state_folder_is_rebuilt_from_sizes_and_dates_without_a_download(
    huddle: HuddleWorld,
) -> None:
    first = await run_cli("--config", str(huddle.config()), "sync")
    assert first.code == 0, first.stderr
    before = identities(huddle.mirror)
    shutil.rmtree(huddle.state)
    huddle.api.tokens.add_refresh_token("after-the-loss")  # the rotated one died with the state
    huddle.api.download_reasons.clear()

    rebuild = await run_cli("--config", str(huddle.config(refresh_token="after-the-loss")), "sync")

    assert rebuild.code == 0, rebuild.stderr
    assert huddle.api.download_reasons == []  # no content was fetched: quick check
    assert identities(huddle.mirror) == before
    assert not any("(local copy" in rel for rel in before)
    assert f"0 downloaded, {len(before)} adopted," in rebuild.stdout
    again = await run_cli("--config", str(huddle.config(refresh_token="after-the-loss")), "sync")
    assert again.code == 0, again.stderr
    assert huddle.api.download_reasons == []
    assert identities(huddle.mirror) == before


async def test_a_mirror_that_cannot_be_written_is_one_clear_line_and_exit_74(
    sm: SmWorld,
) -> None:
    sm.mirror.parent.mkdir(parents=True, exist_ok=True)
    sm.mirror.write_bytes(b"a file where the mirror folder should be")
    for command in ("sync", "verify"):
        result = await sm.cli(command)
        assert result.code == 74, (command, result.stderr)
        assert "the mirror cannot be used" in result.stderr
        assert "Traceback" not in result.stderr
