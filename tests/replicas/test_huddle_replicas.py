"""Two Huddle replicas (real `run` processes on one PostgreSQL) renewing short-lived tokens
for a minute: the token server never sees a refresh token twice, and every document lands
in the shared mirror once."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.huddle import RICH, HuddleSandbox
from agent.sandbox.storage import StorageHost
from tests.daemon.test_daemon import Running, daemon, free_port, until
from tests.e2e.cli import write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN_FOR = 60.0  # seconds both replicas run
EARLY = 120.0  # Huddle's renewal ahead of expiry (agent.sources.huddle_auth.EARLY_REFRESH)
FRESH_FOR = 4  # seconds a token counts as fresh: it is renewed about this often
DOCS = 3


def config(tmp: Path, index: int, sandbox: HuddleSandbox, ws: str, state_url: str) -> Path:
    agent = {
        "mirror_dir": str(tmp / "mirror"),
        "state_dir": str(tmp / "state"),  # one folder: one token key
        "state_url": state_url,
        "log_format": "json",
        "listen": f"127.0.0.1:{free_port()}",
        "shutdown_timeout": "10s",
    }
    source = {
        "name": "hd",
        "type": "huddle",
        "base_url": sandbox.base_url,
        "token_url": sandbox.token_url,
        "client_id": "demo-client",
        "refresh_token": "demo-refresh-0",
        "workspaces": [ws],
        "poll_interval": "1s",
    }
    return write_config(tmp / f"replica-{index}.toml", agent, [source])


async def keep_changing(sandbox: HuddleSandbox, doc_ids: list[str], until_: float) -> int:
    """A new version of one document every two seconds, so both replicas have downloads."""
    versions = 0
    while time.monotonic() < until_:
        await asyncio.sleep(2.0)
        sandbox.update_document(doc_ids[versions % len(doc_ids)], f"v{versions}".encode() * 99)
        versions += 1
    return versions


def mirrored(mirror: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(mirror)): p.read_bytes()
        for p in mirror.rglob("*")
        if p.is_file() and ".sync-agent" not in p.parts
    }


def digests(mirror: Path) -> set[str]:
    return {hashlib.sha256(data).hexdigest() for data in mirrored(mirror).values()}


def failures(run: Running) -> list[dict[str, Any]]:
    return run.events("pass.failed") + run.events("pass.fatal")


async def test_two_replicas_renew_short_lived_tokens_without_reusing_one(
    tmp_path: Path, pg_migrated_url: str
) -> None:
    storage = StorageHost()
    sandbox = HuddleSandbox(
        storage, **{**RICH, "refresh_revokes_access": True}, token_lifetime=int(EARLY) + FRESH_FOR
    )
    ws = sandbox.add_workspace("Projects")
    root = sandbox.root_folder_id(ws)
    doc_ids = [
        sandbox.add_document(root, f"doc-{i}.txt", f"doc {i}\n".encode()) for i in range(DOCS)
    ]
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(storage.running())
        await stack.enter_async_context(sandbox.running())
        runs = [
            await stack.enter_async_context(
                daemon(config(tmp_path, i, sandbox, ws, pg_migrated_url))
            )
            for i in range(2)
        ]
        await until(lambda: all(r.events("pass.done") for r in runs), 60, "both replicas' passes")
        versions = await keep_changing(sandbox, doc_ids, time.monotonic() + RUN_FOR)
        want = {hashlib.sha256(sandbox.document(d).data).hexdigest() for d in doc_ids}
        await until(lambda: digests(tmp_path / "mirror") == want, 30, "the last versions")
        for run in runs:
            run.signal(signal.SIGTERM)
        codes = [await run.wait(60) for run in runs]

    assert sandbox.reused_refresh_tokens == []
    assert codes == [0, 0]
    assert [failures(run) for run in runs] == [[], []]
    # renewed all along: about once per FRESH_FOR seconds, not once in the whole run
    assert len(sandbox.issued_refresh_tokens) > RUN_FOR / FRESH_FOR / 3
    assert len(mirrored(tmp_path / "mirror")) == DOCS
    assert digests(tmp_path / "mirror") == want
    assert versions > 0
