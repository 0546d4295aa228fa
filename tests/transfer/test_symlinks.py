"""Links planted in the mirror never lead a pass outside it: nothing outside ever changes."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.agent import Agent
from agent.config import parse_config
from agent.models import PassStats
from agent.sandbox.huddle import HuddleSandbox
from agent.sandbox.opencde import OpenCdeSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.opencde_model import SelectedDocument, Selection, save_selection
from agent.state.store import Store


async def no_sleep(_: float) -> None:
    return None


def snapshot(root: Path) -> dict[str, tuple[int, int, str | None]]:
    """(mode, mtime_ns, sha256 of the bytes) of every entry, the root's folder included."""
    seen: dict[str, tuple[int, int, str | None]] = {}
    for path in [root, *root.rglob("*")]:  # rglob does not descend into linked folders
        st = path.lstat()
        regular = path.is_file() and not path.is_symlink()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if regular else None
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, digest)
    return seen


def plant(link: Path, target: Path) -> None:
    """Put a link to `target` where `link` is (its real content copied to the target first)."""
    if link.is_dir():
        shutil.copytree(link, target, symlinks=True)  # tempting: the same tree, outside
        shutil.rmtree(link)
    else:
        target.write_bytes(link.read_bytes())
        link.unlink()
    link.symlink_to(target)


@dataclass
class Mirror:
    tmp: Path
    sources: list[dict[str, Any]]

    @property
    def root(self) -> Path:
        return self.tmp / "mirror"

    def config(self) -> Any:
        agent = {
            "mirror_dir": str(self.root),
            "state_dir": str(self.tmp / "state"),
            "log_format": "json",
            "log_level": "warning",
            "min_free_space": 0,
        }
        return parse_config({"agent": agent, "sources": self.sources}, env={})

    async def sync(self) -> None:
        async with Agent.open(self.config(), sleep=no_sleep) as agent:
            outcomes = await agent.sync_once()
        for name, outcome in outcomes.items():
            assert isinstance(outcome, PassStats), (name, outcome)
            assert outcome.failed == 0, outcome.errors

    async def files(self, source: str, ids: list[str]) -> dict[str, Path]:
        """Where the state says each document is in the mirror."""
        async with Store.open(self.config().agent.state_url, self.tmp / "state") as store:
            rows = {i: await store.documents.get(source, i) for i in ids}
        return {i: self.root / row.rel_path for i, row in rows.items() if row and row.rel_path}


# ---- Huddle: adds, updates and moves in a nested tree ------------------------------------


@dataclass
class HuddleTree:
    api: HuddleSandbox
    mirror: Mirror
    folders: dict[str, str]
    ids: list[str]


@pytest.fixture
async def huddle(tmp_path: Path) -> AsyncIterator[HuddleTree]:
    storage = StorageHost()
    api = HuddleSandbox(storage)
    ws = api.add_workspace("Projects")
    root = api.root_folder_id(ws)
    design = api.add_folder(root, "Design")
    folders = {"root": root, "design": design, "drawings": api.add_folder(design, "Drawings")}
    folders["notes"] = api.add_folder(root, "Notes")
    ids = [api.add_document(root, "readme.txt", b"top level\n")]
    ids += [
        api.add_document(folders["drawings"], f"plan-{i}.dwg", b"plan %d\n" % i) for i in range(3)
    ]
    ids += [api.add_document(folders["notes"], "note.txt", b"a note\n")]
    async with storage.running(), api.running():
        source = {
            "name": "hd",
            "type": "huddle",
            "base_url": api.base_url,
            "token_url": api.token_url,
            "client_id": "demo-client",
            "refresh_token": "demo-refresh-0",
            "workspaces": [ws],
        }
        yield HuddleTree(api, Mirror(tmp_path, [source]), folders, ids)


