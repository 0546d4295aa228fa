"""`python -m bench run [--quick] [--rounds N] [--out DIR]`: the whole benchmark, one command.

`python -m bench report [--out DIR]` writes RESULTS.md and results.svg again from results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import chart, data, listing, nginx, passes, report, subject, targets, tools, transfers
from bench.measure import MeasureError
from bench.settings import Settings

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="install peers, generate data, run every measure")
    go.add_argument("--quick", action="store_true", help="tiny data sets (the CI smoke mode)")
    go.add_argument("--rounds", type=int, default=None, help="rounds per measure (3; quick 1)")
    go.add_argument("--concurrency", type=int, default=16, help="parallel downloads per tool")
    go.add_argument("--out", type=Path, default=HERE, help="where the results go")
    go.add_argument("--data", type=Path, default=HERE / "data", help="data set cache")
    go.add_argument("--work", type=Path, default=HERE / "work", help="scratch folder")
    go.add_argument("--no-install", action="store_true", help="never call apt-get")
    go.add_argument(
        "--only",
        type=lambda v: frozenset(v.split(",")),
        default=None,
        help=f"comma-separated measures to run, of: {', '.join(MEASURES)} (all)",
    )
    redo = sub.add_parser("report", help="write RESULTS.md and results.svg from results.json")
    redo.add_argument("--out", type=Path, default=HERE, help="where results.json is")
    args = parser.parse_args(argv)
    if args.command == "report":
        write(json.loads((args.out / "results.json").read_text()), args.out)
        return 0
    if not args.no_install:
        tools.ensure_tools()
    elif tools.missing_tools():
        raise SystemExit(f"missing: {', '.join(tools.missing_tools())}")
    settings = Settings(
        quick=args.quick,
        rounds=max(1, args.rounds or (1 if args.quick else 3)),
        concurrency=args.concurrency,
        data_dir=args.data.absolute(),
        work_dir=args.work.absolute(),
        log=args.work.absolute() / "bench.log",
        only=args.only,
    )
    if args.only and not args.only <= set(MEASURES):
        parser.error(f"--only: unknown measure(s) {', '.join(sorted(args.only - set(MEASURES)))}")
    signal.signal(signal.SIGTERM, _interrupted)  # run the cleanups: nginx, killed children
    shutil.rmtree(settings.work_dir, ignore_errors=True)
    settings.work_dir.mkdir(parents=True)
    results = execute(settings)
    write(results, args.out)
    return 1 if any("error" in block for block in blocks(results).values()) else 0


PASSES = {  # the agent-only measures, by their key in the results
    "repoll": passes.bench_repoll,
    "first_file": passes.bench_first_file,
    "resume": passes.bench_resume,
    "replicas": passes.bench_replicas,
}

MEASURES = ("bulk", "small", "big", *PASSES)
SKIPPED = {"skipped": "not measured in this run (--only)"}


def execute(s: Settings) -> dict[str, Any]:
    meta = report.machine(s)
    started = time.monotonic()
    prepare(s)
    meta["prepare_s"] = round(time.monotonic() - started, 1)
    results: dict[str, Any] = {"machine": meta, "transfers": {}}
    load = meta["load_during"] = {}  # the 1-minute load as each measure starts
    with nginx.serve(s.data_dir, resume_rate=s.resume_rate) as server:
        for ts in transfers.transfer_sets(s):
            if not s.measures(ts.key):
                results["transfers"][ts.key] = SKIPPED
                continue
            load[ts.key] = _announce(f"{ts.key}: {', '.join(ts.tools)}, alternating")
            results["transfers"][ts.key] = _guarded(transfers.bench_transfer, s, ts, server)
        for key, measure in PASSES.items():
            if not s.measures(key):
                results[key] = SKIPPED
                continue
            load[key] = _announce(key)
            results[key] = _guarded(measure, s, server)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["load_after"] = report.loadavg()
    results["targets"] = targets.evaluate(results, quick=s.quick, partial=s.only is not None)
    results["faults"] = faults(results)
    return results


def _guarded(measure: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """The measure's results, or `{"error": why}` when it could not give a valid number."""
    try:
        return measure(*args)
    except MeasureError as exc:
        print(f"  FAILED: {exc}")
        return {"error": str(exc)}


def blocks(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every measure's results by key: the copied sets and the agent-only measures."""
    return {**results["transfers"], **{key: results[key] for key in PASSES}}


def faults(results: dict[str, Any]) -> list[str]:
    """Every failed measure and every agent pass that exited 0 with files missing."""
    found = []
    for key, block in blocks(results).items():
        if "skipped" in block:
            continue
        if "error" in block:
            found.append(f"{key}: the measure failed: {block['error']}")
        found += [f"{key}, {fault}" for fault in block.get("faults", ())]
    for n, row in results["replicas"].get("replicas", {}).items():
        found += [f"replicas ({n}), {fault}" for fault in row.get("faults", ())]
    return found


def _announce(what: str) -> float:
    load = report.loadavg()[0]
    print(f"{what} (load {load})")
    return load


def prepare(s: Settings) -> None:
    """Generate whatever the data cache lacks (the seeded re-poll state comes later), and
    byte-compile the agent."""
    subject.compile_agent()
    for spec in s.sets.files():
        data.ensure(s.data_dir, spec)
    for each in s.sets.listings():
        listing.ensure_pages(s.data_dir, each)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "RESULTS.md").write_text(report.markdown(results))
    m = results["machine"]
    title = f"sync-agent {m['agent_commit']} against its peers ({m['mode']} run, {m['date'][:10]})"
    (out / "results.svg").write_text(chart.svg(results, results["targets"], title))
    print(f"wrote RESULTS.md, results.json and results.svg to {out}")


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
