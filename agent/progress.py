"""What a person sees on a terminal: live transfer progress and the status table (rich)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from agent.engine.sync import Progress as ProgressCallback


class _Live:
    """Adapts engine progress events to a rich progress display: the overall bar, and a row
    per file in flight.

    A finished file's row is hidden and given to the next file (one pool for files of known
    size, one for the others, whose bars pulse): rich's `add_task` renders the whole display
    at once on the caller's thread, the event loop, which cost ~2 ms per file, as much as
    the rest of a small document's download. Updates render only on rich's refresh thread.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.overall = progress.add_task("all files", total=0)
        self.total = 0
        self.files: dict[str, tuple[TaskID, bool]] = {}  # rel_path: its row, sized or not
        self.idle: dict[bool, list[TaskID]] = {True: [], False: []}  # hidden rows, by sized

    def __call__(self, event: str, rel_path: str, done: int, total: int | None) -> None:
        if event == "start":
            self.total += total or 0
            self.progress.update(self.overall, total=self.total)
            self.files[rel_path] = (self._row(rel_path[-48:], total), total is not None)
            return
        row = self.files.pop(rel_path, None)
        if row is not None:
            self.progress.update(row[0], visible=False)
            self.idle[row[1]].append(row[0])
        if event == "done":
            self.progress.advance(self.overall, done)

    def _row(self, description: str, total: int | None) -> TaskID:
        idle = self.idle[total is not None]
        if not idle:
            return self.progress.add_task(description, total=total)
        task = idle.pop()
        self.progress.update(task, description=description, total=total, completed=0, visible=True)
        return task


@contextmanager
def terminal_progress(stream: TextIO) -> Iterator[ProgressCallback | None]:
    """Live progress on a terminal (overall and per file, with rates and ETA); None elsewhere."""
    if not stream.isatty():
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=True,
    )
    with progress:
        yield _Live(progress)


class _VerifyBar:
    """Adapts the verify walk's counts to a rich progress bar (safe from its thread)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("verifying", total=0)

    def expect(self, files: int) -> None:
        self.progress.update(self.task, total=(self.progress.tasks[0].total or 0) + files)

    def advance(self, files: int) -> None:
        self.progress.advance(self.task, files)


@contextmanager
def verify_progress(stream: TextIO) -> Iterator[_VerifyBar | None]:
    """A bar of files checked on a terminal; None elsewhere."""
    if not stream.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(file=stream), transient=True) as progress:
        yield _VerifyBar(progress)


def print_status(report: Mapping[str, Any], console: Console | None = None) -> None:
    """The readable form of `sync-agent status`: the sources, then the replicas."""
    console = console or Console()
    _print_sources(report["sources"], console)
    _print_replicas(report["replicas"], console)


def _print_replicas(replicas: Sequence[Mapping[str, Any]], console: Console) -> None:
    if not replicas:
        console.print("no replica running (no `sync-agent run` or `sync` has registered)")
        return
    console.print(f"{len(replicas)} replica(s):")
    for r in replicas:
        lists = ", ".join(r["passes"]) or "no source"
        console.print(
            f"  {r['id']} ({r['state']}) on {r['host']}, pid {r['pid']}, started "
            f"{r['started']}, last heartbeat {r['last_heartbeat']}; lists {lists}; "
            f"holds {r['jobs']} download job(s)",
            highlight=False,
        )


def _print_sources(sources: Sequence[Mapping[str, Any]], console: Console) -> None:
    table = Table(title="sync-agent status")
    for column in (
        "source",
        "type",
        "known",
        "mirrored",
        "failed",
        "skipped",
        "removed",
        "deleted here",
        "last pass",
        "last error",
    ):
        table.add_column(column)
    for s in sources:
        table.add_row(
            s["name"],
            s["type"],
            str(s["documents"]),
            str(s["mirrored"]),
            str(s["failed"]),
            str(s["skipped"]),
            str(s["removed"]),
            str(s.get("deleted_locally", 0)),
            _last_pass(s),
            s.get("last_error") or "",
        )
    console.print(table)
    for s in sources:
        if s.get("last_warning"):
            console.print(f"  {s['name']}: warning: {s['last_warning']}", highlight=False)
        for job in s["jobs"]:
            console.print(
                f"  {s['name']}: {job['state']} {job['path']} ({job['bytes_done']} bytes"
                f"{', ' + str(job['last_error']) if job['last_error'] else ''}"
                f"{', next try ' + job['next_retry_at'] if job['next_retry_at'] else ''})"
            )
        for doc in s["skipped_documents"]:
            url = f" {doc['url']}" if doc.get("url") else ""
            console.print(f"  {s['name']}: skipped {doc['name']}: {doc['reason']}{url}")


def _last_pass(s: Mapping[str, Any]) -> str:
    if not s.get("last_pass_finished"):
        return "never"
    return f"{s['last_pass_finished']} ({'ok' if s.get('last_pass_ok') else 'failed'})"
