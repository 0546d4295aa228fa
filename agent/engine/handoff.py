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
from pathlib import Path


def take_over(staging: Path, partial: str, own: str, *, copy: bool) -> int:
    """Make the earlier attempt's file `partial` this attempt's file `own`; returns how many
    bytes it holds (0: there was nothing to take over). Runs in a thread."""
    source, target = staging / partial, staging / own
    try:
        if copy:
            shutil.copyfile(source, target)  # a new inode: late writes to `source` stay there
        else:
            os.replace(source, target)
        return target.stat().st_size
    except FileNotFoundError:
        return 0


def discard(staging: Path, name: str) -> None:
    """Delete a staging file nobody will continue (runs in a thread)."""
    with contextlib.suppress(FileNotFoundError):
        (staging / name).unlink()


def size_of(staging: Path, name: str) -> int | None:
    """The size of a staging file, None when there is none (runs in a thread)."""
    try:
        return (staging / name).stat().st_size
    except FileNotFoundError:
        return None
