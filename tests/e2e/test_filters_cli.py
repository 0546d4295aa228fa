"""Source filters through the real CLI against a nested Huddle tree: include, exclude, sizes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import run_cli
from tests.e2e.test_huddle_cli import World, mirror_files, open_world, status, sync

pytestmark = pytest.mark.e2e

TREE = {  # path inside the source's folder -> bytes
    "Projects/readme.txt": b"r" * 10,
    "Projects/Report.PDF": b"p" * 300,
    "Projects/Design/plan.pdf": b"d" * 200,
    "Projects/Design/drafts/sketch.pdf": b"s" * 50,
    "Projects/Design/drafts/old/older.pdf": b"o" * 60,
    "Projects/Bulk/big.bin": b"b" * 5000,
    "Projects/Bulk/notes.txt": b"n" * 20,
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        build(w)
        yield w


def build(world: World) -> dict[str, str]:
    """The tree in the sandbox; the document id of each path."""
    api = world.api
    folders = {"Projects": api.root_folder_id(world.ws)}
    ids = {}
    for path, data in TREE.items():
        *parents, name = path.split("/")
        for depth in range(2, len(parents) + 1):
            key = "/".join(parents[:depth])
            if key not in folders:
                folders[key] = api.add_folder(
                    folders["/".join(parents[: depth - 1])], parents[depth - 1]
                )
        ids[path] = api.add_document(folders["/".join(parents)], name, data, filename=name)
    return ids


def mirrored(world: World) -> set[str]:
    return {p.removeprefix("hd/") for p in mirror_files(world.mirror)}


async def synced(world: World, **extra: Any) -> set[str]:
    result = await sync(world, **extra)
    assert result.code == 0, result.stderr
    return mirrored(world)


def skipped(source: dict[str, Any]) -> dict[str, str]:
    return {d["name"]: d["reason"] for d in source["skipped_documents"]}


async def test_exclude_with_globstar_leaves_out_every_depth_and_status_names_the_rule(
    world: World,
) -> None:
    """`**/drafts/**` leaves out the drafts folder's files at every depth below it, nothing
    else; `status` lists each as skipped with the rule, and with the new rule once the
    configuration changes."""
    got = await synced(world, exclude=["**/drafts/**"])
    assert got == set(TREE) - {
        "Projects/Design/drafts/sketch.pdf",
        "Projects/Design/drafts/old/older.pdf",
    }
    source = await status(world)
    assert skipped(source) == {
        "sketch.pdf": 'filter: exclude "**/drafts/**"',
        "older.pdf": 'filter: exclude "**/drafts/**"',
    }
    await synced(world, exclude=["**/*.pdf"], max_size="40")  # other rules now
    assert skipped(await status(world)) == {
        "Report.PDF": "filter: max_size 40 bytes",
        "plan.pdf": 'filter: exclude "**/*.pdf"',
        "sketch.pdf": 'filter: exclude "**/*.pdf"',
        "older.pdf": 'filter: exclude "**/*.pdf"',
        "big.bin": "filter: max_size 40 bytes",
    }


async def test_include_star_matches_one_segment_and_ignore_case_folds(world: World) -> None:
    """`*/*.pdf` takes only PDFs directly in the top folder (case-sensitive: Report.PDF
    is not one); with ignore_case it is."""
    assert await synced(world, include=["*/*.pdf", "**/notes.txt"]) == {"Projects/Bulk/notes.txt"}
    assert await synced(world, include=["*/*.pdf", "**/notes.txt"], ignore_case=True) == {
        "Projects/Bulk/notes.txt",
        "Projects/Report.PDF",
    }


async def test_sizes_and_include_with_exclude_winning(world: World) -> None:
    """Every `**/*.pdf` between 55 and 250 bytes, minus `Projects/Design/*`: exactly one."""
    got = await synced(
        world, include=["**/*.pdf"], exclude=["Projects/Design/*"], min_size="55", max_size="250B"
    )
    assert got == {"Projects/Design/drafts/old/older.pdf"}
    reasons = skipped(await status(world))
    assert reasons["plan.pdf"] == 'filter: exclude "Projects/Design/*"'
    assert reasons["big.bin"].startswith('filter: include: matches none of "**/*.pdf"')
    assert reasons["sketch.pdf"] == "filter: min_size 55 bytes"
    assert reasons["Report.PDF"].startswith("filter: include")


async def test_on_filter_exclude_keep_then_remove_after_a_config_change(world: World) -> None:
    """A new exclude leaves mirrored files in place under `keep` (no longer updated); then
    `remove` deletes them and their emptied folders, journaled as `document.removed`, and a
    dry run before it says which files would go."""
    assert await synced(world) == set(TREE)
    drafts = {"Projects/Design/drafts/sketch.pdf", "Projects/Design/drafts/old/older.pdf"}
    assert await synced(world, exclude=["**/drafts/**"]) == set(TREE)  # keep: default
    assert set(skipped(await status(world))) == {"sketch.pdf", "older.pdf"}

    config = str(world.config(exclude=["**/drafts/**"], on_filter_exclude="remove"))
    preview = await run_cli("--config", config, "sync", "--dry-run", "--json")
    (source,) = json.loads(preview.stdout)["sources"]
    going = {a["path"] for a in source["actions"] if a["deletes_file"]}
    assert going == {f"hd/{p}" for p in drafts}
    assert mirrored(world) == set(TREE)

    assert (
        await synced(world, exclude=["**/drafts/**"], on_filter_exclude="remove")
        == set(TREE) - drafts
    )
    assert not (world.mirror / "hd/Projects/Design/drafts").exists()
    assert (world.mirror / "hd/Projects/Design/plan.pdf").exists()
    events = await run_cli("--config", config, "events", "--json")
    removed = [json.loads(line) for line in events.stdout.splitlines()]
    removed = [e for e in removed if e["type"] == "document.removed"]
    assert {e["path"] for e in removed} == {f"hd/{p}" for p in drafts}
    assert all(e["data"]["file_deleted"] for e in removed)
    assert all(e["data"]["filter"] == 'exclude "**/drafts/**"' for e in removed)
    assert await synced(world) == set(TREE)  # the filter lifted: fetched again


async def test_remove_keeps_a_file_edited_here_as_a_local_copy(world: World) -> None:
    """`remove` never deletes a user's edit: the edited file is set aside as a local copy."""
    await synced(world)
    edited = world.mirror / "hd/Projects/Bulk/notes.txt"
    edited.write_bytes(b"my own notes\n")
    got = await synced(world, exclude=["**/notes.txt"], on_filter_exclude="remove")
    assert "Projects/Bulk/notes.txt" not in got
    (copy,) = [p for p in got if "notes (local copy" in p]
    assert (world.mirror / "hd" / copy).read_bytes() == b"my own notes\n"


