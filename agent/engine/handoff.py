"""Takes over the bytes an earlier attempt at a job left in staging, without sharing a file.

Each attempt writes its own staging file. A new attempt continues the earlier one's bytes:

- when that attempt's holder let the job go (it released it on shutdown, or it was a
  previous process on SQLite, gone for certain under the instance lock), the file is
  renamed to the new attempt's name: nobody writes to it any more;
- when its lease expired instead, its holder may be a stalled replica that wakes up and
  writes a few more blocks before its next checkpoint is refused. Renaming would let those
  writes land in the new attempt's file (an open descriptor follows the rename), so the
  bytes are copied into a new file instead, and the old one is unlinked only after the copy
  is checkpointed: whatever the old holder writes later goes to a file nobody reads.

Either way the bytes kept are a prefix of the stream the job's validator names (every
attempt checkpoints a new validator before writing under it), which `Range` + `If-Range`
continue or restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from agent.transfer.mirrorfs import Folder

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def take_over(staging: Folder, partial: str, own: str, *, copy: bool) -> int:
    """Make the earlier attempt's file `partial` this attempt's file `own`; returns how many
    bytes it holds (0: there was nothing to take over). Runs in a thread."""
    if not copy:
        try:
            os.replace(partial, own, src_dir_fd=staging.fd, dst_dir_fd=staging.fd)
        except FileNotFoundError:
            return 0
        return size_of(staging, own) or 0
    source = staging.open_read(partial)
    if source is None:
        return 0
    with source, os.fdopen(os.open(own, WRITE_FLAGS, 0o666, dir_fd=staging.fd), "wb") as target:
        shutil.copyfileobj(source, target)  # a new inode: late writes to `partial` stay there
    return size_of(staging, own) or 0


def discard(staging: Folder, name: str) -> None:
    """Delete a staging file nobody will continue (runs in a thread)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=staging.fd)


def size_of(staging: Folder, name: str) -> int | None:
    """The size of a staging file, None when there is none."""
    found = staging.lstat(name)
    return None if found is None else found.st_size
