"""Facts about files in the mirror: local-edit checks, stale temps, free space."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.transfer.digests import algorithm_of
from agent.transfer.mirrorfs import STAGING, Folder, MirrorFS

RESERVE_CAP = 1 << 30  # the default free-space reserve: at most 1 GiB ...
RESERVE_SHARE = 20  # ... and at most 1/20 (5 %) of the volume
# Above this many expected files in one folder, the presence check stats each file instead
# of holding the folder's listing in a set (bounded memory for huge flat folders).
SCAN_SET_LIMIT = 50_000


def staging_dir(mirror_dir: Path) -> Path:
    """Temporary files live here: inside the mirror, so renames never cross file systems."""
    return mirror_dir.joinpath(*STAGING)


@dataclass(frozen=True, slots=True)
class Volume:
    """Free and total bytes of the file system holding a folder."""

    free: int
    size: int


def volume(path: Path) -> Volume:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return Volume(stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


def reserve(volume_size: int, setting: int | None) -> int:
    """The free space downloads leave alone: `agent.min_free_space`, or when it is not set
    the smaller of 1 GiB and 5 % of the volume (a 500 MB volume keeps 25 MB free)."""
    return min(RESERVE_CAP, volume_size // RESERVE_SHARE) if setting is None else setting


def space_shortfall(found: Volume, remaining: int, setting: int | None) -> str | None:
    """Why a download of `remaining` more bytes must wait, or None when it fits."""
    keep = reserve(found.size, setting)
    need = remaining + keep
    if setting == 0 or found.free >= need:
        return None
    origin = "the default: 5 % of the volume, at most 1 GiB" if setting is None else "as set"
    return (
        f"not enough free space: {_amount(found.free)} free on the mirror's volume, "
        f"{_amount(need)} needed ({_amount(remaining)} to download + {_amount(keep)} kept free "
        f"by agent.min_free_space, {origin}); free some space or lower agent.min_free_space"
    )


def _amount(n: int) -> str:
    value, unit = float(n), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def locally_edited(
    folder: Folder, name: str, size: int | None, mtime_ns: int | None, digest: str | None
) -> bool:
    """True when the file `name` is no longer the one the agent wrote there.

    Same size and mtime as recorded: unchanged without reading it. Otherwise its content
    decides, hashed with the algorithm the recorded `digest` names. Anything but a regular
    file (a link, a folder) is not the agent's file.
    """
    found = folder.lstat(name)
    if found is None:
        return False
    if size is None or digest is None:
        return False  # nothing recorded to compare with: the agent never wrote it
    if found.st_size == size and found.st_mtime_ns == mtime_ns:
        return False
    return not holds(folder, name, digest)


def identical(folder: Folder, name: str, size: int, digest: str) -> bool:
    """Does the regular file `name` hold exactly these bytes? (Its size is checked first.)"""
    found = folder.lstat(name)
    return found is not None and found.st_size == size and holds(folder, name, digest)


def holds(folder: Folder, name: str, digest: str) -> bool:
    """Is `name` a regular file whose content has the recorded `digest` (any algorithm)?"""
    found = folder.digest(name, algorithm_of(digest))
    return found is not None and found[0] == digest


def remove_stale_temps(
    staging: Folder, keep: Collection[str], *, older_than: float = 0.0
) -> list[str]:
    """Delete temp files no job owns any more, untouched for `older_than` seconds (another
    process may be writing a newer one); returns their names."""
    removed = []
    cutoff = time.time() - older_than
    for entry in list(staging.scandir()):
        if entry.name in keep or not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                os.unlink(entry.name, dir_fd=staging.fd)
                removed.append(entry.name)
    return removed


@dataclass(frozen=True, slots=True)
class Presence:
    """Which expected files a scan of the mirror did not find."""

    missing: set[str]  # relative paths with no regular file (a link does not count)
    source_folder: bool  # the source's own folder exists (as a real folder)


def find_missing(
    fs: MirrorFS, source: str, rel_paths: Iterable[str], set_limit: int = SCAN_SET_LIMIT
) -> Presence:
    """One `scandir` per folder (no stat per file) tells which of `rel_paths` are gone.

    Read-only: a link in the way counts as absent and is left for the placing code.
    """
    missing: set[str] = set()
    for parent, paths in _by_folder(rel_paths).items():
        folder = fs.folder(parent, repair=False)
        if folder is None:
            missing.update(paths)
            continue
        with folder:
            missing.update(_absent(folder, paths, len(parent) + 1 if parent else 0, set_limit))
    source_dir = fs.folder(source, repair=False)
    if source_dir is not None:
        source_dir.close()
    return Presence(missing, source_dir is not None)


def _absent(folder: Folder, paths: list[str], cut: int, set_limit: int) -> list[str]:
    if len(paths) > set_limit:
        gone = set(folder.absent([p[cut:] for p in paths]))
        return [p for p in paths if p[cut:] in gone] if gone else []
    present = {e.name for e in folder.scandir() if e.is_file(follow_symlinks=False)}
    return [p for p in paths if p[cut:] not in present]


def lstat_all(fs: MirrorFS, rel_paths: Iterable[str]) -> dict[str, os.stat_result]:
    """What is at each of `rel_paths` (absent paths are left out), one folder open each."""
    found: dict[str, os.stat_result] = {}
    for parent, paths in _by_folder(rel_paths).items():
        folder = fs.folder(parent, repair=False)
        if folder is None:
            continue
        with folder:
            for rel in paths:
                result = folder.lstat(rel.rpartition("/")[2])
                if result is not None:
                    found[rel] = result
    return found


def _by_folder(rel_paths: Iterable[str]) -> dict[str, list[str]]:
    """The paths grouped by their folder (the same string objects: no copies)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for rel in rel_paths:
        groups[rel.rpartition("/")[0]].append(rel)
    return groups
