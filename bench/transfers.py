"""Copy sets from an empty mirror, the agent against its peers, alternating over rounds.

The agent goes through its whole flow (token, listing pages, one API call and its 302 per
document, the storage GET, verification, fsync, rename, state commit); the peers fetch the
same files from the same nginx (rclone over its HTTP backend, aria2c and curl from URLs) or
copy them on disk (`cp`, the disk's limit; `cp+fsync`, the durable floor).
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import data, subject
from bench.measure import Measured, MeasureError, mirror_fault, run, tree_size
from bench.nginx import Nginx
from bench.settings import Settings, listing_of
from bench.tools import which

AGENT = "sync-agent"
CP_FSYNC = 'cp -r "$1" "$2" && find "$2" -type f -exec sync {} +'
CURL_FSYNC = 'mkdir -p "$2" && curl -sS -o "$2/$3" "$1$3" && sync "$2/$3"'

Command = Callable[[Path], list[str]]


@dataclass(frozen=True)
class TransferSet:
    """A file set, the tools that copy it and the peer the agent's time is divided by."""

    key: str
    spec: data.Spec
    peer: str
    tools: tuple[str, ...]


def transfer_sets(s: Settings) -> list[TransferSet]:
    floors = ("cp", "cp+fsync")
    return [
        TransferSet("bulk", s.sets.bulk, "rclone", (AGENT, "rclone", "aria2c", *floors)),
        # no aria2c: it takes minutes per round here, and rclone is the peer
        TransferSet("small", s.sets.small, "rclone", (AGENT, "rclone", *floors)),
        TransferSet("big", s.sets.big, "curl", (AGENT, "curl", "curl+fsync")),
    ]


def commands(s: Settings, spec: data.Spec, nginx: Nginx) -> dict[str, Command]:
    """Each tool's command line, given a fresh destination folder."""
    url = f"{nginx.base_url}/{spec.name}/"
    n = str(s.concurrency)
    urls = s.work_dir / f"{spec.name}.urls"
    urls.write_text("".join(f"{url}{data.file_name(i)}\n" for i in range(spec.count)))
    folder = str(s.data_dir / spec.name)
    listing = listing_of(spec)
    rclone = [which("rclone") or "rclone", "copy", ":http:", "--http-url", url]
    aria = [which("aria2c") or "aria2c", "-i", str(urls), "-j", n, "--file-allocation=none"]
    aria += ["--auto-file-renaming=false", "--console-log-level=warn", "--summary-interval=0"]
    curl = which("curl") or "curl"
    first = data.file_name(0)
    return {
        AGENT: lambda d: subject.sync(
            subject.write_config(d, nginx.base_url, listing, s.concurrency)
        ),
        "rclone": lambda d: [*rclone, str(d), "--transfers", n, "--config", "/dev/null", "-q"],
        "aria2c": lambda d: [*aria, "-d", str(d)],
        "cp": lambda d: ["cp", "-r", folder, str(d)],
        "cp+fsync": lambda d: ["sh", "-c", CP_FSYNC, "cp+fsync", folder, str(d)],
        "curl": lambda d: [curl, "-sS", "--create-dirs", "-o", str(d / first), url + first],
        "curl+fsync": lambda d: ["sh", "-c", CURL_FSYNC, "curl+fsync", url, str(d), first],
    }


def bench_transfer(s: Settings, ts: TransferSet, nginx: Nginx) -> dict[str, Any]:
    """Every tool of the set once per round, in an order that rotates from round to round."""
    runs: dict[str, list[Measured]] = {tool: [] for tool in ts.tools}
    faults: list[str] = []
    build = commands(s, ts.spec, nginx)
    for round_no in range(s.rounds):
        shift = round_no % len(ts.tools)
        for tool in ts.tools[shift:] + ts.tools[:shift]:
            dest = s.work_dir / f"{ts.key}-{tool}"
            shutil.rmtree(dest, ignore_errors=True)
            measured = run(build[tool](dest), log=s.log)
            if fault := check_tree(tool, dest, ts.spec, measured):
                faults.append(f"round {round_no + 1}: {fault}")
                print(f"  FAULT {fault}")
            runs[tool].append(measured)
            print(
                f"  {ts.key} round {round_no + 1} {tool}: {measured.seconds:.2f} s, "
                f"{measured.peak_rss_mib:.0f} MiB"
            )
            shutil.rmtree(dest, ignore_errors=True)
    return {**summarise(ts, runs), "faults": faults}


def check_tree(tool: str, dest: Path, spec: data.Spec, measured: Measured) -> str | None:
    """None when the tool exited 0 with every file in place.

    A peer that fails raises `MeasureError`; so does the agent when it exits non-zero.
    When the agent exits 0 without every file in its place, its time still counts and the
    fault is returned, to be reported: that is a bug the benchmark found, not a slow run.
    """
    if measured.returncode != 0:
        raise MeasureError(f"{tool} on {spec.name} exited {measured.returncode} (see the log)")
    if tool != AGENT:
        files, total = tree_size(dest)
        if files != spec.count or total != spec.total_bytes:
            raise MeasureError(
                f"{tool} on {spec.name}: {files} files, {total} bytes "
                f"(want {spec.count} files, {spec.total_bytes} bytes)"
            )
        return None
    return mirror_fault(dest / "mirror", spec.count, spec.total_bytes)


def summarise(ts: TransferSet, runs: dict[str, list[Measured]]) -> dict[str, Any]:
    tools = {tool: _row(ts.spec, measured) for tool, measured in runs.items()}
    agent = tools[AGENT]["median_s"]
    return {
        "files": ts.spec.count,
        "bytes": ts.spec.total_bytes,
        "groups": [list(g) for g in ts.spec.groups],
        "peer": ts.peer,
        "tools": tools,
        "ratios": {
            f"{AGENT}/{tool}": round(agent / row["median_s"], 3)
            for tool, row in tools.items()
            if tool != AGENT
        },
    }


def _row(spec: data.Spec, measured: list[Measured]) -> dict[str, Any]:
    median = statistics.median(m.seconds for m in measured)
    return {
        "median_s": round(median, 3),
        "seconds": [round(m.seconds, 3) for m in measured],
        "mib_per_s": round(spec.total_bytes / 2**20 / median, 1),
        "peak_rss_mib": round(max(m.peak_rss_mib for m in measured), 1),
        "cpu_s": round(statistics.median(m.cpu_s for m in measured), 2),
        "command": measured[0].command,
    }
