"""The `on_change` command: run with the pass's entries on stdin, only when the mirror changed,
never twice at once, stopped after its timeout."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from structlog.testing import capture_logs

from agent.events.hooks import HookRunner, on_change_hooks
from agent.models import EventType
from agent.state.journal import NewEvent
from agent.state.store import Store

RECORD = """
import json, os, sys, time
payload = json.load(sys.stdin)
start = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"start": start, "end": time.time(), "payload": payload}) + "\\n")
sys.exit(int(sys.argv[3]))
"""


def command(tmp_path: Path, sleep: float = 0.0, code: int = 0) -> tuple[str, ...]:
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    return (sys.executable, str(script), str(tmp_path / "runs.jsonl"), str(sleep), str(code))


def runs(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def change(source: str, kind: EventType = EventType.ADDED) -> NewEvent:
    return NewEvent(kind, source, "d1", "v1", f"{source}/a.pdf", 3, "ab" * 32)


async def test_a_pass_that_changed_the_mirror_runs_its_command_with_its_events(
    store: Store, tmp_path: Path
) -> None:
    cmd = command(tmp_path)
    async with on_change_hooks(store.journal, lambda source: cmd, 10.0):
        await store.journal.record([change("hr"), change("it")])
        await store.journal.record([NewEvent(EventType.PASS_COMPLETED, "hr", data={"ok": True})])
    (run,) = runs(tmp_path)
    events = run["payload"]["events"]  # type: ignore[index]
    assert [(e["type"], e["source"]) for e in events] == [
        ("document.added", "hr"),
        ("source.pass_completed", "hr"),
    ]
    assert events[0]["path"] == "hr/a.pdf"


async def test_a_pass_without_changes_or_a_source_without_a_command_runs_nothing(
    store: Store, tmp_path: Path
) -> None:
    cmd = command(tmp_path)
    commands = {"hr": cmd, "it": ()}
    async with on_change_hooks(store.journal, commands.__getitem__, 10.0):
        await store.journal.record(
            [change("hr", EventType.FAILED), NewEvent(EventType.PASS_COMPLETED, "hr")]
        )
        await store.journal.record([change("it"), NewEvent(EventType.PASS_COMPLETED, "it")])
    assert runs(tmp_path) == []


async def test_never_twice_at_once_and_what_waited_goes_in_one_run(
    store: Store, tmp_path: Path
) -> None:
    runner = HookRunner(command(tmp_path, sleep=0.5), 10.0)
    batches = [await store.journal.record([change(s)]) for s in ("a", "b", "c")]
    runner.submit(batches[0])
    await asyncio.sleep(0.2)  # the first run is going on
    runner.submit(batches[1])
    runner.submit(batches[2])
    await runner.wait()
    first, second = runs(tmp_path)
    assert first["end"] <= second["start"]  # type: ignore[operator]
    sources = [e["source"] for e in second["payload"]["events"]]  # type: ignore[index]
    assert sources == ["b", "c"]
    assert runner.runs == 2


async def test_its_exit_code_is_logged(store: Store, tmp_path: Path) -> None:
    runner = HookRunner(command(tmp_path, code=3), 10.0)
    with capture_logs() as logs:
        assert await runner.run(await store.journal.record([change("a")])) == 3
    (failed,) = [e for e in logs if e["event"] == "hook.failed"]
    assert failed["exit_code"] == 3


async def test_a_command_past_its_timeout_is_stopped_with_its_children(
    store: Store, tmp_path: Path
) -> None:
    marker = tmp_path / "child-survived"
    script = (
        "import subprocess, time; "
        f"subprocess.Popen(['sh', '-c', 'sleep 2; touch {marker}']); time.sleep(30)"
    )
    runner = HookRunner((sys.executable, "-c", script), 0.5)
    with capture_logs() as logs:
        assert await runner.run(await store.journal.record([change("a")])) is None
    assert any(e["event"] == "hook.timed_out" for e in logs)
    await asyncio.sleep(2.5)
    assert not marker.exists()


async def test_a_command_that_cannot_start_is_logged(store: Store, tmp_path: Path) -> None:
    runner = HookRunner((str(tmp_path / "missing"),), 1.0)
    with capture_logs() as logs:
        assert await runner.run(await store.journal.record([change("a")])) is None
    assert [e["event"] for e in logs] == ["hook.not_started"]


async def test_stopping_gives_a_running_command_its_grace_then_stops_it(
    store: Store, tmp_path: Path
) -> None:
    runner = HookRunner(command(tmp_path, sleep=30), 60.0)
    runner.submit(await store.journal.record([change("a")]))
    await asyncio.sleep(0.3)
    with capture_logs() as logs:
        await asyncio.wait_for(runner.stop(0.2), 10)
    assert [e["event"] for e in logs] == ["hook.stopped"]
    assert runs(tmp_path) == []  # it never got to record its run
