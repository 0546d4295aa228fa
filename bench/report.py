"""The machine description and the Markdown written to `RESULTS.md`."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.data import describe, human_size
from bench.settings import Settings
from bench.tools import which

REPO = Path(__file__).resolve().parents[1]
PEERS = ("nginx", "rclone", "aria2c", "curl")


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
        "agent_commit": _git("log", "-1", "--format=%h", "--", "agent"),  # the agent's code
        "agent_dirty": bool(_git("status", "--porcelain", "agent")),
        "versions": {tool: _version(tool) for tool in PEERS},
        "load_before": loadavg(),
        "mode": "quick" if settings.quick else "full",
        "rounds": settings.rounds,
        "concurrency": settings.concurrency,
    }


def _git(*args: str) -> str:
    argv = ["git", "-C", str(REPO), *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


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


# ---------------------------------------------------------------- RESULTS.md


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [*_header(m), *_faults(results["faults"]), *_targets(results)]
    lines += ["![sync-agent against its peers](results.svg)", ""]
    for key, block in results["transfers"].items():
        lines += _section(block, _transfer_table, key)
    lines += _section(results["repoll"], _repoll)
    lines += _section(results["first_file"], _first)
    lines += _section(results["resume"], _resume)
    lines += _section(results["replicas"], _replicas)
    lines += _commands(results)
    return "\n".join(lines) + "\n"


def _section(block: dict[str, Any], write: Callable[..., list[str]], *args: Any) -> list[str]:
    """A measure's section, or one line saying why it has no numbers."""
    if "skipped" in block:
        name = args[0] if args else write.__name__.strip("_").replace("_", " ")
        return [f"## {name}: {block['skipped']}", ""]
    if "error" in block:
        name = args[0] if args else write.__name__.strip("_").replace("_", " ")
        return [f"## {name}: no numbers", "", f"**The measure failed**: {block['error']}", ""]
    return write(*args, block) if args else write(block)


def _faults(faults: list[str]) -> list[str]:
    if not faults:
        return []
    lines = ["## Faults the benchmark found", ""]
    lines += [f"- **{fault}**" for fault in faults]
    return [*lines, ""]


def _header(m: dict[str, Any]) -> list[str]:
    dirty = " plus uncommitted changes under agent/" if m["agent_dirty"] else ""
    quick = " --quick" if m["mode"] == "quick" else ""
    return [
        "# sync-agent benchmark results",
        "",
        f"Run {m['date']} in {m['mode']} mode, {m['elapsed_s']} s "
        f"({m['elapsed_s'] / 60:.1f} min) in all; every figure is the median of "
        f"{m['rounds']} round(s); concurrency {m['concurrency']} for the agent, rclone and "
        "aria2c.",
        f"Agent: the code of commit {m['agent_commit']} (the last one under agent/){dirty}.",
        f"Machine: {m['cpus']} x {m['cpu']}, {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}. Load average (1/5/15 min) before {m['load_before']}, after "
        f"{m['load_after']}; 1-minute load as each measure started: {_loads(m)} (the machine "
        "is shared with other engineers' test runs).",
        "Tools: " + "; ".join(f"{k}: {v}" for k, v in m["versions"].items()) + ".",
        "",
        *_busy(m),
        f"Command: `python -m bench run{quick}` (how it works: [README.md](README.md)).",
        "",
        "One nginx on 127.0.0.1 serves the files and the Standard-Metrics-shaped API (static",
        "listing pages, a fixed token, `return 302` to the file), so the server costs no Python",
        "CPU; the agent runs its whole flow against it while the peers fetch the same files.",
        "The data sets sit in the page cache, so every tool reads from memory. Profiles of the",
        "agent (from the earlier set-up with a Python API server): [PROFILE.md](PROFILE.md).",
        "",
    ]


def _busy(m: dict[str, Any]) -> list[str]:
    """A warning when other work competed for the cores during the run."""
    peak = max([*m["load_during"].values(), m["load_before"][0], m["load_after"][0]])
    if peak <= m["cpus"]:
        return []
    return [
        f"**The machine was busy**: the 1-minute load reached {peak} on {m['cpus']} cores, so",
        "every tool got a share of the cores and the disk. Absolute times are inflated and vary",
        "from round to round; the ratios compare tools run side by side, alternating, but carry",
        "that noise too. Rerun on a quiet machine before reading small differences.",
        "",
    ]


def _loads(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in m["load_during"].items())


