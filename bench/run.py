"""The benchmark scenarios: bulk and small transfers against peers, re-poll, resume waste."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import data
from bench.measure import Measured, run, tree_size
from bench.tools import Nginx, which

SOURCE = "bench"
REPO = Path(__file__).resolve().parents[1]  # `python -m bench.serve` runs from here
CP_FSYNC = 'cp -r "$1" "$2" && find "$2" -type f -exec sync {} +'
TOOLS = ("sync-agent", "rclone", "aria2c", "cp", "cp+fsync")


@dataclass
class Settings:
    """What one benchmark run does and where it keeps its files."""

    quick: bool
    rounds: int
    small_rounds: int
    concurrency: int
    data_dir: Path
    work_dir: Path
    log: Path

    @property
    def specs(self) -> dict[str, data.Spec]:
        return data.QUICK if self.quick else data.FULL

    @property
    def listing(self) -> int:
        return data.LISTING_QUICK if self.quick else data.LISTING_FULL


@dataclass
class Results:
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    repoll: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)


def agent_binary() -> list[str]:
    script = Path(sys.executable).parent / "sync-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


@contextmanager
def sandbox(documents: int, redirect: str, log: Path) -> Iterator[str]:
    """`python -m bench.serve` as a child; yields the API root it prints."""
    argv = [sys.executable, "-m", "bench.serve", "--documents", str(documents)]
    argv += ["--redirect", redirect]
    with log.open("ab") as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("http://127.0.0.1:"):
                raise SystemExit(f"sandbox did not start (see {log})")
            yield line
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def agent_config(api: str, root: Path, concurrency: int) -> Path:
    """A fresh mirror and state folder under `root`, and the TOML that points at them."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = root / "sync-agent.toml"
    config.write_text(
        f"""[agent]
mirror_dir = "{root / "mirror"}"
state_dir = "{root / "state"}"
max_concurrent_downloads = {concurrency}
max_connections_per_host = {concurrency}
min_free_space = 0
log_format = "json"
log_level = "warning"

[[sources]]
name = "{SOURCE}"
type = "standard-metrics"
base_url = "{api}"
client_id = "demo-client"
client_secret = "demo-secret"
requests_per_minute = 1000000000
"""
    )
    return config


# ---------------------------------------------------------------- bulk and small


def transfer_commands(
    s: Settings, spec: data.Spec, nginx: Nginx, api: str
) -> dict[str, Callable[[Path], list[str]]]:
    """Each tool's command line, given a fresh destination folder."""
    url = f"{nginx.base_url}/{spec.name}/"
    n = str(s.concurrency)
    urls = s.work_dir / f"{spec.name}.urls"
    urls.write_text("".join(f"{url}{data.file_name(i)}\n" for i in range(len(spec.sizes))))
    rclone = [which("rclone") or "rclone", "copy", ":http:", "--http-url", url]
    aria = [which("aria2c") or "aria2c", "-i", str(urls), "-j", n, "--file-allocation=none"]
    aria += ["--auto-file-renaming=false", "--console-log-level=warn", "--summary-interval=0"]
    return {
        "sync-agent": lambda d: [
            *agent_binary(),
            "--config",
            str(agent_config(api, d, s.concurrency)),
            "sync",
        ],
        "rclone": lambda d: [*rclone, str(d), "--transfers", n, "--config", "/dev/null", "-q"],
        "aria2c": lambda d: [*aria, "-d", str(d)],
        "cp": lambda d: ["cp", "-r", str(s.data_dir / spec.name), str(d)],
        # the durable floor: the same copy, then fsync every file, as the agent does
        "cp+fsync": lambda d: [
            "sh",
            "-c",
            CP_FSYNC,
            "cp+fsync",
            str(s.data_dir / spec.name),
            str(d),
        ],
    }


def bench_transfer(s: Settings, key: str, nginx: Nginx) -> dict[str, Any]:
    spec = s.specs[key]
    data.ensure(s.data_dir, spec)
    runs: dict[str, list[Measured]] = {tool: [] for tool in TOOLS}
    with sandbox(len(spec.sizes), f"{nginx.base_url}/{spec.name}", s.log) as api:
        commands = transfer_commands(s, spec, nginx, api)
        for round_no in range(s.small_rounds if key == "small" else s.rounds):
            order = TOOLS[round_no % len(TOOLS) :] + TOOLS[: round_no % len(TOOLS)]
            for tool in order:
                dest = s.work_dir / f"{key}-{tool}"
                shutil.rmtree(dest, ignore_errors=True)
                argv = commands[tool](dest)
                if tool != "sync-agent":
                    dest.parent.mkdir(parents=True, exist_ok=True)
                measured = run(argv, log=s.log)
                check_tree(tool, dest, spec, measured)
                runs[tool].append(measured)
                print(
                    f"  {key} round {round_no + 1} {tool}: {measured.seconds:.2f} s, "
                    f"{measured.peak_rss_mib:.0f} MiB"
                )
                shutil.rmtree(dest, ignore_errors=True)
    return summarise(spec, runs)


def check_tree(tool: str, dest: Path, spec: data.Spec, measured: Measured) -> None:
    """Fail loudly unless the tool exited 0 and left every byte (agent state excluded)."""
    root = dest / "mirror" if tool == "sync-agent" else dest
    files, total = tree_size(root)
    if measured.returncode != 0 or total != spec.total_bytes or files < len(spec.sizes):
        raise SystemExit(
            f"{tool} on {spec.name}: exit {measured.returncode}, {files} files, {total} bytes "
            f"(want {len(spec.sizes)} files, {spec.total_bytes} bytes)"
        )


