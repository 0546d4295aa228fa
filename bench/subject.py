"""The agent under test: its command line and a configuration that points it at one API set."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.listing import Listing
from bench.settings import SOURCE


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
) -> Path:
    """A fresh folder `root` holding the TOML that points the agent at `origin`'s API set.

    The mirror and state folders default to `root/mirror` and `root/state`. The token URL
    is the agent's default, `<origin>/o/token/`.
    """
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = root / "sync-agent.toml"
    config.write_text(
        f"""[agent]
mirror_dir = "{mirror or root / "mirror"}"
state_dir = "{state or root / "state"}"
max_concurrent_downloads = {concurrency}
max_connections_per_host = {concurrency}
min_free_space = 0
log_format = "json"
log_level = "warning"

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


def summary_line(log: Path) -> str:
    """The agent's last `<source>: N listed, ...` line in the bench log."""
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith(f"{SOURCE}: ")]
    return lines[-1] if lines else ""
