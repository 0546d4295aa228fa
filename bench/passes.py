"""The agent-only measures: re-poll, time to the first file, resume waste, replicas."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from bench import data, seed, subject
from bench.listing import Listing
from bench.measure import Measured, MeasureError, mirror_fault, run, run_together, tree_size
from bench.nginx import API_LATENCY, Nginx, free_port
from bench.settings import SOURCE, Settings, listing_of
from tests.pg import PgCluster, find_bin_dir, start_cluster

SUMMARY = re.compile(
    r"(\d+) listed, (\d+) downloaded, (\d+) moved, (\d+) skipped, (\d+) removed, (\d+) failed"
)
REPLICAS = (1, 2, 3)


# ---------------------------------------------------------------- re-poll


def bench_repoll(s: Settings, nginx: Nginx) -> dict[str, Any]:
    """A pass over a mirror that already holds every listed document, nothing changed.

    Each round starts from a fresh copy of the seeded state database (the mirror folder is
    shared: an unchanged pass does not write to it), and gets a token first as any new
    process does.
    """
    listing = s.sets.repoll
    seeding = time.monotonic()
    cache = seed.ensure_state(s, listing)
    seed_s = time.monotonic() - seeding
    root = s.work_dir / "repoll"
    db = root / "state" / "state.db"
    runs: list[Measured] = []
    for round_no in range(s.rounds):
        config = subject.write_config(
            root, nginx.base_url, listing, s.concurrency, mirror=cache / "mirror"
        )
        shutil.copytree(cache / "state", root / "state")
        started = time.time()
        measured = run(subject.sync(config), log=s.log, timeout=60 if s.quick else 900)
        summary = subject.summary_line(s.log)
        if measured.returncode != 0 or not _unchanged(summary, listing.count):
            seed.forget_state(s, listing)
            raise MeasureError(
                f"re-poll round {round_no + 1}: exit {measured.returncode}, `{summary}` (want "
                f"{listing.count} listed and nothing else); if the agent's state changed, "
                "adapt bench/seed.py"
            )
        runs.append(measured)
        print(
            f"  re-poll round {round_no + 1}: {measured.seconds:.2f} s, "
            f"{measured.peak_rss_mib:.0f} MiB"
        )
    result = {
        "documents": listing.count,
        **_medians(runs),
        "seed_s": round(seed_s, 1),  # ~0 when the seeded state was cached
        "summary": summary,
        "rows_updated_since_start": _updated_since(db, started),
        "documents_table_unchanged": _digest(db) == _digest(cache / "state" / "state.db"),
        "command": runs[0].command,
    }
    shutil.rmtree(root, ignore_errors=True)
    return result


def _unchanged(summary: str, count: int) -> bool:
    found = SUMMARY.search(summary)
    return found is not None and [int(x) for x in found.groups()] == [count, 0, 0, 0, 0, 0]


def _updated_since(db: Path, started: float) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE updated_at >= ?', (started,)
            ).fetchone()[0]
            for table in ("documents", "jobs")
        }


def _digest(db: Path) -> str:
    """sha256 over every `documents` row in id order: equal digests, untouched rows."""
    digest = hashlib.sha256()
    with sqlite3.connect(db) as conn:
        for row in conn.execute("SELECT * FROM documents ORDER BY id"):
            digest.update(repr(row).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- first file


def bench_first_file(s: Settings, nginx: Nginx) -> dict[str, Any]:
    """Seconds to the first file in an empty mirror, from the start of `sync-agent sync`
    and from the start of its pass (the `pass.started` event: start-up excluded).

    The mirror's source folder is polled every 5 ms; once a file is there the pass is
    killed (the rest of it is not what this measures).
    """
    listing = s.sets.first
    root = s.work_dir / "first"
    folder = root / "mirror" / SOURCE
    seconds: list[float] = []
    after_pass: list[float] = []
    for round_no in range(s.rounds):
        config = subject.write_config(
            root, nginx.base_url, listing, s.concurrency, log_level="debug"
        )
        seen: list[float] = []

        def until(elapsed: float, seen: list[float] = seen) -> bool:
            if _has_file(folder):
                seen.append(elapsed)
            return bool(seen)

        logged = s.log.stat().st_size if s.log.exists() else 0
        started = time.time()
        measured = run(subject.sync(config), log=s.log, until=until, timeout=600)
        if not seen:
            raise MeasureError(
                f"first file: no file appeared (exit {measured.returncode}, see {s.log})"
            )
        pass_at = subject.event_time(s.log, logged, "pass.started") - started
        seconds.append(seen[0])
        after_pass.append(seen[0] - pass_at)
        print(f"  first file round {round_no + 1}: {seen[0]:.2f} s, {after_pass[-1]:.2f} s of pass")
    shutil.rmtree(root, ignore_errors=True)
    return {
        "documents": listing.count,
        "median_s": round(statistics.median(seconds), 3),
        "seconds": [round(x, 3) for x in seconds],
        "pass_median_s": round(statistics.median(after_pass), 3),
        "pass_seconds": [round(x, 3) for x in after_pass],
        "command": measured.command,
    }


def _has_file(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(entry.is_file() for entry in entries)
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- resume waste


def bench_resume(s: Settings, nginx: Nginx) -> dict[str, Any]:
    """SIGKILL the agent halfway through one big file, rerun, count the bytes nginx sent."""
    spec = s.sets.resume
    size = spec.total_bytes
    root = s.work_dir / "resume"
    config = subject.write_config(root, nginx.base_url, listing_of(spec), s.concurrency)
    argv = subject.sync(config)
    killed = run(argv, log=s.log, until=lambda _: tree_size(root / "mirror")[1] >= size // 2)
    at_kill = tree_size(root / "mirror")[1]
    second = run(argv, log=s.log)
    if second.returncode != 0:
        raise MeasureError(f"resumed pass failed with exit {second.returncode}")
    mirrored = root / "mirror" / SOURCE / data.file_name(0)
    if _sha256(mirrored) != _sha256(s.data_dir / spec.name / data.file_name(0)):
        raise MeasureError("resumed file differs from the original")
    time.sleep(0.2)  # nginx logs the aborted request once it notices the closed socket
    sent = nginx.bytes_sent(f"/{spec.name}/")
    shutil.rmtree(root, ignore_errors=True)
    return {
        "file_bytes": size,
        "bytes_on_disk_at_kill": at_kill,
        "killed_pass_exit": killed.returncode,
        "storage_requests": nginx.requests(f"/{spec.name}/"),
        "storage_bytes_sent": sent,
        "waste_ratio": round(sent / size, 4),
        "resumed_pass_s": round(second.seconds, 3),
        "command": second.command,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- replicas


def bench_replicas(s: Settings, nginx: Nginx) -> dict[str, Any]:
    """Throughput with 1, 2 and 3 replicas over an API that answers every request 50 ms late.

    Each count runs that many `sync-agent run` replicas at once on one configuration: the
    latency listing (the first files of the small set) from an empty mirror, through nginx's
    slow block (token, listing pages and the download API calls are late; the storage GETs
    they redirect to are not), the state in a fresh database of a throwaway PostgreSQL
    (started as the tests start it, `tests/pg.py`). One replica takes the pass lease and
    lists, every replica downloads; the time runs from the start until every document is in
    the mirror. Without PostgreSQL binaries only one `sync-agent sync` on SQLite is measured.
    """
    listing = s.sets.latency
    bin_dir = find_bin_dir()
    if bin_dir is None:
        why = "no PostgreSQL binaries (apt-get install postgresql)"
        rows: dict[str, Any] = {str(n): {"measured": False, "why": why} for n in REPLICAS}
        rows["1"] = _one_replica(s, nginx.slow_url, listing)
        return {"documents": listing.count, "latency_s": API_LATENCY, "replicas": rows}
    cluster = start_cluster(bin_dir)
    try:
        rows = {str(n): _replicas(s, nginx.slow_url, listing, n, cluster) for n in REPLICAS}
    finally:
        cluster.stop()
    for row in rows.values():
        row["ratio"] = round(row["docs_per_s"] / rows["1"]["docs_per_s"], 2)
    return {
        "documents": listing.count,
        "latency_s": API_LATENCY,
        "state": "postgresql",
        "replicas": rows,
    }


def _replicas(
    s: Settings, origin: str, listing: Listing, n: int, cluster: PgCluster
) -> dict[str, Any]:
    root = s.work_dir / "replicas"
    mirror = root / "mirror" / SOURCE
    runs: list[Measured] = []
    faults: list[str] = []
    for round_no in range(s.rounds):
        url = cluster.url(asyncio.run(cluster.create_database()))
        config = subject.write_config(root, origin, listing, s.concurrency, state_url=url)
        envs = [{"SYNC_AGENT_AGENT__LISTEN": f"127.0.0.1:{free_port()}"} for _ in range(n)]
        measured = run_together(
            subject.run_daemon(config),
            envs,
            log=s.log,
            done=lambda: tree_size(mirror)[0] >= listing.count,
            timeout=120 if s.quick else 900,  # quick: seconds, but CI machines get busy
        )
        if measured.killed or measured.returncode != 0:
            raise MeasureError(
                f"{n} replica(s), round {round_no + 1}: exit {measured.returncode} after "
                f"{measured.seconds:.0f} s with {tree_size(mirror)[0]} of {listing.count} "
                "documents mirrored (see the log)"
            )
        if fault := mirror_fault(root / "mirror", listing.count, None):
            faults.append(f"round {round_no + 1}: {fault}")
            print(f"  FAULT {fault}")
        runs.append(measured)
        print(f"  {n} replica(s), 50 ms API, round {round_no + 1}: {measured.seconds:.2f} s")
    shutil.rmtree(root, ignore_errors=True)
    return _throughput(runs, listing.count, faults)


def _one_replica(s: Settings, origin: str, listing: Listing) -> dict[str, Any]:
    root = s.work_dir / "latency"
    runs: list[Measured] = []
    faults: list[str] = []
    for round_no in range(s.rounds):
        config = subject.write_config(root, origin, listing, s.concurrency)
        measured = run(subject.sync(config), log=s.log)
        if measured.returncode != 0:
            raise MeasureError(f"latency pass exited {measured.returncode} (see the log)")
        if fault := mirror_fault(root / "mirror", listing.count, None):
            faults.append(f"round {round_no + 1}: {fault}")
            print(f"  FAULT {fault}")
        runs.append(measured)
        print(f"  1 replica, 50 ms API, round {round_no + 1}: {measured.seconds:.2f} s")
    shutil.rmtree(root, ignore_errors=True)
    return _throughput(runs, listing.count, faults)


def _throughput(runs: list[Measured], documents: int, faults: list[str]) -> dict[str, Any]:
    medians = _medians(runs)
    return {
        "measured": True,
        **medians,
        "docs_per_s": round(documents / medians["median_s"], 1),
        "faults": faults,
        "command": runs[0].command,
    }


def _medians(runs: list[Measured]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(m.seconds for m in runs), 3),
        "seconds": [round(m.seconds, 3) for m in runs],
        "peak_rss_mib": round(max(m.peak_rss_mib for m in runs), 1),
        "cpu_s": round(statistics.median(m.cpu_s for m in runs), 2),
    }
