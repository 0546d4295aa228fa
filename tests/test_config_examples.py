"""Every example in config/ passes `sync-agent check-config`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "config").glob("*.toml"))
ENV = {
    "SM_CLIENT_SECRET": "x",
    "HUDDLE_REFRESH_TOKEN": "x",
    "IH_CLIENT_SECRET": "x",
    "CDE_CLIENT_SECRET": "x",
}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check_config(example: Path, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "index-health").write_text("secret\n")
    text = example.read_text().replace("/etc/sync-agent/", f"{creds}/")
    for name in ("huddle-refresh-token",):
        (creds / name).write_text("token\n")
    config = tmp_path / example.name
    config.write_text(text)
    env = {**os.environ, **ENV, "CREDENTIALS_DIRECTORY": str(creds)}
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_there_is_an_example_per_source_type() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"standard-metrics", "huddle", "index-health", "opencde", "combined"} <= names
