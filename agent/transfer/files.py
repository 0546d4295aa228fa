"""Durable file placement: staging, fsync, atomic rename, folder fsync, local-edit detection."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from agent.transfer.digests import file_digest

STAGING = ".sync-agent"


def staging_dir(mirror_dir: Path) -> Path:
    """Temporary files live here: inside the mirror, so renames never cross file systems."""
    return mirror_dir / STAGING / "staging"


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place_file(temp: Path, dest: Path) -> int:
    """Rename a fsynced temp file into place and fsync the folder; returns the mtime_ns."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, dest)
    fsync_dir(dest.parent)
    return dest.stat().st_mtime_ns


def write_atomic(dest: Path, data: bytes, staging: Path) -> int:
    """Write small content (a metadata sidecar) the same durable way as a download."""
    staging.mkdir(parents=True, exist_ok=True)
    temp = staging / f"{dest.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return place_file(temp, dest)


def locally_edited(dest: Path, size: int | None, mtime_ns: int | None, digest: str | None) -> bool:
    """True when the file in the mirror is no longer the one the agent wrote (its content
    is hashed with the algorithm the recorded `digest` names)."""
    try:
        stat = dest.stat()
    except FileNotFoundError:
        return False
    if size is None or digest is None:
        return False  # nothing recorded to compare with: the agent never wrote it
    if stat.st_size == size and stat.st_mtime_ns == mtime_ns:
        return False
    return file_digest(dest, like=digest) != digest


def keep_local_copy(dest: Path) -> Path:
    """Move a locally edited file aside under a clear, unused name; returns the new path."""
    stamp = time.strftime("%Y-%m-%d %H%M%S")
    for n in range(1, 1000):
        suffix = f" (local copy {stamp})" if n == 1 else f" (local copy {stamp} {n})"
        aside = dest.with_name(f"{dest.stem}{suffix}{dest.suffix}")
        if not aside.exists():
            os.replace(dest, aside)
            fsync_dir(dest.parent)
            return aside
    raise FileExistsError(dest)


def remove_stale_temps(staging: Path, keep: set[str]) -> list[str]:
    """Delete temp files no job owns any more; returns their names."""
    if not staging.is_dir():
        return []
    removed = []
    for entry in staging.iterdir():
        if entry.name not in keep and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
            removed.append(entry.name)
    return removed
