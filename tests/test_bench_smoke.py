"""The benchmark's quick mode runs every measure end to end on tiny sets and reports numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import chart, targets, tools
from bench.__main__ import faults, main
from bench.report import markdown
from tests.pg import find_bin_dir

pytestmark = pytest.mark.slow


def _tail(log: Path, lines: int = 60) -> str:
    """The end of the benchmark's log (every tool's output), for a failed run's message."""
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def test_quick_benchmark_produces_numbers_for_every_set(tmp_path: Path) -> None:
    """`python -m bench run --quick` measures each set and writes RESULTS.md, JSON and SVG.

    Then, on the same results, a failed measure comes out as failed in the report.
    """
    missing = tools.missing_tools()
    if missing:
        pytest.skip(f"benchmark tools not installed: {', '.join(missing)} (apt-get install)")
    out = tmp_path / "out"
    argv = ["run", "--quick", "--no-install", "--out", str(out)]
    argv += ["--data", str(tmp_path / "data"), "--work", str(tmp_path / "work")]
    assert main(argv) == 0, _tail(tmp_path / "work" / "bench.log")
    results = json.loads((out / "results.json").read_text())

    for key, peer in (("bulk", "rclone"), ("small", "rclone"), ("big", "curl")):
        block = results["transfers"][key]
        assert block["peer"] == peer
        assert all(row["median_s"] > 0 for row in block["tools"].values()), key
        assert block["ratios"][f"sync-agent/{peer}"] > 0
        assert block["tools"]["sync-agent"]["peak_rss_mib"] > 0

    repoll = results["repoll"]
    assert repoll["median_s"] > 0
    assert repoll["peak_rss_mib"] > 0
    assert f"{repoll['documents']} listed, 0 downloaded" in repoll["summary"]
    assert repoll["documents_table_unchanged"]  # nothing changed, nothing rewritten

    assert results["first_file"]["median_s"] > 0

    resume = results["resume"]
    assert resume["storage_requests"] >= 2  # the killed request and the resumed one
    assert 1.0 <= resume["waste_ratio"] < 2.0  # resumed, not fetched twice from zero

    replicas = results["replicas"]["replicas"]
    assert replicas["1"]["measured"]
    assert replicas["1"]["docs_per_s"] > 0
    if find_bin_dir() is not None:  # 2 and 3 replicas share a PostgreSQL state
        assert [replicas[n]["ratio"] > 0 for n in ("1", "2", "3")] == [True] * 3

    values = {t["key"]: t["value"] for t in results["targets"]}
    assert all(v is not None and math.isfinite(v) for v in values.values()), values
    assert all(t["met"] is None for t in results["targets"])  # quick mode passes no verdict

    report = (out / "RESULTS.md").read_text()
    for heading in ("## Targets", "## bulk", "## small", "## big", "## Re-poll", "## First file"):
        assert heading in report
    svg = (out / "results.svg").read_text()
    assert svg.startswith("<svg")
    assert svg.count("<rect") > 10  # a bar per tool and measure

    # A measure that failed is reported as failed, and the rest of the report still renders.
    results["repoll"] = {"error": "re-poll round 1: exit -9"}
    results["targets"] = targets.evaluate(results, quick=False)
    results["faults"] = faults(results)
    failed = markdown(results)
    assert "**The measure failed**: re-poll round 1: exit -9" in failed
    assert "- **repoll: the measure failed: re-poll round 1: exit -9**" in failed
    assert chart.svg(results, results["targets"], "t").startswith("<svg")

    # Every measure failed (the agent would not start): still a report and a chart, no crash.
    for key in results["transfers"]:
        results["transfers"][key] = {"error": "exit 1"}
    for key in ("repoll", "first_file", "resume", "replicas"):
        results[key] = {"error": "exit 1"}
    results["targets"] = targets.evaluate(results, quick=False)
    assert chart.svg(results, results["targets"], "t").startswith("<svg")


def test_only_runs_the_named_measures_and_judges_no_other(tmp_path: Path) -> None:
    """`--only first_file` measures that one; the others are reported as not measured."""
    missing = tools.missing_tools()
    if missing:
        pytest.skip(f"benchmark tools not installed: {', '.join(missing)} (apt-get install)")
    out = tmp_path / "out"
    argv = ["run", "--quick", "--no-install", "--out", str(out), "--only", "first_file"]
    argv += ["--data", str(tmp_path / "data"), "--work", str(tmp_path / "work")]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    first = results["first_file"]
    assert 0 < first["pass_median_s"] < first["median_s"]  # the pass starts after start-up
    assert "skipped" in results["resume"]
    assert "skipped" in results["transfers"]["big"]
    assert results["faults"] == []
    results["targets"] = targets.evaluate(results, quick=False, partial=True)
    verdicts = {t["key"]: t["met"] for t in results["targets"]}
    assert verdicts["first_file"] is not None
    assert verdicts["resume_waste"] is None
    assert "## big: not measured in this run (--only)" in markdown(results)
    with pytest.raises(SystemExit):
        main(["run", "--quick", "--no-install", "--only", "bulk,nonsense"])
