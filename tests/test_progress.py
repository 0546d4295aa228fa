"""The terminal's live progress: a row per file in flight and the overall bar."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from agent.progress import _Live


def shown(progress: Progress) -> list[tuple[str, float | None]]:
    """The visible per-file rows: (name, total)."""
    return [(t.description, t.total) for t in progress.tasks[1:] if t.visible]


def test_each_file_in_flight_has_a_row_and_finished_rows_serve_the_next_files() -> None:
    progress = Progress(console=Console(file=io.StringIO()))
    live = _Live(progress)

    live("start", "a.pdf", 0, 10)
    live("start", "b.bin", 0, None)  # no size listed: its bar pulses
    assert shown(progress) == [("a.pdf", 10), ("b.bin", None)]
    live("done", "a.pdf", 10, 10)
    live("failed", "b.bin", 0, None)
    assert shown(progress) == []

    live("start", "c.pdf", 0, 30)
    live("start", "d.bin", 0, None)
    live("start", "e.pdf", 0, 5)
    assert shown(progress) == [("c.pdf", 30), ("d.bin", None), ("e.pdf", 5)]
    assert len(progress.tasks) == 1 + 3  # two rows served again, one new
    live("done", "c.pdf", 30, 30)

    overall = progress.tasks[0]
    assert (overall.total, overall.completed) == (10 + 30 + 5, 10 + 30)
