"""`python -m bench run [--quick] [--rounds N] [--out DIR]`: the whole benchmark, one command."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from pathlib import Path

from bench import data, report, run, tools

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="install peers, generate data, run every scenario")
    go.add_argument("--quick", action="store_true", help="tiny data sets (the CI smoke mode)")
    go.add_argument("--rounds", type=int, default=None, help="bulk rounds per tool (3; quick 1)")
    go.add_argument("--small-rounds", type=int, default=None, help="small rounds (2; quick 1)")
    go.add_argument("--concurrency", type=int, default=8, help="parallel downloads per tool")
    go.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md/results.json go")
    go.add_argument("--data", type=Path, default=HERE / "data", help="data set folder")
    go.add_argument("--work", type=Path, default=HERE / "work", help="scratch folder")
    go.add_argument("--no-install", action="store_true", help="never call apt-get")
    args = parser.parse_args(argv)
    if not args.no_install:
        tools.ensure_tools()
    elif tools.missing_tools():
        raise SystemExit(f"missing: {', '.join(tools.missing_tools())}")
    settings = run.Settings(
        quick=args.quick,
        rounds=args.rounds or (1 if args.quick else 3),
        small_rounds=args.small_rounds or (1 if args.quick else 2),
        concurrency=args.concurrency,
        data_dir=args.data.absolute(),
        work_dir=args.work.absolute(),
        log=args.work.absolute() / "bench.log",
    )
    signal.signal(signal.SIGTERM, _interrupted)  # run the cleanups: nginx, sandbox children
    shutil.rmtree(settings.work_dir, ignore_errors=True)
    settings.work_dir.mkdir(parents=True)
    results = execute(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(report.markdown(results))
    print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}")
    return 0


def execute(settings: run.Settings) -> dict[str, object]:
    meta = report.machine(settings)
    started = time.monotonic()
    results = run.Results()
    for spec in settings.specs.values():
        data.ensure(settings.data_dir, spec)
    rate = "8m" if settings.quick else "256m"
    with tools.nginx(settings.data_dir, resume_rate=rate) as nginx:
        for key in ("bulk", "small"):
            print(f"{key}: {', '.join(run.TOOLS)}, alternating")
            results.transfers[key] = run.bench_transfer(settings, key, nginx)
        print(f"re-poll over {settings.listing} documents")
        results.repoll = run.bench_repoll(settings, nginx)
        print("resume after SIGKILL")
        results.resume = run.bench_resume(settings, nginx)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["load_after"] = report.loadavg()
    return {"machine": meta, **run.as_dict(results)}


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
