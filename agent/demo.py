"""`sync-agent demo`: mirror a local Standard Metrics sandbox, verify it, say what happened."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from agent.agent import Agent
from agent.config import parse_config
from agent.models import PassStats
from agent.sandbox.standard_metrics import StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.state.store import Store

DEMO_SOURCE = "demo"


async def run_demo(folder: Path, *, documents: int = 36) -> int:
    """Start the sandbox on loopback, run one pass into `folder`, check every byte."""
    storage = StorageHost()
    sandbox = StandardMetricsSandbox(storage)
    sandbox.populate_demo(n=documents, seed=0)
    with tempfile.TemporaryDirectory(prefix="sync-agent-demo-") as state_dir:
        async with storage.running(), sandbox.running() as base:
            config = parse_config(_demo_config(folder, Path(state_dir), base), env={})
            print(f"sandbox API on {base}/v1, storage host on {storage.base_url}")
            async with Agent.open(config) as agent:
                outcome = (await agent.sync_once([DEMO_SOURCE]))[DEMO_SOURCE]
                mismatches = await _verify(agent.store, sandbox, folder)
        auth_leaks = len(storage.authorization_seen)
    if not isinstance(outcome, PassStats):
        print(f"demo failed: {outcome}")
        return 1
    print(
        f"mirrored {outcome.downloaded} of {outcome.listed} documents ({outcome.bytes} bytes) "
        f"into {folder / DEMO_SOURCE}"
    )
    print(f"verified byte for byte: {outcome.listed - mismatches} ok, {mismatches} differ")
    print(f"requests to the storage host carrying Authorization: {auth_leaks}")
    return 0 if mismatches == 0 and auth_leaks == 0 and outcome.failed == 0 else 1


def _demo_config(folder: Path, state_dir: Path, base: str) -> dict[str, object]:
    return {
        "agent": {
            "mirror_dir": str(folder),
            "state_dir": str(state_dir),
            "log_format": "console",
            "log_level": "warning",
        },
        "sources": [
            {
                "name": DEMO_SOURCE,
                "type": "standard-metrics",
                "base_url": f"{base}/v1",
                "client_id": "demo-client",
                "client_secret": "demo-secret",
            }
        ],
    }


async def _verify(store: Store, sandbox: StandardMetricsSandbox, folder: Path) -> int:
    mismatches = 0
    for doc_id in sandbox.document_ids():
        row = await store.documents.get(DEMO_SOURCE, doc_id)
        path = folder / row.rel_path if row and row.rel_path else None
        want = hashlib.sha256(sandbox.content(doc_id)).hexdigest()
        if (
            path is None
            or not path.is_file()
            or hashlib.sha256(path.read_bytes()).hexdigest() != want
        ):
            mismatches += 1
            print(f"  MISMATCH {doc_id}: {path}")
    return mismatches
