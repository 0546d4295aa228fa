"""`sync-agent demo`: all four sandbox APIs mirrored into one folder, checked and tabled."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tomllib
from pathlib import Path

import pytest

from agent.demo import SERVING, Row, print_table
from agent.models import PassStats
from tests.e2e.cli import run_cli

pytestmark = pytest.mark.e2e
SOURCES = ("standard-metrics", "huddle", "index-health", "opencde")


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and ".sync-agent" not in p.parts]


async def test_demo_mirrors_all_four_apis_and_verifies_them(tmp_path: Path) -> None:
    """One run mirrors every API into its own sub-folder and the table shows all verified."""
    folder = tmp_path / "mirror"
    result = await run_cli("demo", str(folder), "--documents", "5", timeout=120)
    assert result.code == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:6]}
    assert list(rows) == list(SOURCES)
    for name, cells in rows.items():
        verified, expected = cells[-1].split("/")
        assert verified == expected, cells
        assert int(cells[2]) == int(expected)  # downloaded
        assert len(files_under(folder / name)) == int(expected)
    assert rows["opencde"][-1] == "5/5"  # the demo's own selection picked every document
    assert "carrying Authorization: 0" in result.stdout


def test_table_marks_a_source_whose_bytes_do_not_match(capsys: pytest.CaptureFixture[str]) -> None:
    """A source with fewer verified files than expected is not ok, and the table shows it."""
    good = Row("a", PassStats(listed=3, downloaded=3, bytes=2048), verified=3, expected=3)
    short = Row("b", PassStats(listed=3, downloaded=3), verified=2, expected=3)
    failed = Row("c", RuntimeError("token refused"), verified=0, expected=3)
    assert (good.ok, short.ok, failed.ok) == (True, False, False)
    print_table([good, short, failed])
    out = capsys.readouterr().out.splitlines()
    assert re.search(r"^a\s+3\s+3\s+0\s+2\.0 KiB\s+3/3$", out[1])
    assert out[2].endswith("2/3")
    assert "token refused" in out[3]


async def test_serve_prints_a_config_that_the_real_cli_mirrors(tmp_path: Path) -> None:
    """demo --serve serves on loopback until SIGTERM; its printed config works with `sync`."""
    mirror = tmp_path / "mirror"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "agent", "demo", "--serve", str(mirror), "--documents", "3"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not lines or lines[-1].rstrip("\n") != SERVING:
                lines.append((await proc.stdout.readline()).decode())
                assert lines[-1], "demo --serve ended before it was ready"
        text = "".join(lines)
        config = tomllib.loads(text)
        urls = [s["base_url"] for s in config["sources"]]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)
        path = tmp_path / "demo.toml"
        path.write_text(text.replace("[agent]\n", f'[agent]\nstate_dir = "{tmp_path}/state"\n'))
        result = await run_cli("--config", str(path), "sync", timeout=120)
        assert result.code == 0, result.stderr
        enabled = [s["name"] for s in config["sources"] if s["enabled"]]
        assert enabled == ["standard-metrics", "huddle", "index-health"]
        for name in enabled:
            assert files_under(mirror / name), name
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
