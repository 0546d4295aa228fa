"""Runs one child process and measures it: wall time, peak RSS and CPU time from `/usr/bin/time`."""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.settings import SOURCE

TIMER = "/usr/bin/time"
STAGING = ".sync-agent"  # the agent's own folder in the mirror (staging files)
POLL = 0.005  # seconds between two looks at `until` (the resolution of a watched event)


class MeasureError(Exception):
    """A measure cannot give a valid number (a tool failed, or its output is wrong)."""


@dataclass(frozen=True)
class Measured:
    """One child's run: wall seconds, peak RSS in MiB, CPU seconds and how it ended.

    `peak_rss_mib` and `cpu_s` are NaN when the child was killed (the timer dies with it).
    """

    command: str
    seconds: float
    peak_rss_mib: float
    cpu_s: float
    returncode: int
    killed: bool = False


def run(
    argv: Sequence[str],
    *,
    log: Path,
    until: Callable[[float], bool] | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run `argv` under `/usr/bin/time` until it exits, `until(elapsed)` turns true or the timeout.

    The child gets its own process group, so a kill (SIGKILL, as a crash would) reaches the
    timer and the tool alike. A child forked from Python would report Python's RSS in
    `ru_maxrss` until it execs; the timer's figure is the tool's own.
    """
    with log.open("ab") as out, tempfile.NamedTemporaryFile("r") as stats:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        full = [TIMER, "-q", "-f", "%M %U %S", "-o", stats.name, *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=out, start_new_session=True)
        try:
            killed = _wait(proc, start, until, timeout)
        except BaseException:  # SIGTERM or Ctrl-C: the child is in its own group, end it too
            _kill(proc)
            raise
        seconds = time.perf_counter() - start
        fields = (stats.read().strip().splitlines() or [""])[-1].split()
    rss_kib, user, system = (float(x) for x in fields) if len(fields) == 3 else (math.nan,) * 3
    return Measured(
        shlex.join(argv), seconds, rss_kib / 1024, user + system, proc.returncode, killed
    )


def _wait(
    proc: subprocess.Popen[bytes],
    start: float,
    until: Callable[[float], bool] | None,
    timeout: float | None,
) -> bool:
    """Wait for the child; True when it had to be killed."""
    if until is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return _kill(proc)
        return False
    deadline = math.inf if timeout is None else start + timeout
    while proc.poll() is None:
        now = time.perf_counter()
        if now >= deadline or until(now - start):
            return _kill(proc)
        time.sleep(POLL)
    return False


def _kill(proc: subprocess.Popen[bytes]) -> bool:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under `root`, hidden files and the agent's staging folder included."""
    files = total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return files, total


def mirror_fault(mirror: Path, count: int, total_bytes: int | None) -> str | None:
    """What is wrong with an agent's mirror after a pass that exited 0, or None.

    Counts the files of the source folder (not the staging folder) and, when given, their
    bytes; names the temporary files a pass left behind.
    """
    files, total = tree_size(mirror / SOURCE)
    if files == count and total_bytes in (None, total):
        return None
    staged, _ = tree_size(mirror / STAGING)
    return (
        f"sync-agent exited 0 with {files} of {count} files in place ({total:,} bytes"
        + ("" if total_bytes is None else f" of {total_bytes:,}")
        + f"), {staged} temporary files left in {STAGING}/"
    )
