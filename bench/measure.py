"""Runs child processes and measures them: wall time, peak RSS and CPU time from `/usr/bin/time`."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.settings import SOURCE

TIMER = "/usr/bin/time"
STAGING = ".sync-agent"  # the agent's own folder in the mirror (staging files)
POLL = 0.005  # seconds between two looks at `until` (the resolution of a watched event)
TOGETHER_POLL = 0.05  # seconds between two looks at `done` (it may walk a mirror)


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


def run_together(
    argv: Sequence[str],
    envs: Sequence[Mapping[str, str]],
    *,
    log: Path,
    done: Callable[[], bool],
    timeout: float,
) -> Measured:
    """Run one `argv` per environment at once, each under `/usr/bin/time`, until `done()`.

    The seconds are from the start until `done()` turned true; then each process gets
    SIGTERM (the agent, not its timer, which writes the figures once the agent exits).
    Peak RSS is the largest of them, CPU time their sum, the return code the first nonzero
    one. A process that exits before `done()`, or a timeout, ends the run early
    (`killed`): the seconds are then no throughput.
    """
    with log.open("ab") as out, contextlib.ExitStack() as files:
        stats = [files.enter_context(tempfile.NamedTemporaryFile("r")) for _ in envs]
        out.write(f"$ {len(envs)} x {shlex.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [TIMER, "-q", "-f", "%M %U %S", "-o", f.name, *argv],
                stdout=out,
                stderr=out,
                env={**os.environ, **env},
                start_new_session=True,
            )
            for f, env in zip(stats, envs, strict=True)
        ]
        try:
            finished = _await(procs, start, done, timeout)
            seconds = time.perf_counter() - start
            for proc in procs:
                _stop(proc)
        except BaseException:
            for proc in procs:
                _kill(proc)
            raise
        fields = [(f.read().strip().splitlines() or [""])[-1].split() for f in stats]
    figures = [[float(x) for x in f] if len(f) == 3 else [math.nan] * 3 for f in fields]
    codes = [p.returncode for p in procs]
    return Measured(
        f"{len(envs)} x {shlex.join(argv)}",
        seconds,
        max(rss for rss, _, _ in figures) / 1024,
        sum(user + system for _, user, system in figures),
        next((c for c in codes if c), 0),
        killed=not finished,
    )


def _await(
    procs: Sequence[subprocess.Popen[bytes]],
    start: float,
    done: Callable[[], bool],
    timeout: float,
) -> bool:
    """Wait until `done()` (True), or until a process exits or the timeout passes (False)."""
    while time.perf_counter() - start < timeout:
        if done():
            return True
        if any(p.poll() is not None for p in procs):
            return False
        time.sleep(TOGETHER_POLL)
    return False


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to the timed child (the timer's only child), then SIGKILL after `grace`."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    with contextlib.suppress(OSError, ValueError):
        for pid in children.read_text().split():
            os.kill(int(pid), signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill(proc)


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
