"""The machine description and the Markdown table written to `RESULTS.md`."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.tools import which

if TYPE_CHECKING:
    from bench.run import Settings

TARGETS = """\
Targets: bulk <= 0.8 x rclone; small <= 1.0 x rclone; re-poll of the listing <= 5 s and
<= 200 MB peak RSS; peak RSS during bulk <= 150 MB; resume waste <= 1.02."""


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(settings: Settings) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "versions": {tool: _version(tool) for tool in ("nginx", "rclone", "aria2c")},
        "load_before": loadavg(),
        "mode": "quick" if settings.quick else "full",
        "rounds": settings.rounds,
        "small_rounds": settings.small_rounds,
        "concurrency": settings.concurrency,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(tool: str) -> str:
    path = which(tool)
    if path is None:
        return "missing"
    flag = "-v" if tool == "nginx" else "--version"
    out = subprocess.run([path, flag], capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# sync-agent benchmark results",
        "",
        f"Run {m['date']} in {m['mode']} mode ({m['elapsed_s']} s), {m['rounds']} bulk round(s), "
        f"{m['small_rounds']} small round(s), concurrency {m['concurrency']}.",
        f"Machine: {m['cpus']} x {m['cpu']}, {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}.",
        f"Load average (1/5/15 min) before {m['load_before']}, after {m['load_after']} "
        "(the machine is shared with other engineers' test runs).",
        "Peers: " + "; ".join(f"{k}: {v}" for k, v in m["versions"].items()) + ".",
        "",
        "Command: `python -m bench run" + (" --quick" if m["mode"] == "quick" else "") + "`",
        "",
        TARGETS,
        "",
        "What stands in the way, profiled, with proposed agent changes: [PROFILE.md](PROFILE.md).",
        "The `cp+fsync` row is `cp -r` followed by an fsync of every file: the durable floor,",
        "since the agent fsyncs each file and its folder and the peers do not. Data sets sit in",
        "the page cache (23 GiB RAM), so every tool reads from memory.",
        "",
    ]
    for key, block in results["transfers"].items():
        lines += _transfer_table(key, block)
    lines += _repoll(results["repoll"]) + _resume(results["resume"])
    lines += ["## Exact commands", ""]
    for key, block in results["transfers"].items():
        for tool, row in block["tools"].items():
            lines.append(f"- {key} / {tool}: `{row['command']}`")
    lines.append(f"- re-poll: `{results['repoll']['command']}`")
    lines.append(f"- resume: `{results['resume']['command']}`")
    return "\n".join(lines) + "\n"


def _transfer_table(key: str, block: dict[str, Any]) -> list[str]:
    lines = [
        f"## {key}: {block['files']} files, {block['bytes'] / 2**20:.0f} MiB, from an empty mirror",
        "",
        "| tool | median s | runs s | MiB/s | peak RSS MiB |",
        "|---|---:|---|---:|---:|",
    ]
    for tool, row in block["tools"].items():
        runs = ", ".join(f"{x:.2f}" for x in row["seconds"])
        lines.append(
            f"| {tool} | {row['median_s']:.2f} | {runs} | {row['mib_per_s']} "
            f"| {row['peak_rss_mib']} |"
        )
    ratios = ", ".join(f"{k} = {v}" for k, v in block["ratios"].items())
    return [*lines, "", f"Ratios of medians: {ratios}.", ""]


def _repoll(r: dict[str, Any]) -> list[str]:
    return [
        f"## Re-poll: {r['documents']} unchanged documents",
        "",
        "| pass | wall s | peak RSS MiB |",
        "|---|---:|---:|",
        f"| first: {r['documents']} documents mirrored through the full flow "
        f"({r['first_pass_docs_per_s']}/s) | {r['first_pass_s']} | "
        f"{r['first_pass_peak_rss_mib']} |",
        f"| second, nothing changed: {r['documents']} documents | {r['second_pass_s']} | "
        f"{r['second_pass_peak_rss_mib']} |",
        "",
        f"Agent's summary of the second pass: `{r['second_pass_summary']}`.",
        f"Rows changed by the second pass (row-set diff of the SQLite state, per table): "
        f"{r['rows_changed']}; rows with `updated_at` after it started: "
        f"{r['rows_updated_at_after_start']}.",
        "",
    ]


def _resume(r: dict[str, Any]) -> list[str]:
    return [
        f"## Resume waste: SIGKILL halfway through a {r['file_bytes'] / 2**20:.0f} MiB file",
        "",
        f"On disk at the kill: {r['bytes_on_disk_at_kill']} bytes. nginx sent "
        f"{r['nginx_bytes_sent']} bytes over {r['nginx_requests']} requests: "
        f"waste ratio {r['waste_ratio']} (bytes sent / file size). "
        f"Resumed pass: {r['resumed_pass_s']} s.",
        "",
    ]
