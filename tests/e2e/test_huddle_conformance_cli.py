"""End to end through the CLI: Huddle as minimal as its documentation allows, and as rich.

The minimal sandbox (its defaults) lists inline documents with only their `self` links,
refuses expired tokens with 403, answers 404 for no content, writes RFC 1123 dates, kills
older access tokens on every refresh and names a finished conversion's content only in a
`Link` header. The rich one (`RICH`) does the friendliest of each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.huddle import RICH
from agent.sandbox.huddle_http import HuddleKnobs
from tests.e2e.test_huddle_cli import (
    World,
    mirror_files,
    nested_tree,
    open_world,
    status,
    sync,
    wait_for_partial,
)

pytestmark = pytest.mark.e2e

PDF = "application/pdf"
MINIMAL: HuddleKnobs = {}
MODES = {"minimal": MINIMAL, "rich": RICH}
ORIGINAL = (None, "*/*")  # the original's request: no Accept (aiohttp adds */* by default)


@pytest.fixture
async def minimal(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path, MINIMAL):
        yield w


def restricted_and_empty(world: World) -> dict[str, str]:
    """A document without download permission and one without content, at the root."""
    root = world.api.root_folder_id(world.ws)
    return {
        "restricted": world.api.add_document(root, "secret.pdf", b"s", downloadable=False),
        "empty": world.api.add_document(root, "empty.txt", b"", has_content=False),
    }


async def mirror_exactly(world: World, ids: list[str]) -> dict[str, bytes]:
    """Run a pass and check that the mirror holds exactly the documents `ids`."""
    result = await sync(world)
    assert result.code == 0, result.stderr
    files = mirror_files(world.mirror)
    assert sorted(files.values()) == sorted(world.api.document(i).data for i in ids)
    return files


def kind_of(path: str) -> str:
    """What a listing request asked for: a folder, a page of one, a workspace, a document."""
    if path.startswith("/files/pagedfolders/"):
        return "page"
    if path.startswith(("/files/folders/", "/files/workspaces/")):
        return "folder"
    if path.startswith("/files/documents/"):
        return "document"
    return path.split("/")[1]


async def unchanged_pass_requests(world: World, empty: str, **extra: Any) -> Counter[str]:
    """The listing requests the API sees, by kind, in a pass after nothing changed.

    Besides them the engine asks once more for the content of the document that had
    none (it retries documents skipped at download time), and for nothing else.
    """
    world.api.log.clear()
    result = await sync(world, **extra)
    assert result.code == 0, result.stderr
    assert "0 downloaded" in result.stdout
    content = [r.path for r in world.api.log.records if r.path.endswith("/content")]
    assert content == [f"/files/documents/{empty}/content"]
    return Counter(kind_of(r.path) for r in world.api.log.records if r.path not in content)


async def test_self_only_summaries_mirror_nested_folders_past_250_and_skip_restricted(
    minimal: World,
) -> None:
    """Every downloadable document is mirrored; the restricted one is skipped with its reason."""
    world = minimal
    ids = nested_tree(world, bulk_size=260)
    odd = restricted_and_empty(world)
    files = await mirror_exactly(world, ids)
    assert sum(1 for p in files if "Bulk" in Path(p).parts) == 260
    assert any("Drawings" in Path(p).parts for p in files)
    skipped = {s["remote_id"]: s["reason"] for s in (await status(world))["skipped_documents"]}
    assert skipped == {odd["restricted"]: "no download permission", odd["empty"]: "no content"}
    requests = await unchanged_pass_requests(world, odd["empty"])  # Bulk has two pages
    assert requests == {"folder": 4, "page": 5, "workspaces": 1, "document": 266}


# An unchanged pass of the tree below (4 folders, Bulk of 3) with the default settings: every
# folder and page, the workspace's title, and a conditional lookup (304) of each document
# whose summary shows no `content` link (minimal: all 9; rich: none).
UNCHANGED_PASS = {
    "minimal": {"folder": 4, "page": 4, "workspaces": 1, "document": 9},
    "rich": {"folder": 4, "page": 4, "workspaces": 1},
}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_both_readings_mirror_the_same_tree_and_an_unchanged_pass_lists_every_folder(
    tmp_path: Path, mode: str
) -> None:
    """Minimal and rich servers give the same mirror; the next pass lists every folder again."""
    async for world in open_world(tmp_path, MODES[mode]):
        ids = nested_tree(world, bulk_size=3)
        odd = restricted_and_empty(world)
        files = await mirror_exactly(world, ids)
        assert {str(Path(p).parent) for p in files} == {
            "hd/Projects",
            "hd/Projects/Design/Drawings",
            "hd/Projects/Bulk",
        }
        skipped = (await status(world))["skipped_documents"]
        assert {s["remote_id"] for s in skipped} == set(odd.values())
        assert await unchanged_pass_requests(world, odd["empty"]) == UNCHANGED_PASS[mode]


async def test_trusted_folder_times_make_an_unchanged_pass_one_request_on_a_subtree_server(
    tmp_path: Path,
) -> None:
    """`trust_folder_times = true` against a server whose folder time covers its subtree."""
    async for world in open_world(tmp_path, RICH):
        ids = nested_tree(world, bulk_size=3)
        odd = restricted_and_empty(world)
        await mirror_exactly(world, ids)
        requests = await unchanged_pass_requests(world, odd["empty"], trust_folder_times=True)
        assert requests == {"folder": 1}  # the root answers 304: its subtree is replayed


async def test_changes_below_a_folder_whose_time_did_not_move_are_mirrored(
    minimal: World,
) -> None:
    """A new deep document and a new version of a deep one are mirrored on the next pass."""
    world = minimal
    ids = nested_tree(world, bulk_size=3)
    await mirror_exactly(world, ids)
    root = world.api.root_folder_id(world.ws)
    root_time = world.api.folder_last_modified(root)
    plan = ids[1]  # Projects/Design/Drawings/plan-0.dwg
    world.api.update_document(plan, b"plan 0, second version\n")
    ids.append(world.api.add_document(world.api.document(plan).folder_id, "new.dwg", b"new\n"))
    assert world.api.folder_last_modified(root) == root_time
    world.api.log.clear()
    files = await mirror_exactly(world, ids)
    assert files["hd/Projects/Design/Drawings/new.dwg"] == b"new\n"
    listing = [r.path for r in world.api.log.records if not r.path.endswith("/content")]
    # As an unchanged pass: the 7 known documents asked again (304, or 200 for plan-0), the new one
    assert Counter(map(kind_of, listing)) == {**UNCHANGED_PASS["minimal"], "document": 8}


def content_requests(world: World, doc: str) -> list[tuple[str | None, str | None]]:
    """(Accept, x-download-reason) of every request the API saw for a document's content."""
    path = f"/files/documents/{doc}/content"
    return [
        (r.headers.get("accept"), r.headers.get("x-download-reason"))
        for r in world.api.log.records
        if r.path == path
    ]