def _targets(results: dict[str, Any]) -> list[str]:
    scale = {  # target -> the block whose document count it names
        "repoll_time": ("repoll", "{:,}"),
        "first_file": ("first_file", "{:,}-document listing"),
    }
    verdict = {True: "met", False: "**missed**", None: "n/a (quick)"}
    lines = [
        "## Targets (issue #14)",
        "",
        "| measure | target | sync-agent | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        block, form = scale.get(t["key"], ("", ""))
        count = results.get(block, {}).get("documents")
        name = t["measure"] + (f" ({form.format(count)})" if count else "")
        value = "-" if t["value"] is None and t["met"] is None else "**failed**"
        value = value if t["value"] is None else f"{t['value']} {t['unit']}"
        limit = f"<= {t['limit']:g} {t['unit']}"
        lines.append(f"| {name} | {limit} | {value} | {verdict[t['met']]} |")
    rep = results["replicas"]
    if "error" not in rep and "skipped" not in rep:
        lines.append(
            f"| throughput with 1, 2, 3 replicas, API {rep['latency_s'] * 1000:g} ms late "
            f"| none yet | {_replica_cells(rep)} | - |"
        )
    return [*lines, ""]


def _replica_cells(rep: dict[str, Any]) -> str:
    cells = []
    for n, row in rep["replicas"].items():
        ratio = f" (x{row['ratio']})" if "ratio" in row else ""
        cells.append(f"{n}: {row['docs_per_s']} docs/s{ratio}" if row["measured"] else f"{n}: -")
    return "; ".join(cells)


def _transfer_table(key: str, block: dict[str, Any]) -> list[str]:
    peer = block["peer"]
    lines = [
        f"## {key}: {describe(block['groups'])} ({human_size(block['bytes'])}), "
        "from an empty mirror",
        "",
        f"| tool | median s | x {peer} | runs s | MiB/s | peak RSS MiB | CPU s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    base = block["tools"][peer]["median_s"]
    for tool, row in block["tools"].items():
        runs = ", ".join(f"{x:.2f}" for x in row["seconds"])
        lines.append(
            f"| {tool} | {row['median_s']:.2f} | {row['median_s'] / base:.2f} | {runs} "
            f"| {row['mib_per_s']} | {row['peak_rss_mib']} | {row['cpu_s']} |"
        )
    return [*lines, "", *_fault_lines(block.get("faults", ()))]


def _fault_lines(faults: Iterable[str]) -> list[str]:
    return [f"**Fault**, {fault} (the time still counts).\n" for fault in faults]


def _repoll(r: dict[str, Any]) -> list[str]:
    runs = ", ".join(f"{x:.2f}" for x in r["seconds"])
    return [
        f"## Re-poll: {r['documents']:,} unchanged documents",
        "",
        "| median s | runs s | peak RSS MiB | CPU s |",
        "|---:|---|---:|---:|",
        f"| {r['median_s']:.2f} | {runs} | {r['peak_rss_mib']} | {r['cpu_s']} |",
        "",
        "The mirror and its state were seeded directly (`bench/seed.py`: one file and one",
        "`documents` row per document, as a finished pass leaves them); every round starts",
        "from a fresh copy of that state database.",
        f"Agent's summary of the last round: `{r['summary']}`. Rows with `updated_at` after",
        f"it started: {r['rows_updated_since_start']}; `documents` table byte-for-byte as "
        f"seeded: {'yes' if r['documents_table_unchanged'] else '**no**'}.",
        "",
    ]


def _first(r: dict[str, Any]) -> list[str]:
    runs = ", ".join(f"{x:.2f}" for x in r["seconds"])
    lines = [
        f"## First file in place: {r['documents']:,}-document listing, empty mirror",
        "",
        "Seconds from starting `sync-agent sync` (process start-up included) to the first file",
        f"in the mirror's source folder (polled every 5 ms): median {r['median_s']:.2f} s "
        f"(runs {runs}).",
    ]
    if "pass_median_s" in r:
        in_pass = ", ".join(f"{x:.2f}" for x in r["pass_seconds"])
        lines += [
            f"From the pass's start (its `pass.started` event, what the target counts): median "
            f"{r['pass_median_s']:.2f} s (runs {in_pass}); the rest is the process's start-up "
            "(the interpreter, imports, the state database).",
        ]
    return [*lines, ""]


def _resume(r: dict[str, Any]) -> list[str]:
    return [
        f"## Resume waste: SIGKILL halfway through a {human_size(r['file_bytes'])} file",
        "",
        f"On disk at the kill: {r['bytes_on_disk_at_kill']:,} bytes. nginx sent "
        f"{r['storage_bytes_sent']:,} bytes of the file over {r['storage_requests']} "
        f"requests: waste ratio {r['waste_ratio']} (bytes sent / file size). "
        f"Resumed pass: {r['resumed_pass_s']} s.",
        "",
    ]


def _replicas(r: dict[str, Any]) -> list[str]:
    shared = r.get("state") == "postgresql"
    how = (
        "N `sync-agent run` replicas at once, one PostgreSQL state; the time runs until every "
        "document is in the mirror."
        if shared
        else "One `sync-agent sync` on SQLite (no PostgreSQL binaries: 2 and 3 not measured)."
    )
    lines = [
        f"## Throughput with replicas, API {r['latency_s'] * 1000:g} ms late",
        "",
        f"{r['documents']:,} documents of 4 KiB from an empty mirror; nginx answers the token,",
        "listing and download API requests late (`echo_sleep`), the storage GETs at once.",
        how,
        "",
        "| replicas | median s | documents/s | x one replica | peak RSS MiB (largest) |",
        "|---:|---:|---:|---:|---:|",
    ]
    faults: list[str] = []
    for n, row in r["replicas"].items():
        if row["measured"]:
            lines.append(
                f"| {n} | {row['median_s']:.2f} | {row['docs_per_s']} | {row.get('ratio', '-')} "
                f"| {row['peak_rss_mib']} |"
            )
            faults += [f"{n} replica(s), {fault}" for fault in row.get("faults", ())]
        else:
            lines.append(f"| {n} | not measured: {row['why']} | | | |")
    return [*lines, "", *_fault_lines(faults)]


def _commands(results: dict[str, Any]) -> list[str]:
    lines = ["## Exact commands", ""]
    for key, block in results["transfers"].items():
        for tool, row in block.get("tools", {}).items():
            lines.append(f"- {key} / {tool}: `{row['command']}`")
    named = {"repoll": "re-poll", "first_file": "first file", "resume": "resume (twice)"}
    for key, name in named.items():
        if "command" in results[key]:
            lines.append(f"- {name}: `{results[key]['command']}`")
    for n, row in results["replicas"].get("replicas", {}).items():
        if "command" in row:
            lines.append(f"- {n} replica(s), slow API: `{row['command']}`")
    return lines
