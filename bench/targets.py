"""The targets of issue #14 and whether a run met them (pure functions over the results)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, Any]
MB = 1_000_000


@dataclass(frozen=True)
class Target:
    """One measure, its limit (lower is better) and where a run's value is found."""

    key: str
    measure: str
    limit: float
    unit: str  # how value and limit read: "x rclone", "s", "MB", ...
    value: Callable[[Results], float | None]


def _ratio(key: str, peer: str) -> Callable[[Results], float | None]:
    return lambda r: r["transfers"][key]["ratios"][f"sync-agent/{peer}"]


def _rss_mb(block: Callable[[Results], dict[str, Any]]) -> Callable[[Results], float | None]:
    return lambda r: round(block(r)["peak_rss_mib"] * 2**20 / MB, 1)


TARGETS = (
    Target("bulk_time", "bulk wall time", 1.2, "x rclone", _ratio("bulk", "rclone")),
    Target(
        "bulk_rss",
        "bulk peak RSS",
        150,
        "MB",
        _rss_mb(lambda r: r["transfers"]["bulk"]["tools"]["sync-agent"]),
    ),
    Target("small_time", "small wall time", 1.0, "x rclone", _ratio("small", "rclone")),
    Target("big_time", "one 2 GiB file", 0.8, "x curl -o", _ratio("big", "curl")),
    Target(
        "repoll_time", "re-poll of unchanged documents", 30, "s", lambda r: r["repoll"]["median_s"]
    ),
    Target("repoll_rss", "re-poll peak RSS", 300, "MB", _rss_mb(lambda r: r["repoll"])),
    Target(
        "first_file",
        "first file in place after the pass starts, empty mirror",
        2,
        "s",
        lambda r: r["first_file"].get("pass_median_s"),
    ),
    Target(
        "resume_waste",
        "resume waste after SIGKILL",
        1.02,
        "x file size",
        lambda r: r["resume"]["waste_ratio"],
    ),
)


def evaluate(results: Results, *, quick: bool, partial: bool = False) -> list[dict[str, Any]]:
    """Each target with the run's value (None: the measure failed) and whether it was met.

    `met` is None in quick mode (tiny sets prove nothing), and in a partial run (`--only`)
    for a measure without a value (skipped; a failed one is among the run's faults).
    """
    rows = []
    for t in TARGETS:
        try:
            value = t.value(results)
        except KeyError:  # the measure failed: `{"error": ...}` in place of its numbers
            value = None
        judged = not quick and not (partial and value is None)
        met = (value is not None and value <= t.limit) if judged else None
        rows.append(
            {
                "key": t.key,
                "measure": t.measure,
                "limit": t.limit,
                "unit": t.unit,
                "value": value,
                "met": met,
            }
        )
    return rows
