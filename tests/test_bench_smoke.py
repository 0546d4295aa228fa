"""The benchmark's quick mode runs end to end on tiny data sets and writes sane results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import tools
from bench.__main__ import main

pytestmark = pytest.mark.slow


def test_quick_benchmark_runs_every_scenario_and_reports(tmp_path: Path) -> None:
    """`python -m bench run --quick` mirrors every byte with each tool and writes both reports."""
    missing = tools.missing_tools()
    if missing:
        pytest.skip(f"benchmark peers not installed: {', '.join(missing)} (apt-get install)")
    argv = ["run", "--quick", "--no-install", "--out", str(tmp_path / "out")]
    argv += ["--data", str(tmp_path / "data"), "--work", str(tmp_path / "work")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for key in ("bulk", "small"):
        block = results["transfers"][key]
        assert set(block["tools"]) == {"sync-agent", "rclone", "aria2c", "cp", "cp+fsync"}
        assert all(row["median_s"] > 0 for row in block["tools"].values())
        assert "sync-agent/rclone" in block["ratios"]
    repoll = results["repoll"]
    assert repoll["first_pass_docs_per_s"] > 0
    assert "0 downloaded" in repoll["second_pass_summary"]
    assert repoll["rows_changed"]["documents"] == 0  # nothing changed, nothing rewritten
    assert repoll["second_pass_peak_rss_mib"] > 0
    resume = results["resume"]
    assert resume["nginx_requests"] >= 2  # the killed request and the resumed one
    assert 1.0 <= resume["waste_ratio"] < 2.0  # resumed, not fetched twice from zero
    report = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "## bulk" in report
    assert "Resume waste" in report
