"""Durable placement: local edits kept, stale temps removed, placed files adopted, safe order."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import blake3
import pytest
from transfer_kit import SOURCE, World, at_dir_fd, payload

from agent.agent import Agent
from agent.engine.commit import adopt_in_place
from agent.engine.plan import Download
from agent.models import PassStats, RemoteDocument
from agent.state.documents import Documents
from agent.state.store import Store
from agent.transfer.mirrorfs import MirrorFS
from tests.state.kit import claimed


def _ok(outcome: PassStats | BaseException) -> PassStats:
    assert isinstance(outcome, PassStats), outcome
    assert outcome.failed == 0, outcome.errors
    return outcome


async def test_a_locally_edited_file_is_kept_beside_the_new_version(world: World) -> None:
    doc_id = world.add("Board deck.pdf", payload(5000, seed=40))
    _ok(await world.sync())
    path = await world.mirrored_path(doc_id)
    assert path is not None
    path.write_bytes(b"my own notes")
    new = payload(6000, seed=41)
    world.sandbox.update_document(doc_id, new)

    _ok(await world.sync())

    assert path.read_bytes() == new
    (kept,) = path.parent.glob("Board deck (local copy *).pdf")
    assert kept.read_bytes() == b"my own notes"
    await world.assert_exact()


async def test_an_unedited_file_is_replaced_without_a_copy(world: World) -> None:
    doc_id = world.add("plain.pdf", payload(5000, seed=42))
    _ok(await world.sync())
    world.sandbox.update_document(doc_id, payload(5000, seed=43))

    _ok(await world.sync())

    path = await world.mirrored_path(doc_id)
    assert path is not None
    assert sorted(p.name for p in path.parent.iterdir() if ".meta" not in p.name) == ["plain.pdf"]
    await world.assert_exact()


async def test_start_up_removes_stale_temps_and_keeps_live_partials(world: World) -> None:
    world.add("a.pdf", payload(10, seed=44))
    config = world.config()
    async with Store.open(config.agent.state_url, world.state_dir) as store:
        doc = RemoteDocument(remote_id="live", version="1", name="live.pdf")
        held = await claimed(store, SOURCE, doc, f"{SOURCE}/live.pdf")
        job = held.spec
        await store.jobs.checkpoint(held.lease, 7, '"v"', job.temp_name)  # bytes worth keeping
    world.staging.mkdir(parents=True)
    (world.staging / job.temp_name).write_bytes(b"partial")
    (world.staging / "sm-999.part").write_bytes(b"left by a job long gone")

    async with Agent.open(config, sleep=world.sleeps):
        pass

    assert sorted(p.name for p in world.staging.iterdir()) == [job.temp_name]


async def test_a_file_placed_before_its_row_was_committed_is_adopted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(70_000, seed=45)
    doc_id = world.add("placed.bin", data)

    async def crash(self: Documents, source: str, items: Any, **journal: Any) -> None:
        if items:
            raise RuntimeError("killed between the rename and the commit")

    real = Documents.commit_mirrored
    monkeypatch.setattr(Documents, "commit_mirrored", crash)
    assert isinstance(await world.sync(), RuntimeError)
    monkeypatch.setattr(Documents, "commit_mirrored", real)
    assert (world.mirror / SOURCE / "placed.bin").read_bytes() == data
    assert await world.row_digest(doc_id) is None  # the row never said so
    world.storage.log.clear()

    stats = _ok(await world.sync())

    assert stats.downloaded == 0  # adopted at start-up, not fetched again
    assert world.storage.log.matching("GET", "/b/") == []
    assert await world.row_digest(doc_id) == world.digest(data)
    await world.assert_exact()


async def test_a_previous_version_in_place_is_not_adopted_as_the_new_one(world: World) -> None:
    old = payload(4000, seed=46)
    doc_id = world.add("v.bin", old)
    _ok(await world.sync())
    world.sandbox.update_document(doc_id, payload(4000, seed=47))
    config = world.config()
    doc = RemoteDocument(remote_id=doc_id, version="v2", name="v.bin")
    async with Store.open(config.agent.state_url, world.state_dir) as store:
        held = await claimed(store, SOURCE, doc, f"{SOURCE}/v.bin")
        await store.jobs.checkpoint(held.lease, len(old), None, held.spec.temp_name)  # temp gone

    async with Agent.open(config, sleep=world.sleeps) as agent:
        assert [j.remote_id for j in await agent.store.jobs.views()] == [doc_id]
    assert await world.row_digest(doc_id) == world.digest(old)

    _ok(await world.sync())
    await world.assert_exact()


async def test_bytes_reach_disk_before_the_rename_and_the_rename_before_the_commit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add("ordered.bin", payload(300_000, seed=48))
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_commit = os.fsync, os.replace, Documents.commit_mirrored

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        src_path = at_dir_fd(kwargs.get("src_dir_fd"), src)
        events.append(("rename", f"{src_path} -> {at_dir_fd(kwargs.get('dst_dir_fd'), dst)}"))
        real_replace(src, dst, **kwargs)

    async def commit(self: Documents, source: str, items: Any, **journal: Any) -> Any:
        if items:
            events.append(("commit", ",".join(m.rel_path for m in items)))
        return await real_commit(self, source, items, **journal)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Documents, "commit_mirrored", commit)

    _ok(await world.sync())

    dest = world.mirror / SOURCE / "ordered.bin"
    temp = next(e for e in events if e[0] == "rename" and e[1].endswith(f"-> {dest}"))
    temp_path = temp[1].split(" -> ")[0]
    mine = [
        e
        for e in events
        if e[1] in (temp_path, str(dest.parent), f"{SOURCE}/ordered.bin") or e == temp
    ]
    assert mine == [
        ("fsync", temp_path),
        temp,
        ("fsync", str(dest.parent)),
        ("commit", f"{SOURCE}/ordered.bin"),
    ]
    assert Path(temp_path).parent == world.staging


async def test_after_a_lost_state_only_a_real_difference_is_kept_as_a_local_copy(
    world: World,
) -> None:
    same, other = payload(4000, seed=50), payload(4000, seed=51)
    world.add("same.bin", same)
    world.add("other.bin", other)
    _ok(await world.sync())
    folder = world.mirror / SOURCE
    inode = (folder / "same.bin").stat().st_ino
    (folder / "other.bin").write_bytes(b"a file of my own at that name")
    shutil.rmtree(world.state_dir)

    stats = _ok(await world.sync())

    assert stats.downloaded == 2  # no size in this listing: both fetched, then compared
    assert (folder / "same.bin").stat().st_ino == inode  # adopted: not rewritten
    assert (folder / "other.bin").read_bytes() == other
    (kept,) = folder.glob("other (local copy *).bin")
    assert kept.read_bytes() == b"a file of my own at that name"
    assert len(list(folder.iterdir())) == 3  # same.bin, other.bin and the one copy
    await world.assert_exact()


def test_a_file_that_changed_since_the_plan_is_downloaded_not_adopted(tmp_path: Path) -> None:
    fs = MirrorFS(tmp_path)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.bin").write_bytes(b"12345")
    listed = RemoteDocument(remote_id="a", version="1", name="a.bin", size=5)
    found = adopt_in_place(fs, Download(listed, "s/a.bin"), "blake3")
    assert found is not None
    assert (found.size, found.digest) == (5, f"blake3:{blake3.blake3(b'12345').hexdigest()}")
    (tmp_path / "s" / "a.bin").write_bytes(b"123456")
    assert adopt_in_place(fs, Download(listed, "s/a.bin"), "blake3") is None
    (tmp_path / "s" / "a.bin").unlink()
    assert adopt_in_place(fs, Download(listed, "s/a.bin"), "blake3") is None
