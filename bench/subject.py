"""The agent under test: its command line and a configuration that points it at one API set."""

from __future__ import annotations

import compileall
import importlib.util
import json
import shutil
import sys
from datetime import datetime
from pathlib import Path

from bench.listing import Listing
from bench.measure import MeasureError
from bench.settings import SOURCE


def compile_agent() -> None:
    """Byte-compile the agent's package as an installer does, so that no measured run pays
    for compiling it (with PYTHONDONTWRITEBYTECODE set, every run would)."""
    spec = importlib.util.find_spec("agent")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(folder, quiet=1)


def binary() -> list[str]:
    """The `sync-agent` script beside this Python, or `python -m agent` without one."""
    script = Path(sys.executable).parent / "sync-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def write_config(
    root: Path,
    origin: str,
    listing: Listing,
    concurrency: int,
    *,
    mirror: Path | None = None,
    state: Path | None = None,
    state_url: str | None = None,
    log_level: str = "warning",
) -> Path:
    """A fresh folder `root` holding the TOML that points the agent at `origin`'s API set.

    The mirror and state folders default to `root/mirror` and `root/state`, the state
    database to SQLite in the state folder. The token URL is the agent's default,
    `<origin>/o/token/`.
    """
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = root / "sync-agent.toml"
    shared = f'state_url = "{state_url}"\n' if state_url else ""
    config.write_text(
        f"""[agent]
mirror_dir = "{mirror or root / "mirror"}"
state_dir = "{state or root / "state"}"
{shared}max_concurrent_downloads = {concurrency}
max_connections_per_host = {concurrency}
min_free_space = 0
log_format = "json"
log_level = "{log_level}"

[[sources]]
name = "{SOURCE}"
type = "standard-metrics"
base_url = "{origin}{listing.path()}"
client_id = "bench-client"
client_secret = "bench-secret"
requests_per_minute = 1000000000
"""
    )
    return config


def sync(config: Path) -> list[str]:
    return [*binary(), "--config", str(config), "sync"]


def run_daemon(config: Path) -> list[str]:
    return [*binary(), "--config", str(config), "run"]


def event_time(log: Path, offset: int, event: str) -> float:
    """The epoch time of the first `event` the agent logged (JSON lines) after `offset`."""
    with log.open("rb") as handle:
        handle.seek(offset)
        for line in handle:
            if event.encode() not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                stamp = str(entry["timestamp"]).replace("Z", "+00:00")
                return datetime.fromisoformat(stamp).timestamp()
    raise MeasureError(f"the agent logged no {event} event (see {log})")


def summary_line(log: Path) -> str:
    """The agent's last `<source>: N listed, ...` line in the bench log."""
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith(f"{SOURCE}: ")]
    return lines[-1] if lines else ""
