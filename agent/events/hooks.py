"""The local `on_change` command: run after each pass that changed the mirror.

`Hooks` follows the entries this process journals. It gathers each source's entries until
the source's `source.pass_completed`, and when one of them changed the mirror (added,
updated, moved, removed, a local copy kept) it hands them to the source's command, which
reads them as JSON on stdin: `{"events": [...]}`, each in the form of `GET /events`.

A command never runs twice at once: what arrives while it runs waits, and the batches of
every pass finished meanwhile go together in its next run. A run is stopped (its whole
process group: SIGTERM, then SIGKILL) after `on_change_timeout`, or when the daemon stops
and it has not ended within a short grace; its exit code and the tail of its output are
logged. `sync` waits for the runs its passes started. Nothing is retried: the journal, not
the hook, is the durable record (a hook that failed can replay it with `events --since`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from agent.events.shape import event_json
from agent.log import get_logger
from agent.models import EventType
from agent.state.journal import Event, Journal

Command = tuple[str, ...]
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a command past its timeout
OUTPUT_TAIL = 2000  # characters of a command's output kept for the log


class HookRunner:
    """One command, run for batches of entries, never twice at once."""

    def __init__(self, command: Command, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.runs = 0
        self._pending: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self.log = get_logger(hook=command[0])

    def submit(self, events: Sequence[Event]) -> None:
        self._pending.extend(events)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"hook:{self.command[0]}")

    async def wait(self) -> None:
        """Until the runs asked for so far are over (each bounded by the timeout)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self, within: float) -> None:
        """Let a run end for `within` seconds, then stop it; what waited is dropped."""
        task, self._pending = self._task, []
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.log.warning("hook.stopped", reason="the agent is stopping")

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await self.run(batch)

    async def run(self, batch: Sequence[Event]) -> int | None:
        """Run the command with `batch` on stdin; its exit code (None: not started/stopped)."""
        self.runs += 1
        payload = json.dumps({"events": [event_json(e) for e in batch]}).encode()
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        except OSError as exc:
            self.log.error("hook.not_started", error=exc.strerror or str(exc))
            return None
        try:
            output, _ = await asyncio.wait_for(process.communicate(payload), self.timeout)
        except TimeoutError:
            await _stop(process)
            self.log.error("hook.timed_out", timeout=self.timeout, events=len(batch))
            return None
        except asyncio.CancelledError:
            await _stop(process)
            raise
        code = process.returncode
        seconds = round(time.monotonic() - started, 3)
        tail = output.decode(errors="replace")[-OUTPUT_TAIL:].strip()
        if code == 0:
            self.log.info("hook.finished", exit_code=0, events=len(batch), seconds=seconds)
        else:
            self.log.warning(
                "hook.failed", exit_code=code, events=len(batch), seconds=seconds, output=tail
            )
        return code


async def _stop(process: asyncio.subprocess.Process) -> None:
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
            break


class Hooks:
    """Routes each pass's entries to its source's command."""

    def __init__(self, command_for: Callable[[str], Command], timeout: float) -> None:
        self.command_for = command_for  # read at each pass: a reload may change it
        self.timeout = timeout
        self.runners: dict[Command, HookRunner] = {}
        self._gathered: dict[str, list[Event]] = {}

    def __call__(self, events: Sequence[Event]) -> None:
        for event in events:
            self._gathered.setdefault(event.source, []).append(event)
            if event.type == EventType.PASS_COMPLETED:
                self._pass_done(event.source)

    def _pass_done(self, source: str) -> None:
        batch = self._gathered.pop(source, [])
        command = self.command_for(source)
        if command and any(e.changes_mirror for e in batch):
            runner = self.runners.get(command)
            if runner is None:
                runner = self.runners[command] = HookRunner(command, self.timeout)
            runner.submit(batch)

    async def wait(self) -> None:
        for runner in list(self.runners.values()):
            await runner.wait()

    async def stop(self, within: float) -> None:
        """Give running commands `within` seconds, then stop them (the daemon is stopping)."""
        await asyncio.gather(*(runner.stop(within) for runner in self.runners.values()))


@asynccontextmanager
async def on_change_hooks(
    journal: Journal, command_for: Callable[[str], Command], seconds: float
) -> AsyncIterator[Hooks]:
    """Follow the journal for the life of the context; on exit, let running commands end.

    A command running longer than `seconds` is stopped."""
    hooks = Hooks(command_for, seconds)
    unsubscribe = journal.subscribe(hooks)
    try:
        yield hooks
    finally:
        unsubscribe()
        await hooks.wait()
