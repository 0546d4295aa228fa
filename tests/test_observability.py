"""The Grafana dashboard and the Prometheus alerts use only series the agent exports, and
the alerts pass promtool's syntax check and their unit tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Metrics

DEPLOY = Path(__file__).parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "sync-agent.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
# Exported by a part of the agent still being written (the webhook notifier).
NOT_YET_EXPORTED = {"sync_agent_webhook_oldest_pending_seconds"}
SERIES = re.compile(r"\bsync_agent_[a-z_]+")


def exported() -> set[str]:
    """Every sample name a daemon's registry exports once each method has been used."""
    m = Metrics(clock=lambda: 1.0)
    m.observe_pass("s", 1.0, ok=True)
    m.add_download("s", 10)
    m.add_failure("s", "transient")
    m.set_documents("s", {"mirrored": 1})
    m.set_queue_depth(1)
    m.add_rate_wait("s", 1.0)
    m.set_loop_lag(0.1)
    m.set_poll_interval("s", 60.0)
    m.watch_free_space(lambda: 1, 1)
    text = m.render().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.mark.parametrize("exprs", [dashboard_exprs, alert_exprs], ids=["dashboard", "alerts"])
def test_every_series_used_is_exported(exprs: object) -> None:
    """A renamed or missing metric breaks this test, not a panel or an alert in production."""
    assert callable(exprs)
    used = {name for expr in exprs() for name in SERIES.findall(expr)}
    assert used, "no series found"
    assert used - exported() - NOT_YET_EXPORTED == set()


def test_dashboard_panels_are_well_formed() -> None:
    """Unique panel ids, every query on the data-source variable, no overlapping panels."""
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, panel["title"]
        assert pos["x"] + pos["w"] <= 24
        cells |= area
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool is not installed")
    return path


@pytest.mark.parametrize(
    ("command", "path"), [("check", ALERTS), ("test", ALERT_TESTS)], ids=["check", "test"]
)
def test_promtool_accepts_the_rules_and_their_tests(command: str, path: Path) -> None:
    """promtool check rules (syntax, templates) and promtool test rules (each alert fires)."""
    result = subprocess.run(
        [promtool(), command, "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
