"""The Huddle source completes document summaries from the Document resource, and no more.

Against the sandbox in each summary shape: `self` only (its default, the least the Folder
pages show), title and links, and the full Document resource (RICH).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.config import parse_config
from agent.models import RemoteDocument
from agent.sandbox.huddle import HuddleSandbox
from agent.sandbox.storage import StorageHost
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.huddle import HuddleSource
from agent.sources.huddle_items import DocEntry, FolderCache, Summary
from agent.sources.huddle_lookup import answered
from agent.state.source_state import MemorySourceState
from agent.transfer.pacing import RateLimiter

Build = Callable[..., HuddleSource]
DOCS = "/files/documents/"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_session(total_timeout=10) as s:
        yield s


@pytest.fixture
def build(session: aiohttp.ClientSession, tmp_path: Path) -> Build:
    """A HuddleSource over `sb` for workspace `ws`, keeping its state in `state`."""

    def make(
        sb: HuddleSandbox, ws: str, state: MemorySourceState, *, trust: bool = False, **agent: Any
    ) -> HuddleSource:
        data = {
            "agent": {"mirror_dir": str(tmp_path / "m"), "state_dir": str(tmp_path), **agent},
            "sources": [
                {
                    "name": "hd",
                    "type": "huddle",
                    "base_url": sb.base_url,
                    "token_url": sb.token_url,
                    "client_id": "demo-client",
                    "refresh_token": "demo-refresh-0",
                    "workspaces": [ws],
                    "trust_folder_times": trust,
                }
            ],
        }
        config = parse_config(data, env={})
        (source,) = config.sources
        client = ApiClient(session, RateLimiter(None), source="hd")
        return HuddleSource(SourceContext(source, config.agent, client, state))

    return make


async def listing(source: HuddleSource) -> dict[str, RemoteDocument]:
    return {d.remote_id: d async for d in source.list_documents()}


def lookups(sb: HuddleSandbox) -> list[str]:
    return [r.path for r in sb.log.matching("GET", DOCS)]


@pytest.fixture
async def sandbox() -> AsyncIterator[HuddleSandbox]:
    storage = StorageHost()
    sb = HuddleSandbox(storage)  # the defaults: summaries with `self` only
    async with storage.running(), sb.running():
        yield sb


def fill(sb: HuddleSandbox) -> tuple[str, dict[str, str]]:
    """A workspace: Design/Drawings (2 documents), Bulk (260), a restricted one at the root."""
    ws = sb.add_workspace("Site")
    root = sb.root_folder_id(ws)
    drawings = sb.add_folder(sb.add_folder(root, "Design"), "Drawings")
    bulk = sb.add_folder(root, "Bulk")
    ids = {
        "restricted": sb.add_document(root, "secret.pdf", b"s", downloadable=False),
        "plan": sb.add_document(drawings, "plan.dwg", b"plan v1"),
        "elevation": sb.add_document(drawings, "elevation.dwg", b"e"),
        "bulk": bulk,
    }
    sb.populate_bulk(bulk, 260)
    return ws, ids


async def test_self_only_summaries_are_completed_and_only_restricted_ones_skipped(
    sandbox: HuddleSandbox, build: Build
) -> None:
    ws, ids = fill(sandbox)
    docs = await listing(build(sandbox, ws, MemorySourceState()))
    assert len(docs) == 263
    assert docs[ids["plan"]].name == "plan.dwg"
    assert docs[ids["plan"]].folder == ("Site", "Design", "Drawings")
    assert docs[ids["plan"]].version.startswith("1@")
    assert docs[ids["plan"]].size == len(b"plan v1")
    skipped = {k for k, d in docs.items() if d.skip_reason is not None}
    assert skipped == {ids["restricted"]}
    assert docs[ids["restricted"]].skip_reason == "no download permission"
    assert len(lookups(sandbox)) == 263  # one Document resource per document, no more


async def test_by_default_every_pass_asks_each_document_and_finds_a_new_deep_version(
    sandbox: HuddleSandbox, build: Build
) -> None:
    """Folder times prove nothing: each pass lists every page and asks each document (304)."""
    ws, ids = fill(sandbox)
    source = build(sandbox, ws, MemorySourceState())
    first = await listing(source)
    sandbox.log.clear()
    assert await listing(source) == first
    asked = sandbox.log.matching("GET", DOCS)
    assert len(asked) == 263
    assert all(r.headers.get("if-modified-since") for r in asked)
    assert len(sandbox.log.matching("GET", "/files/pagedfolders/")) == 5  # Bulk has two pages
    root_time = sandbox.folder_last_modified(sandbox.root_folder_id(ws))
    sandbox.update_document(ids["plan"], b"plan v2")
    assert sandbox.folder_last_modified(sandbox.root_folder_id(ws)) == root_time
    assert (await listing(source))[ids["plan"]].version.startswith("2@")


async def test_trusted_folder_times_replay_an_unchanged_subtree_and_ask_only_along_a_change(
    build: Build,
) -> None:
    """With `trust_folder_times` against a subtree-time server: 1 request, then the path."""
    storage = StorageHost()
    sb = HuddleSandbox(storage, folder_times="subtree")
    async with storage.running(), sb.running():
        ws, ids = fill(sb)
        source = build(sb, ws, MemorySourceState(), trust=True)
        first = await listing(source)
        sb.log.clear()
        assert await listing(source) == first
        assert len(sb.log.records) == 1  # the root answers 304: the subtree is replayed
        sb.update_document(ids["plan"], b"plan v2")
        sb.log.clear()
        after = await listing(source)
        assert after[ids["plan"]].version.startswith("2@")
        asked = sb.log.matching("GET", DOCS)  # the documents of the folders on the path
        assert sorted(r.path for r in asked) == sorted(
            f"{DOCS}{ids[k]}" for k in ("plan", "elevation", "restricted")
        )
        assert all(r.headers.get("if-modified-since") for r in asked)  # 304 when unchanged


@pytest.mark.parametrize("shape", ["links", "full"])
async def test_summaries_with_dates_reuse_what_was_learnt_until_the_document_changes(
    build: Build, shape: str
) -> None:
    storage = StorageHost()
    sb = HuddleSandbox(storage, summaries=shape)
    async with storage.running(), sb.running():
        ws = sb.add_workspace("W")
        root = sb.root_folder_id(ws)
        secret = sb.add_document(root, "secret.pdf", b"s", downloadable=False)
        sb.add_document(root, "open.txt", b"o")
        source = build(sb, ws, MemorySourceState())
        docs = await listing(source)
        assert docs[secret].skip_reason == "no download permission"
        assert lookups(sb) == [f"{DOCS}{secret}"]  # the downloadable one showed `content`
        sb.add_document(root, "new.txt", b"n")  # the folder changes, the restricted one not
        sb.log.clear()
        assert len(await listing(source)) == 3
        assert lookups(sb) == []
        sb.rename_document(secret, "renamed.pdf")
        sb.log.clear()
        assert (await listing(source))[secret].name == "renamed.pdf"
        assert lookups(sb) == [f"{DOCS}{secret}"]


async def test_lookups_run_concurrently_but_no_more_than_the_download_concurrency(
    sandbox: HuddleSandbox, build: Build
) -> None:
    ws = sandbox.add_workspace("W")
    sandbox.populate_bulk(sandbox.root_folder_id(ws), 40)
    sandbox.faults.latency = 0.02
    source = build(sandbox, ws, MemorySourceState(), max_concurrent_downloads=4)
    assert len(await listing(source)) == 40
    assert sandbox.log.peak_in_flight == 4


async def test_a_document_deleted_between_its_folder_and_its_lookup_is_left_out(
    sandbox: HuddleSandbox, build: Build
) -> None:
    ws = sandbox.add_workspace("W")
    root = sandbox.root_folder_id(ws)
    kept = sandbox.add_document(root, "kept.txt", b"k")
    gone = sandbox.add_document(root, "gone.txt", b"g")
    sandbox.faults.add(f"{DOCS}{gone}", 410, method="GET")
    assert set(await listing(build(sandbox, ws, MemorySourceState()))) == {kept}


def entry(updated: str = "2024-01-01T00:00:00Z", **fields: Any) -> DocEntry:
    values: dict[str, Any] = {"version": f"3@{updated}", "updated": updated, **fields}
    return DocEntry("7", "a.txt", **values)


def test_only_a_looked_up_entry_with_the_same_dates_answers_without_a_request() -> None:
    learnt = entry(checked="", content_url="http://h/c")
    assert answered(Summary("http://h/d/7", entry(content_url="http://h/x")), None) is not None
    assert answered(Summary("u", entry()), learnt) is learnt
    assert answered(Summary("u", entry(version="?@2024-01-01T00:00:00Z")), learnt) is learnt
    assert answered(Summary("u", entry(version="4@2024-01-01T00:00:00Z")), learnt) is None
    assert answered(Summary("u", entry("2024-01-02T00:00:00Z")), learnt) is None
    assert answered(Summary("u", entry(version="?@", updated="")), learnt) is None
    assert answered(Summary("u", entry()), entry(content_url="http://h/c")) is None


def test_the_folder_cache_keeps_what_a_lookup_learnt() -> None:
    cache = FolderCache("Mon, 01 Jan 2024 00:00:00 GMT", "T", ("f",), (entry(checked="x"),))
    assert FolderCache.decode(cache.encode()) == cache
    assert FolderCache.decode('{"v":1,"lm":null,"t":"T","f":[],"d":[]}') is None


async def test_folders_without_a_paged_view_complete_their_inline_summaries(
    build: Build,
) -> None:
    storage = StorageHost()
    sb = HuddleSandbox(storage, paged_view=False)
    async with storage.running(), sb.running():
        ws = sb.add_workspace("W")
        sub = sb.add_folder(sb.root_folder_id(ws), "Sub")
        doc = sb.add_document(sub, "a.txt", b"a")
        docs = await listing(build(sb, ws, MemorySourceState()))
        assert [(d.remote_id, d.name, d.folder) for d in docs.values()] == [
            (doc, "a.txt", ("W", "Sub"))
        ]
        assert sb.log.matching("GET", "/files/pagedfolders/") == []