def summarise(spec: data.Spec, runs: dict[str, list[Measured]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "files": len(spec.sizes),
        "bytes": spec.total_bytes,
        "tools": {},
    }
    for tool, measured in runs.items():
        median = statistics.median(m.seconds for m in measured)
        out["tools"][tool] = {
            "median_s": round(median, 3),
            "seconds": [round(m.seconds, 3) for m in measured],
            "peak_rss_mib": round(max(m.peak_rss_mib for m in measured), 1),
            "mib_per_s": round(spec.total_bytes / 2**20 / median, 1),
            "command": measured[0].command,
        }
    agent = out["tools"]["sync-agent"]["median_s"]
    out["ratios"] = {
        f"sync-agent/{tool}": round(agent / out["tools"][tool]["median_s"], 3) for tool in TOOLS[1:]
    }
    return out


# ---------------------------------------------------------------- re-poll


def bench_repoll(s: Settings, nginx: Nginx) -> dict[str, Any]:
    """Mirror the whole listing through the full flow, then time a pass with nothing changed.

    Both passes talk to the same sandbox process, so the second one can reuse the first
    one's token, as a daemon's next poll would.
    """
    root = s.work_dir / "repoll"
    with sandbox(s.listing, f"{nginx.base_url}/tiny", s.log) as api:
        config = agent_config(api, root, s.concurrency)
        argv = [*agent_binary(), "--config", str(config), "sync"]
        first = run(argv, log=s.log)
        if first.returncode != 0:
            raise SystemExit(f"first re-poll pass failed with exit {first.returncode}")
        db = root / "state" / "state.db"
        before = snapshot(db)
        started = time.time()
        second = run(argv, log=s.log)
    after = snapshot(db)
    if second.returncode != 0:
        raise SystemExit(f"second re-poll pass failed with exit {second.returncode}")
    result = {
        "documents": s.listing,
        "first_pass_s": round(first.seconds, 3),
        "first_pass_docs_per_s": round(s.listing / first.seconds, 1),
        "first_pass_peak_rss_mib": round(first.peak_rss_mib, 1),
        "second_pass_s": round(second.seconds, 3),
        "second_pass_peak_rss_mib": round(second.peak_rss_mib, 1),
        "second_pass_summary": _summary_line(s.log),
        "rows_changed": rows_changed(before, after),
        "rows_updated_at_after_start": updated_since(db, started),
        "command": second.command,
    }
    shutil.rmtree(root, ignore_errors=True)
    return result


def _summary_line(log: Path) -> str:
    """The agent's last `<source>: N listed, ...` line, as printed to the log."""
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith(f"{SOURCE}: ")]
    return lines[-1] if lines else ""


def snapshot(db: Path) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of every table, to diff one pass's writes exactly."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: set(conn.execute(f'SELECT * FROM "{t}"')) for t in tables}


def rows_changed(
    before: dict[str, set[tuple[Any, ...]]], after: dict[str, set[tuple[Any, ...]]]
) -> dict[str, int]:
    """Per table: rows inserted, deleted or modified (a modified row counts once)."""
    out = {}
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, set()), after.get(table, set())
        out[table] = max(len(new - old), len(old - new))
    return out


def updated_since(db: Path, started: float) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE updated_at >= ?',
                (started,),
            ).fetchone()[0]
            for table in ("documents", "jobs", "cursors")
        }


# ---------------------------------------------------------------- resume waste


def bench_resume(s: Settings, nginx: Nginx) -> dict[str, Any]:
    """SIGKILL the agent halfway through one big file, rerun, count the bytes nginx sent."""
    spec = s.specs["resume"]
    folder = data.ensure(s.data_dir, spec)
    size = spec.total_bytes
    root = s.work_dir / "resume"
    with sandbox(1, f"{nginx.base_url}/{spec.name}", s.log) as api:
        config = agent_config(api, root, s.concurrency)
        argv = [*agent_binary(), "--config", str(config), "sync"]
        killed = run(argv, log=s.log, until=lambda: tree_size(root / "mirror")[1] >= size // 2)
        at_kill = tree_size(root / "mirror")[1]
        second = run(argv, log=s.log)
    if second.returncode != 0:
        raise SystemExit(f"resumed pass failed with exit {second.returncode}")
    mirrored = root / "mirror" / SOURCE / data.file_name(0)
    if _sha256(mirrored) != _sha256(folder / data.file_name(0)):
        raise SystemExit("resumed file differs from the original")
    time.sleep(0.2)  # nginx logs the aborted request once it notices the closed socket
    sent = nginx.bytes_sent(f"/{spec.name}/")
    result = {
        "file_bytes": size,
        "bytes_on_disk_at_kill": at_kill,
        "killed_pass_exit": killed.returncode,
        "nginx_requests": nginx.requests(f"/{spec.name}/"),
        "nginx_bytes_sent": sent,
        "waste_ratio": round(sent / size, 4),
        "resumed_pass_s": round(second.seconds, 3),
        "command": second.command,
    }
    shutil.rmtree(root, ignore_errors=True)
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def as_dict(results: Results) -> dict[str, Any]:
    return asdict(results)
