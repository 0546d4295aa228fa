"""SQLAlchemy's PostgreSQL dialect (it imports all of its drivers) stays out of an agent that
runs on SQLite: `agent.state.dialects` names its INSERT for the type checker only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
import agent.cli.commands, agent.daemon, agent.engine.verify, agent.state.dialects
print(sorted(m for m in sys.modules if m.startswith("sqlalchemy.dialects.postgresql")))
"""


def test_starting_the_agent_imports_no_postgresql_dialect() -> None:
    """Importing the CLI, the daemon and the state layer loads no PostgreSQL dialect module."""
    root = Path(__file__).resolve().parents[2]
    found = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"
