"""mirrorfs: folder handles that never follow a link below the mirror root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.transfer.files import find_missing, remove_stale_temps
from agent.transfer.mirrorfs import MirrorFS


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"not yours")
    return folder


@pytest.fixture
def fs(tmp_path: Path) -> MirrorFS:
    return MirrorFS(tmp_path / "mirror")


def test_a_link_in_place_of_a_folder_is_set_aside_and_a_real_folder_made(
    fs: MirrorFS, outside: Path
) -> None:
    (fs.root / "src").mkdir(parents=True)
    (fs.root / "src" / "sub").symlink_to(outside)

    with fs.open_staging() as staging, fs.make_folder("src/sub/deeper") as folder:
        folder.write_atomic("a.txt", b"mine", staging)

    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (fs.root / "src" / "sub").is_dir()
    assert not (fs.root / "src" / "sub").is_symlink()
    assert (fs.root / "src/sub/deeper/a.txt").read_bytes() == b"mine"
    (aside,) = (fs.root / "src").glob("sub (link set aside *)")
    assert aside.is_symlink()
    assert os.readlink(aside) == str(outside)


def test_without_repair_a_linked_folder_counts_as_absent_and_is_left_alone(
    fs: MirrorFS, outside: Path
) -> None:
    fs.root.mkdir()
    (fs.root / "src").symlink_to(outside)
    assert fs.folder("src", repair=False) is None
    assert (fs.root / "src").is_symlink()


def test_a_file_placed_over_a_link_replaces_the_link_not_its_target(
    fs: MirrorFS, outside: Path
) -> None:
    (fs.root / "src").mkdir(parents=True)
    (fs.root / "src" / "doc.txt").symlink_to(outside / "secret.txt")
    with fs.open_staging() as staging, fs.make_folder("src") as folder:
        folder.write_atomic("doc.txt", b"the document", staging)

    assert (outside / "secret.txt").read_bytes() == b"not yours"
    assert (fs.root / "src" / "doc.txt").read_bytes() == b"the document"
    assert not (fs.root / "src" / "doc.txt").is_symlink()
    (aside,) = (fs.root / "src").glob("doc (link set aside *).txt")
    assert aside.is_symlink()


def test_reading_refuses_links_and_fifos(fs: MirrorFS, outside: Path) -> None:
    (fs.root / "src").mkdir(parents=True)
    (fs.root / "src" / "link").symlink_to(outside / "secret.txt")
    os.mkfifo(fs.root / "src" / "fifo")  # opening it for reading would block
    (fs.root / "src" / "real").write_bytes(b"abc")
    with fs.make_folder("src") as folder:
        assert folder.open_read("link") is None
        assert folder.open_read("fifo") is None
        assert folder.open_read("gone") is None
        digest = folder.digest("real", "sha256")
    assert digest is not None
    assert digest[0] == f"sha256:{hashlib.sha256(b'abc').hexdigest()}"
    assert digest[1].st_size == 3


def test_unlink_deletes_files_but_sets_links_aside_and_leaves_folders(
    fs: MirrorFS, outside: Path
) -> None:
    (fs.root / "src" / "dir").mkdir(parents=True)
    (fs.root / "src" / "file").write_bytes(b"x")
    (fs.root / "src" / "link").symlink_to(outside / "secret.txt")
    with fs.make_folder("src") as folder:
        assert folder.unlink("file") is True
        assert folder.unlink("link") is False
        assert folder.unlink("dir") is False
        assert folder.unlink("gone") is False
    names = sorted(p.name for p in (fs.root / "src").iterdir())
    assert names[0] == "dir"
    assert names[1].startswith("link (link set aside ")
    assert (outside / "secret.txt").exists()


def test_paths_that_climb_out_are_refused(fs: MirrorFS) -> None:
    fs.root.mkdir()
    with pytest.raises(ValueError, match="not a mirror path"):
        fs.folder("src/../..")


def test_staging_is_private_and_reachable_through_its_open_handle(fs: MirrorFS) -> None:
    with fs.open_staging() as staging:
        assert (fs.root / ".sync-agent" / "staging").stat().st_mode & 0o777 == 0o700
        (staging.path / "x.part").write_bytes(b"partial")
        assert (fs.root / ".sync-agent" / "staging" / "x.part").read_bytes() == b"partial"
        assert remove_stale_temps(staging, keep=set()) == ["x.part"]


def test_the_presence_scan_finds_deleted_files_and_links_in_their_place(
    fs: MirrorFS, outside: Path
) -> None:
    for rel in ("src/a.txt", "src/b.txt", "src/sub/c.txt", "src/gone/d.txt"):
        (fs.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (fs.root / rel).write_bytes(b"x")
    (fs.root / "src" / "b.txt").unlink()
    (fs.root / "src" / "sub" / "c.txt").unlink()
    (fs.root / "src" / "sub" / "c.txt").symlink_to(outside / "secret.txt")
    (fs.root / "src" / "gone" / "d.txt").unlink()
    (fs.root / "src" / "gone").rmdir()

    found = find_missing(fs, "src", ["src/a.txt", "src/b.txt", "src/sub/c.txt", "src/gone/d.txt"])

    assert found.missing == {"src/b.txt", "src/sub/c.txt", "src/gone/d.txt"}
    assert found.source_folder is True
    assert find_missing(fs, "other", ["other/x"]).source_folder is False


def test_the_presence_scan_of_a_huge_folder_stats_files_instead(fs: MirrorFS) -> None:
    (fs.root / "src").mkdir(parents=True)
    for name in ("a", "b"):
        (fs.root / "src" / name).write_bytes(b"x")
    (fs.root / "src" / "c").mkdir()  # a folder is not the file expected there
    (fs.root / "src" / "e").symlink_to(fs.root / "src" / "a")  # nor is a link to a file
    paths = ["src/a", "src/b", "src/c", "src/d", "src/e"]
    assert find_missing(fs, "src", paths, set_limit=2).missing == {"src/c", "src/d", "src/e"}


def test_a_long_name_set_aside_still_fits_in_a_file_name(fs: MirrorFS) -> None:
    (fs.root / "src").mkdir(parents=True)
    long_name = "é" * 120 + ".pdf"  # 244 bytes: no room left for the suffix as it is
    (fs.root / "src" / long_name).write_bytes(b"mine")
    with fs.make_folder("src") as folder:
        aside = folder.set_aside(long_name)
    assert len(aside.encode()) <= 255
    assert aside.endswith(").pdf")
    assert (fs.root / "src" / aside).read_bytes() == b"mine"


def test_a_file_where_a_folder_of_ours_should_be_is_kept_as_a_local_copy(fs: MirrorFS) -> None:
    (fs.root / "src").mkdir(parents=True)
    (fs.root / "src" / "sub").write_bytes(b"someone's file")
    with fs.make_folder("src/sub") as folder:
        assert folder.lstat(".") is not None
    (kept,) = (fs.root / "src").glob("sub (local copy *)")
    assert kept.read_bytes() == b"someone's file"
