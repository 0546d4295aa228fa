"""verify's walk: what counts as missing, changed, unknown or kept (no state database needed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from agent.engine.verify import Expected, Silent, is_by_product, verdict, walk_source
from agent.transfer.mirrorfs import MirrorFS


def expect(path: Path, data: bytes, rid: str = "r") -> Expected:
    st = path.stat()
    return Expected(rid, len(data), st.st_mtime_ns, hashlib.sha256(data).hexdigest())


def test_local_copies_and_set_aside_links_are_by_products() -> None:
    assert is_by_product("deck (local copy 2024-05-01 101500).pdf")
    assert is_by_product("deck (local copy 2024-05-01 101500 2).pdf")
    assert is_by_product("Design (link set aside 2024-05-01 101500)")
    assert not is_by_product("deck (local copy).pdf")
    assert not is_by_product("deck.pdf")


def test_size_decides_at_once_and_only_a_touched_file_is_hashed() -> None:
    recorded = Expected("r", 10, 1_000, "x")
    assert verdict(recorded, 11, 1_000) == "changed"
    assert verdict(recorded, 10, 1_000) == "fine"
    assert verdict(recorded, 10, 2_000) == "hash"


def test_the_walk_sorts_every_file_and_never_follows_a_link(tmp_path: Path) -> None:
    fs = MirrorFS(tmp_path / "mirror")
    src = fs.root / "s"
    (src / "sub").mkdir(parents=True)
    files = {"s/fine.txt": b"fine", "s/sub/touched.txt": b"same bytes", "s/changed.txt": b"v1"}
    for rel, data in files.items():
        (fs.root / rel).write_bytes(data)
    expected = {rel: expect(fs.root / rel, data) for rel, data in files.items()}
    os.utime(src / "sub" / "touched.txt", ns=(0, 0))  # same bytes, other mtime: fine
    (src / "changed.txt").write_bytes(b"v2")  # same size, other bytes
    expected["s/gone.txt"] = Expected("g", 1, 0, "x")
    expected["s/linked.txt"] = Expected("l", 1, 0, "x")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "hidden.txt").write_bytes(b"not walked")
    (src / "linked.txt").symlink_to(outside / "deep" / "hidden.txt")
    (src / "folder-link").symlink_to(outside / "deep")
    (src / "fine.txt.meta.json").write_bytes(b"{}")
    (src / "fine (local copy 2024-05-01 101500).txt").write_bytes(b"mine")
    (src / "stray.txt").write_bytes(b"who?")
    (src / "waiting.txt").write_bytes(b"claimed by a pending download")

    report, sizes = walk_source(fs, "s", expected, {*expected, "s/waiting.txt"}, Silent())

    assert report.checked == 5
    assert report.missing == ["s/gone.txt", "s/linked.txt"]
    assert report.changed == ["s/changed.txt"]
    assert report.unknown == ["s/folder-link", "s/stray.txt"]
    assert report.kept == ["s/fine (local copy 2024-05-01 101500).txt"]
    assert sizes == {"s/stray.txt": 4}
