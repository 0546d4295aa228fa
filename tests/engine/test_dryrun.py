"""A dry run's description of a survey (pure): actions, their reasons, totals."""

from __future__ import annotations

from agent.engine.dryrun import SourcePreview, describe
from agent.engine.plan import Download, Move, OnDisk, Plan, Removal
from agent.engine.survey import Survey
from agent.models import DocState, KnownDocument, RemoteDocument


def doc(rid: str, version: str = "2", size: int | None = 10) -> RemoteDocument:
    return RemoteDocument(rid, version, f"{rid}.txt", size=size)


def test_downloads_say_why_and_forecast_what_is_kept_aside() -> None:
    """A target holding an unknown file, or the agent's file changed here, is forecast as
    kept aside before its download; the agent's unchanged file is not."""
    mine = KnownDocument("b", "1", "s/b.txt", DocState.MIRRORED, size=5, mtime_ns=100)
    same = KnownDocument("c", "1", "s/c.txt", DocState.MIRRORED, size=5, mtime_ns=100)
    fetch = [
        Download(doc("a"), "s/a.txt"),
        Download(doc("b"), "s/b.txt", mine),
        Download(doc("c", size=None), "s/c.txt", same),
    ]
    seen = {
        "s/a.txt": OnDisk(3, 1, regular=True),
        "s/b.txt": OnDisk(5, 999, regular=True),
        "s/c.txt": OnDisk(5, 100, regular=True),
    }
    found = Survey(3, {"b": mine, "c": same}, Plan(downloads=fetch), fetch=fetch)
    acts = [(a.action, a.path, a.why) for a in describe("s", found, seen)]
    assert acts == [
        (
            "keep_aside",
            "s/a.txt",
            "a file the state does not know: kept as a local copy unless identical",
        ),
        ("download", "s/a.txt", "new"),
        (
            "keep_aside",
            "s/b.txt",
            "changed here since mirrored: kept as a local copy unless identical",
        ),
        ("download", "s/b.txt", "new version"),
        ("download", "s/c.txt", "new version"),
    ]
    preview = SourcePreview("s", "huddle", actions=describe("s", found, seen))
    totals = preview.totals()
    assert (totals["download"], totals["download_bytes"], totals["download_unknown_size"]) == (
        3,
        20,
        1,
    )
    assert totals["keep_aside"] == 2


def test_moves_removals_and_prunes_count_deleted_bytes() -> None:
    """A pruned removal deletes its file (its bytes count), a plain one keeps it; a move
    onto a file that no other move takes away forecasts keeping that file aside."""
    gone = KnownDocument("g", "1", "s/g.txt", DocState.MIRRORED, size=7, prune=True)
    kept = KnownDocument("k", "1", "s/k.txt", DocState.MIRRORED, size=9)
    moved = KnownDocument("m", "2", "s/old.txt", DocState.MIRRORED, size=4)
    plan = Plan(moves=[Move(doc("m"), "s/old.txt", "s/new.txt")])
    unlisted = [Removal("g", "s/g.txt"), Removal("k", None)]
    found = Survey(1, {"g": gone, "k": kept, "m": moved}, plan, unlisted=unlisted)
    preview = SourcePreview(
        "s", "huddle", actions=describe("s", found, {"s/new.txt": OnDisk(1, 1, True)})
    )
    acts = [(a.action, a.path, a.deletes_file, a.origin) for a in preview.actions]
    assert acts == [
        ("remove", "s/g.txt", True, None),
        ("remove", "s/k.txt", False, None),
        ("keep_aside", "s/new.txt", False, None),
        ("move", "s/new.txt", False, "s/old.txt"),
    ]
    assert (preview.totals()["delete"], preview.totals()["delete_bytes"]) == (1, 7)
