"""Durable file placement: staging, fsync, atomic rename, folder fsync, local-edit detection."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

STAGING = ".sync-agent"
HASH_BLOCK = 1 << 20


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


def hash_file(path: Path, limit: int | None = None) -> tuple[hashlib._Hash, int]:
    """sha256 of the first `limit` bytes (all when None) and how many bytes were read."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while limit is None or done < limit:
            want = HASH_BLOCK if limit is None else min(HASH_BLOCK, limit - done)
            block = handle.read(want)
            if not block:
                break
            digest.update(block)
            done += len(block)
    return digest, done


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


def locally_edited(dest: Path, size: int | None, mtime_ns: int | None, sha256: str | None) -> bool:
    """True when the file in the mirror is no longer the one the agent wrote."""
    try:
        stat = dest.stat()
    except FileNotFoundError:
        return False
    if size is None or sha256 is None:
        return False  # nothing recorded to compare with: the agent never wrote it
    if stat.st_size == size and stat.st_mtime_ns == mtime_ns:
        return False
    return hash_file(dest)[0].hexdigest() != sha256


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


def remove_stale_temps(staging: Path, keep: set[str], *, older_than: float = 0.0) -> list[str]:
    """Delete temp files no job owns any more, untouched for `older_than` seconds (another
    process may be writing a newer one); returns their names."""
    if not staging.is_dir():
        return []
    removed = []
    cutoff = time.time() - older_than
    for entry in staging.iterdir():
        if entry.name in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file() and entry.stat().st_mtime <= cutoff:
                entry.unlink()
                removed.append(entry.name)
    return removed
