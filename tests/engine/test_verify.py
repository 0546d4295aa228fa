"""verify's walk: what counts as missing, changed, unknown or kept (no state database needed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3

from agent.engine.verify import (
    Expected,
    Silent,
    _find_copies,
    is_by_product,
    verdict,
    walk_source,
)
from agent.transfer.mirrorfs import MirrorFS


def expect(path: Path, data: bytes, rid: str = "r") -> Expected:
    st = path.stat()
    return Expected(rid, len(data), st.st_mtime_ns, f"sha256:{hashlib.sha256(data).hexdigest()}")


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
    expected["s/gone.txt"] = Expected("g", 1, 0, "sha256:x")
    expected["s/linked.txt"] = Expected("l", 1, 0, "sha256:x")
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


def blake3_expect(path: Path, data: bytes, rid: str = "r") -> Expected:
    st = path.stat()
    return Expected(rid, len(data), st.st_mtime_ns, f"blake3:{blake3.blake3(data).hexdigest()}")


def test_a_touched_file_is_hashed_with_the_algorithm_its_record_names(tmp_path: Path) -> None:
    fs = MirrorFS(tmp_path / "mirror")
    (fs.root / "s").mkdir(parents=True)
    files = {"s/b3.txt": b"blake3 bytes", "s/sha.txt": b"sha256 bytes", "s/edit.txt": b"v1"}
    for rel, data in files.items():
        (fs.root / rel).write_bytes(data)
    expected = {
        "s/b3.txt": blake3_expect(fs.root / "s/b3.txt", files["s/b3.txt"]),
        "s/sha.txt": expect(fs.root / "s/sha.txt", files["s/sha.txt"]),
        "s/edit.txt": blake3_expect(fs.root / "s/edit.txt", files["s/edit.txt"]),
    }
    for rel in files:
        os.utime(fs.root / rel, ns=(0, 0))  # same size, other mtime: only the bytes can tell
    (fs.root / "s/edit.txt").write_bytes(b"v2")

    report, _ = walk_source(fs, "s", expected, set(expected), Silent())

    assert report.changed == ["s/edit.txt"]
    assert report.missing == []


def test_a_moved_copy_is_found_whichever_algorithm_recorded_it(tmp_path: Path) -> None:
    fs = MirrorFS(tmp_path / "mirror")
    (fs.root / "s").mkdir(parents=True)
    (fs.root / "s/was-b3.txt").write_bytes(b"first")
    (fs.root / "s/was-sha.txt").write_bytes(b"second")
    expected = {
        "s/b3.txt": blake3_expect(fs.root / "s/was-b3.txt", b"first", "a"),
        "s/sha.txt": expect(fs.root / "s/was-sha.txt", b"second", "b"),
    }
    sizes = {"s/was-b3.txt": 5, "s/was-sha.txt": 6}

    found = _find_copies(fs, ["s/b3.txt", "s/sha.txt"], expected, sizes)

    assert found == {"s/b3.txt": "s/was-b3.txt", "s/sha.txt": "s/was-sha.txt"}
