"""`python -m bench.serve`: the Standard Metrics sandbox in its own process, redirecting to nginx.

Runs `--documents` listing-only documents whose downloads 302 to `--redirect/<name>`, with
no throttling, and prints the API root URL on its first stdout line once it is listening.
Running apart keeps the sandbox's CPU out of the agent's accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost


def build(documents: int, redirect: str) -> StandardMetricsSandbox:
    prefix = redirect.rstrip("/")
    sandbox = StandardMetricsSandbox(
        StorageHost(), redirect_to=lambda _doc_id, name: f"{prefix}/{name}", **RICH
    )
    sandbox.add_listing_only(documents)
    return sandbox


async def serve(documents: int, redirect: str) -> None:
    sandbox = build(documents, redirect)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sandbox.running() as base:
        print(f"{base}/v1", flush=True)
        while not stop.is_set():  # nobody reads the request log here: keep it small
            sandbox.log.clear()
            sandbox.request_times.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--documents", type=int, required=True)
    parser.add_argument("--redirect", required=True, help="URL prefix the downloads go to")
    args = parser.parse_args()
    asyncio.run(serve(args.documents, args.redirect))


if __name__ == "__main__":
    main()
