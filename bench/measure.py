"""Runs one child process and measures it: wall time and peak RSS from `wait4`'s rusage."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    """One child's run: seconds of wall time, its peak RSS in MiB, and its exit status."""

    command: str
    seconds: float
    peak_rss_mib: float
    returncode: int


def run(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    until: Callable[[], bool] | None = None,
) -> Measured:
    """Run `argv` to the end (or SIGKILL it once `until()` turns true, polled every 10 ms).

    Peak RSS comes from `/usr/bin/time -f %M` when it exists: a child forked from Python
    inherits Python's RSS in `ru_maxrss` until it execs, which would inflate small tools.
    """
    timer = "/usr/bin/time"
    wrap = until is None and os.access(timer, os.X_OK)
    with log.open("ab") as out, tempfile.NamedTemporaryFile("r") as rss:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        full = [timer, "-q", "-f", "%M", "-o", rss.name, *argv] if wrap else list(argv)
        start = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=out, stderr=out)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if until else 0)
        while pid == 0:
            assert until is not None
            if until():
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak_kib = int(rss.read().strip().splitlines()[-1]) if wrap else usage.ru_maxrss
    return Measured(shlex.join(argv), seconds, peak_kib / 1024, proc.returncode)


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