async def test_get_refuses_a_document_the_filters_leave_out_naming_the_rule(
    tmp_path: Path,
) -> None:
    """`get` of a document an exclude pattern or a size rule leaves out is refused (exit 1)
    with the rule in the message, and nothing is downloaded; one the filters keep is got."""
    async for world in open_world(tmp_path):
        ids = build(world)
        config = str(world.config(exclude=["**/drafts/**"], max_size="1000"))
        sketch = ids["Projects/Design/drafts/sketch.pdf"]
        refused = await run_cli("--config", config, "get", "hd", sketch)
        assert refused.code == 1, refused.stderr
        assert 'exclude "**/drafts/**"' in refused.stderr
        assert "Projects/Design/drafts/sketch.pdf" in refused.stderr
        assert "Traceback" not in refused.stderr
        big = await run_cli("--config", config, "get", "hd", ids["Projects/Bulk/big.bin"])
        assert big.code == 1, big.stderr
        assert "max_size 1000 bytes" in big.stderr
        assert world.api.download_reasons == []
        assert mirrored(world) == set()
        notes = await run_cli("--config", config, "get", "hd", ids["Projects/Bulk/notes.txt"])
        assert notes.code == 0, notes.stderr
        assert mirrored(world) == {"Projects/Bulk/notes.txt"}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"exclude": ["**/*.tmp", "ok/**", "drafts["]}, "sources.hd.exclude[2]"),
        ({"include": ["a**"]}, "sources.hd.include[0]"),
        ({"max_size": "ten megabytes"}, "sources.hd.max_size"),
        ({"on_filter_exclude": "delete"}, "sources.hd.on_filter_exclude"),
    ],
)
async def test_bad_filter_exits_78_naming_the_key(
    world: World, extra: dict[str, Any], key: str
) -> None:
    """A bad pattern, size or policy stops `sync` with exit 78 and the key's full name."""
    result = await sync(world, **extra)
    assert result.code == 78
    assert f"configuration error: {key}:" in result.stderr
    assert not world.mirror.exists()
