"""`results.svg`: every set at a glance, as bars of time relative to the peer (a small SVG writer).

Bars grow from the 1 x line on a log scale: left of it is faster than the peer (or under
the target), right of it slower (or over). The agent's bar is green when it meets its
target, red when it misses, blue when there is none; the peers are grey, and a black tick
marks the agent's target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

from bench.data import describe

WIDTH, LABEL_W, VALUE_W = 900, 250, 170
ROW, GAP, TOP = 20, 30, 70
GREEN, RED, BLUE, GREY = "#2e7d32", "#c62828", "#1565c0", "#9e9e9e"


@dataclass(frozen=True)
class Bar:
    label: str
    ratio: float
    colour: str
    target: float | None = None  # where the agent's target tick goes (same scale)
    note: str = ""  # shown after the ratio, e.g. the absolute value


@dataclass(frozen=True)
class Group:
    title: str
    bars: tuple[Bar, ...]


def groups(results: dict[str, Any], targets: list[dict[str, Any]]) -> list[Group]:
    """The chart's groups: one per copied set (relative to its peer), one for the targets."""
    by_key = {t["key"]: t for t in targets}
    limits = {"bulk": "bulk_time", "small": "small_time", "big": "big_time"}
    out = []
    for key, block in results["transfers"].items():
        if "error" in block or "skipped" in block:
            continue
        peer = block["tools"][block["peer"]]["median_s"]
        bars = []
        for tool, row in block["tools"].items():
            target = by_key[limits[key]] if tool == "sync-agent" else None
            colour = _colour(target) if tool == "sync-agent" else GREY
            note = f"{row['median_s']:.2f} s"
            bars.append(Bar(tool, row["median_s"] / peer, colour, target and target["limit"], note))
        title = f"{key}: {describe(block['groups'])}, wall time / {block['peer']}"
        out.append(Group(title, tuple(bars)))
    absolute = [t for t in targets if not t["unit"].startswith("x ")]
    absolute.append(by_key["resume_waste"])
    bars = [
        Bar(t["measure"], t["value"] / t["limit"], _colour(t), 1.0, _against(t))
        for t in absolute
        if t["value"] is not None
    ]
    out.append(Group("sync-agent against the absolute targets: value / target", tuple(bars)))
    return out


def _against(target: dict[str, Any]) -> str:
    unit = "" if target["unit"].startswith("x ") else f" {target['unit']}"
    return f"{target['value']:g} / {target['limit']:g}{unit}"


def _colour(target: dict[str, Any] | None) -> str:
    if target is None or target["met"] is None:
        return BLUE
    return GREEN if target["met"] else RED


def svg(results: dict[str, Any], targets: list[dict[str, Any]], title: str) -> str:
    """The whole chart as an SVG document."""
    gs = groups(results, targets)
    values = [b.ratio for g in gs for b in g.bars] + [b.target or 1 for g in gs for b in g.bars]
    # every measure failed: an empty chart (RESULTS.md says why), not a crash
    span = max(3, math.ceil(max((abs(math.log2(max(v, 1e-3))) for v in values), default=0)))
    plot_w = WIDTH - LABEL_W - VALUE_W
    centre = LABEL_W + plot_w / 2

    def x(v: float) -> float:
        return centre + max(-span, min(span, math.log2(max(v, 1e-3)))) / span * plot_w / 2

    height = TOP + sum(GAP + ROW * len(g.bars) for g in gs) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
        '<text x="10" y="38" fill="#555">lower is better, log scale; 1 x = the peer (or the '
        "target); black tick: the agent's target</text>",
        f'<text x="10" y="54" fill="#555">sync-agent: <tspan fill="{GREEN}">met</tspan>, '
        f'<tspan fill="{RED}">missed</tspan>, <tspan fill="{BLUE}">no verdict</tspan>; '
        f'<tspan fill="{GREY}">peers</tspan></text>',
    ]
    out += _axis(x, span, TOP, height - 14)
    y = TOP
    for g in gs:
        y += GAP
        out.append(f'<text x="10" y="{y - 8}" font-weight="bold">{escape(g.title)}</text>')
        for bar in g.bars:
            out += _bar(bar, x, y)
            y += ROW
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _axis(x: Any, span: int, top: float, bottom: float) -> list[str]:
    lines = []
    for power in range(-span, span + 1):
        v = 2.0**power
        px = x(v)
        weight = 'stroke="#333"' if power == 0 else 'stroke="#ddd"'
        lines.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom - 10}" {weight}/>')
        label = f"{v:g} x" if v >= 1 else f"1/{int(1 / v)}"
        lines.append(
            f'<text x="{px:.1f}" y="{bottom}" text-anchor="middle" fill="#555">{label}</text>'
        )
    return lines


def _bar(bar: Bar, x: Any, y: float) -> list[str]:
    left, right = sorted((x(1.0), x(bar.ratio)))
    width = max(right - left, 1.5)
    parts = [
        f'<text x="{LABEL_W - 8}" y="{y + 13}" text-anchor="end">{escape(bar.label)}</text>',
        f'<rect x="{left:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}" '
        f'fill="{bar.colour}"/>',
        f'<text x="{WIDTH - VALUE_W + 6}" y="{y + 13}">{bar.ratio:.2f} x '
        f'<tspan fill="#777">{escape(bar.note)}</tspan></text>',
    ]
    if bar.target is not None:
        tx = x(bar.target)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{y + 1}" x2="{tx:.1f}" y2="{y + ROW - 1}" '
            'stroke="black" stroke-width="2"/>'
        )
    return parts
