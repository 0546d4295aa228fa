"""Telling applications what changed, end to end through the real CLI against the sandboxes:
signed webhooks across a restart, the /events long poll, `get`, `events` and `on_change`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.sandbox.standard_metrics import RICH, StandardMetricsSandbox
from agent.sandbox.storage import StorageHost
from agent.state.journal import Event
from agent.state.store import Store
from tests.daemon.test_daemon import World as DaemonWorld
from tests.daemon.test_daemon import daemon, mirrored, until
from tests.e2e.cli import run_cli
from tests.e2e.test_huddle_cli import World, open_world
from tests.events.receiver import SECRET, Receiver

pytestmark = pytest.mark.e2e

Receivers = Callable[..., Awaitable[Receiver]]
DOCS = 6


@pytest.fixture
async def sm(tmp_path: Path) -> AsyncIterator[DaemonWorld]:
    storage = StorageHost()
    api = StandardMetricsSandbox(storage, **RICH)
    api.populate_demo(n=DOCS, seed=3)
    async with storage.running(), api.running() as base:
        yield DaemonWorld(tmp_path, storage, api, base)


@pytest.fixture
async def hd(tmp_path: Path) -> AsyncIterator[World]:
    async for world in open_world(tmp_path):
        yield world


async def journal(state_url: str, state_dir: Path) -> list[Event]:
    async with Store.open(state_url, state_dir) as store:
        return await store.journal.read(0, 1000)


def with_webhook(config: Path, receiver: Receiver, retries: str) -> Path:
    config.write_text(
        config.read_text()
        + f'\n[[webhooks]]\nname = "app"\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
        + f"retry_schedule = {retries}\n"
    )
    return config


# ---------------------------------------------------------------- webhooks


async def test_every_event_of_a_pass_arrives_once_in_order_across_failures_and_a_restart(
    sm: DaemonWorld, receivers: Receivers
) -> None:
    """500s first, then down while the daemon is stopped with SIGTERM and started again:
    each journal entry is accepted exactly once, in seq order, every signature verified."""
    receiver = await receivers(answers=[500, 500])
    config = with_webhook(sm.write("sm"), receiver, "[" + ", ".join(['"300ms"'] * 20) + "]")
    state = (f"sqlite+aiosqlite:///{sm.tmp / 'state' / 'state.db'}", sm.tmp / "state")
    async with daemon(config) as first:
        await until(lambda: mirrored(sm, "sm"), what="the first pass")
        await receiver.until_accepted(2)
        await receiver.stop()  # down: the next deliveries fail
        await until(lambda: first.events("webhook.attempt_failed"), what="a failure while down")
        first.signal(signal.SIGTERM)
        assert await first.wait(30) == 0
    assert 2 <= len(receiver.accepted) < len(await journal(*state))
    await receiver.start()
    async with daemon(config) as second:
        await until(lambda: second.events("pass.done"), what="the second pass")

        async def caught_up() -> bool:
            return len(receiver.accepted) >= len(await journal(*state))

        await until(caught_up, timeout=30, what="every entry delivered")
        await asyncio.sleep(1.0)  # nothing more (no duplicate) arrives
    entries = await journal(*state)
    assert receiver.problems == []
    assert receiver.ids() == [e.id for e in entries]
    assert receiver.seqs() == sorted(receiver.seqs())
    added = [e for e in receiver.accepted if e["type"] == "document.added"]
    assert len(added) == DOCS
    assert all(e["subject"].startswith("sm/") for e in added)
    assert [e["type"] for e in receiver.accepted].count("source.pass_completed") == 2


# ---------------------------------------------------------------- GET /events


async def test_a_long_poll_is_answered_within_a_second_of_a_new_version_landing(
    sm: DaemonWorld,
) -> None:
    async with daemon(sm.write("sm")), aiohttp.ClientSession() as http:
        await until(lambda: mirrored(sm, "sm"), what="the first pass")
        async with http.get(f"{sm.url}/events?since=0&limit=1000") as response:
            last = (await response.json())["last_seq"]
        waiting = asyncio.create_task(_get_json(http, f"{sm.url}/events?since={last}&timeout=60"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        doc_id = sm.api.document_ids()[0]
        sm.api.update_document(doc_id, b"a new version\n" * 100)
        async with http.post(f"{sm.url}/sync/sm") as response:
            assert response.status == 202
        body = await asyncio.wait_for(waiting, 60)
        answered = time.time()
    (event, *_) = body["events"]
    assert (event["type"], event["document_id"]) == ("document.updated", doc_id)
    landed = datetime.fromisoformat(event["time"]).timestamp()
    assert answered - landed < 1.0


async def _get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200
        return await response.json()


# ---------------------------------------------------------------- get


async def test_get_downloads_now_with_the_asked_reason_and_copies_where_asked(hd: World) -> None:
    root = hd.api.root_folder_id(hd.ws)
    doc_id = hd.api.add_document(root, "plan.pdf", b"%PDF plan\n" * 40, filename="plan.pdf")
    out = hd.tmp / "out"
    out.mkdir()
    args = ("--config", str(hd.config()), "get", "hd", doc_id, "--reason", "file-preview")
    result = await run_cli(*args, "--output", str(out))
    assert result.code == 0, result.stderr
    assert hd.api.download_reasons == [(doc_id, "file-preview")]
    assert (out / "plan.pdf").read_bytes() == b"%PDF plan\n" * 40
    assert sorted(p.name for p in out.iterdir()) == ["plan.pdf"]  # nothing else written there
    (entry,) = await journal(f"sqlite+aiosqlite:///{hd.state / 'state.db'}", hd.state)
    assert (entry.type, entry.document_id) == ("document.added", doc_id)
    assert entry.data == {"on_demand": True, "reason": "file-preview"}
    assert entry.path is not None
    assert (hd.mirror / entry.path).read_bytes() == b"%PDF plan\n" * 40


async def test_get_defaults_to_opening_in_another_app_and_writes_the_file_asked(
    hd: World,
) -> None:
    root = hd.api.root_folder_id(hd.ws)
    doc_id = hd.api.add_document(root, "notes.txt", b"notes\n", filename="notes.txt")
    target = hd.tmp / "copy.txt"
    result = await run_cli("--config", str(hd.config()), "get", "hd", doc_id, "-o", str(target))
    assert result.code == 0, result.stderr
    assert hd.api.download_reasons == [(doc_id, "open-file-other-app")]
    assert target.read_bytes() == b"notes\n"
    assert f"-> {target}" in result.stdout


async def test_get_names_what_it_cannot_fetch(hd: World) -> None:
    config = str(hd.config())
    missing = await run_cli("--config", config, "get", "hd", "no-such-document")
    assert missing.code == 1
    assert "no-such-document" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = await run_cli("--config", config, "get", "hd", "x", "--reason", "curiosity")
    assert bad.code == 78
    assert "--reason" in bad.stderr
    unknown = await run_cli("--config", config, "get", "nope", "x")
    assert unknown.code == 78
    assert hd.api.download_reasons == []


# ---------------------------------------------------------------- events and on_change


async def test_events_prints_the_journal_as_json_lines_and_follows_it(hd: World) -> None:
    root = hd.api.root_folder_id(hd.ws)
    first = hd.api.add_document(root, "a.txt", b"a\n", filename="a.txt")
    config = str(hd.config())
    assert (await run_cli("--config", config, "sync")).code == 0
    printed = await run_cli("--config", config, "events")  # not a terminal: JSON lines
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [(e["type"], e["document_id"]) for e in lines] == [
        ("document.added", first),
        ("source.pass_completed", None),
    ]
    since = lines[-1]["seq"]
    follower = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "--config", config, "events", "--follow", "--json"),
        *("--since", str(since)),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        hd.api.update_document(first, b"a, again\n")
        assert (await run_cli("--config", config, "sync")).code == 0
        assert follower.stdout is not None
        line = await asyncio.wait_for(follower.stdout.readline(), 30)
        followed = json.loads(line)
        assert (followed["type"], followed["document_id"]) == ("document.updated", first)
        assert followed["seq"] > since
    finally:
        follower.kill()
        await follower.wait()


async def test_on_change_runs_after_a_pass_that_changed_the_mirror_only(hd: World) -> None:
    record = hd.tmp / "runs.jsonl"
    script = hd.tmp / "reindex.py"
    script.write_text(
        "import sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    out.write(sys.stdin.read().replace('\\n', ' ') + '\\n')\n"
    )
    root = hd.api.root_folder_id(hd.ws)
    hd.api.add_document(root, "a.txt", b"a\n", filename="a.txt")
    config = str(hd.config(on_change=[sys.executable, str(script)]))
    assert (await run_cli("--config", config, "sync")).code == 0
    assert (await run_cli("--config", config, "sync")).code == 0  # nothing changed
    (run,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["type"] for e in run["events"]] == ["document.added", "source.pass_completed"]
    assert run["events"][0]["path"].endswith("/a.txt")