async def test_renditions_are_fetched_as_previews_and_originals_as_offline_files(
    minimal: World,
) -> None:
    """The sandbox saw offline-file on every original and offline-file-preview on each PDF."""
    world = minimal
    root = world.api.root_folder_id(world.ws)
    ready = world.api.add_document(root, "ready.docx", b"ready doc")
    world.api.add_rendition(ready, PDF)
    polled = world.api.add_document(root, "polled.docx", b"polled doc")
    result = await sync(world, formats=[PDF])
    assert result.code == 0, result.stderr
    assert len([p for p in mirror_files(world.mirror) if p.endswith(".pdf")]) == 2
    for doc in (ready, polled):
        seen = content_requests(world, doc)
        originals = {reason for accept, reason in seen if accept in ORIGINAL}
        previews = {reason for accept, reason in seen if accept == PDF}
        assert originals == {"offline-file"}, seen
        assert previews == {"offline-file-preview"}, seen


async def test_a_resumed_rendition_and_original_keep_the_reasons_they_began_with(
    tmp_path: Path,
) -> None:
    """Killed mid-transfer, then run with another configured reason: each job keeps its own."""
    async for world in open_world(tmp_path, MINIMAL, content_redirect=True):
        big = os.urandom(3 << 20)
        doc = world.api.add_document(world.api.root_folder_id(world.ws), "big.docx", big)
        world.storage.faults.bytes_per_second = 400_000
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "--config",
            str(world.config(formats=[PDF])),
            "sync",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_for_partial(world.mirror / ".sync-agent" / "staging", minimum=300_000)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        world.storage.faults.bytes_per_second = None
        world.api.log.clear()
        result = await sync(world, formats=[PDF], download_reason="unspecified")
        assert result.code == 0, result.stderr
        assert sorted(mirror_files(world.mirror).values()) == sorted([big, b"%PDF-sandbox " + big])
        seen = {(accept in ORIGINAL, reason) for accept, reason in content_requests(world, doc)}
        assert seen == {(True, "offline-file"), (False, "offline-file-preview")}, seen


async def test_a_server_taking_only_the_older_oauth2_scheme_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    """Bearer refused by an OAuth2-only server: exit 77 naming `auth_scheme`; set, it syncs."""
    async for world in open_world(tmp_path, MINIMAL, auth_scheme="OAuth2"):
        world.api.add_document(world.api.root_folder_id(world.ws), "a.txt", b"a")
        refused = await sync(world)
        assert refused.code == 77, refused.stderr
        assert 'auth_scheme = "OAuth2"' in refused.stderr
        assert "Traceback" not in refused.stderr
        assert (await sync(world, auth_scheme="OAuth2")).code == 0
        assert list(mirror_files(world.mirror).values()) == [b"a"]
