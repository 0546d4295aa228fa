"""A pass that meets a damaged state database ends the process with 74: `sync` at once, the
daemon after draining, so its supervisor restarts it and the new process sets the file
aside (a running process never swaps the database under its passes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from agent.cli import sync_exit_code
from agent.config import parse_config
from agent.daemon import Daemon
from agent.errors import EXIT_STATE, AuthenticationError, CorruptStateError, StateError
from agent.models import PassStats


class DamagedAgent:
    """What `Daemon._pass` touches of the agent, over a database that reads as damaged."""

    def __init__(self, error: StateError) -> None:
        self.error = error
        limiter = SimpleNamespace(waited=0.0)
        self.slots = {"sm": SimpleNamespace(runtime=SimpleNamespace(limiter=limiter))}
        self.store = SimpleNamespace(
            status=SimpleNamespace(sources=self.run_pass),
            requests=SimpleNamespace(answered=self.run_pass),
        )

    async def run_pass(self, *_: object) -> None:
        raise self.error


def daemon(tmp_path: Path, error: StateError) -> Daemon:
    config = parse_config(
        {
            "agent": {"mirror_dir": str(tmp_path / "m"), "state_dir": str(tmp_path / "s")},
            "sources": [
                {"name": "sm", "type": "standard-metrics", "client_id": "c", "client_secret": "s"}
            ],
        },
        env={},
    )
    running = Daemon(config, tmp_path / "config.toml")
    running.agent = DamagedAgent(error)  # type: ignore[assignment]
    return running


async def test_a_damaged_database_stops_the_daemon_with_74(tmp_path: Path) -> None:
    running = daemon(tmp_path, CorruptStateError("/s/state.db", "database disk image is malformed"))

    await running._pass("sm")

    assert running.stop_requested.is_set()
    assert running.exit_code == EXIT_STATE


async def test_another_state_error_fails_the_pass_and_the_daemon_goes_on(tmp_path: Path) -> None:
    running = daemon(tmp_path, StateError("state database /s/state.db: database is locked"))

    await running._pass("sm")

    assert not running.stop_requested.is_set()
    assert running.exit_code == 0


def test_sync_exits_74_when_a_pass_met_a_damaged_database() -> None:
    results = {
        "ok": PassStats(listed=1),
        "hd": AuthenticationError("hd", "refused"),
        "sm": CorruptStateError("/s/state.db", "database disk image is malformed"),
    }
    assert sync_exit_code(results) == EXIT_STATE