async def change_and_check(tree: HuddleTree, outside: Path) -> None:
    """Add, update and move documents over two passes; the mirror ends exact, outside intact."""
    api, before = tree.api, snapshot(outside)
    tree.ids.append(api.add_document(tree.folders["drawings"], "plan-new.dwg", b"new plan\n"))
    api.update_document(tree.ids[1], b"plan 0, revised\n")
    api.move_document(tree.ids[2], tree.folders["notes"])
    api.update_document(tree.ids[0], b"top level, revised\n")
    await tree.mirror.sync()
    api.move_document(tree.ids[3], tree.folders["root"])
    await tree.mirror.sync()

    assert snapshot(outside) == before
    files = await tree.mirror.files("hd", tree.ids)
    for doc_id in tree.ids:
        path = files[doc_id]
        assert not any(p.is_symlink() for p in (path, *path.parents)), path
        assert path.read_bytes() == api.document(doc_id).data


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the mirror, where planted links lead."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


async def test_a_link_in_place_of_the_source_folder_is_set_aside_not_followed(
    huddle: HuddleTree, outside: Path
) -> None:
    await huddle.mirror.sync()
    plant(huddle.mirror.root / "hd", outside / "tree")

    await change_and_check(huddle, outside)

    (aside,) = huddle.mirror.root.glob("hd (link set aside *)")
    assert aside.readlink() == outside / "tree"


async def test_links_in_place_of_a_nested_folder_and_of_a_file_are_set_aside_not_followed(
    huddle: HuddleTree, outside: Path
) -> None:
    await huddle.mirror.sync()
    files = await huddle.mirror.files("hd", huddle.ids)
    drawings = files[huddle.ids[1]].parent
    plant(drawings.parent, outside / "design")  # the Design folder, Drawings below it
    plant(files[huddle.ids[0]], outside / "readme.txt")  # updated on the next pass

    await change_and_check(huddle, outside)

    (design,) = drawings.parent.parent.glob("Design (link set aside *)")
    assert design.readlink() == outside / "design"
    (readme,) = files[huddle.ids[0]].parent.glob("readme (link set aside *).txt")
    assert readme.readlink() == outside / "readme.txt"


# ---- OpenCDE: keep_versions prunes older versions ----------------------------------------


@pytest.fixture
async def cde(tmp_path: Path) -> AsyncIterator[tuple[OpenCdeSandbox, Mirror, str]]:
    storage = StorageHost()
    api = OpenCdeSandbox(storage)
    async with storage.running(), api.running():
        doc = api.add_document("Model", "model.ifc", b"version one")
        api.publish_version(doc, b"version two")
        source = {
            "name": "cde",
            "type": "opencde",
            "base_url": api.base_url,
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "refresh_token": api.issue_tokens().refresh_token,
            "keep_versions": 2,
        }
        mirror = Mirror(tmp_path, [source])
        async with Store.open(mirror.config().agent.state_url, tmp_path / "state") as store:
            await save_selection(store.for_source("cde"), Selection((SelectedDocument(doc),)))
        yield api, mirror, doc


@pytest.mark.parametrize("planted", ["source folder", "pruned file"])
async def test_pruning_never_deletes_or_writes_through_a_link(
    cde: tuple[OpenCdeSandbox, Mirror, str], outside: Path, planted: str
) -> None:
    api, mirror, doc = cde
    await mirror.sync()
    folder = mirror.root / "cde"
    (older,) = folder.glob("model (*).ifc")  # version one, pruned once version three comes
    plant(folder if planted == "source folder" else older, outside / "planted")
    before = snapshot(outside)

    api.publish_version(doc, b"version three")
    await mirror.sync()

    assert snapshot(outside) == before
    assert not folder.is_symlink()
    contents = sorted(p.read_bytes() for p in folder.iterdir() if not p.is_symlink())
    assert contents == [b"version three", b"version two"]
    (aside,) = (mirror.root if planted == "source folder" else folder).glob("* (link set aside *)*")
    assert aside.readlink() == outside / "planted"
