"""The planner: what a pass downloads, moves, skips and marks removed (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agent.engine.plan import (
    Move,
    OnDisk,
    assign_paths,
    deletion_policy,
    order_moves,
    plan_pass,
    remote_mtime_ns,
    split_adoptions,
    unclaimed_targets,
)
from agent.models import DocState, KnownDocument, RemoteDocument


def doc(rid: str, version: str = "v1", name: str | None = None, **kw: object) -> RemoteDocument:
    return RemoteDocument(remote_id=rid, version=version, name=name or f"{rid}.pdf", **kw)  # type: ignore[arg-type]


def mirrored(rid: str, version: str = "v1", path: str | None = None) -> KnownDocument:
    return KnownDocument(rid, version, path or f"s/{rid}.pdf", DocState.MIRRORED, 10)


def test_new_documents_are_downloaded() -> None:
    plan = plan_pass("s", [doc("a"), doc("b")], {})
    assert [d.rel_path for d in plan.downloads] == ["s/a.pdf", "s/b.pdf"]


def test_unchanged_documents_cost_nothing() -> None:
    plan = plan_pass("s", [doc("a")], {"a": mirrored("a")})
    assert plan.downloads == []
    assert plan.moves == []
    assert plan.unchanged == 1


def test_a_changed_version_is_downloaded_again() -> None:
    plan = plan_pass("s", [doc("a", "v2")], {"a": mirrored("a")})
    assert [d.doc.version for d in plan.downloads] == ["v2"]


def test_a_renamed_document_is_moved_not_downloaded() -> None:
    plan = plan_pass("s", [doc("a", name="new.pdf")], {"a": mirrored("a")})
    assert plan.downloads == []
    assert [(m.old_path, m.new_path) for m in plan.moves] == [("s/a.pdf", "s/new.pdf")]


def test_documents_gone_from_the_listing_are_marked_removed() -> None:
    plan = plan_pass("s", [doc("a")], {"a": mirrored("a"), "b": mirrored("b")})
    assert plan.removed == ["b"]


def test_skipped_documents_are_recorded_once() -> None:
    skipped = doc("u", skip_reason="url-only document")
    first = plan_pass("s", [skipped], {})
    assert first.skips == [skipped]
    assert first.downloads == []
    known = {"u": KnownDocument("u", "v1", None, DocState.SKIPPED)}
    assert plan_pass("s", [skipped], known).skips == []


def test_a_failed_job_waits_for_its_retry_time_unless_the_version_changes() -> None:
    known = {"a": KnownDocument("a", "v1", "s/a.pdf", DocState.FAILED, waiting_version="v1")}
    assert plan_pass("s", [doc("a")], known).downloads == []
    assert len(plan_pass("s", [doc("a", "v2")], known).downloads) == 1


def test_same_names_get_distinct_stable_paths_and_the_holder_keeps_its_name() -> None:
    listing = [doc("b", name="x.pdf"), doc("a", name="X.pdf")]
    first = assign_paths("s", listing, {})
    assert first["a"] == "s/X.pdf"
    assert first["b"] != first["a"]
    again = assign_paths("s", list(reversed(listing)), {})
    assert again == first
    holder = {"b": mirrored("b", path="s/x.pdf")}
    assert assign_paths("s", listing, holder)["b"] == "s/x.pdf"


def test_documents_that_ask_for_it_are_pruned_when_dropped() -> None:
    old = KnownDocument("d@1", "1", "s/a (v1).pdf", DocState.MIRRORED, 1, prune=True)
    kept = mirrored("b")
    plan = plan_pass("s", [], {"d@1": old, "b": kept})
    assert sorted(plan.removed) == ["b", "d@1"]
    assert plan.prunes == ["s/a (v1).pdf"]


# ---- files deleted by hand -------------------------------------------------------------


def test_a_file_deleted_by_hand_is_downloaded_again_by_default() -> None:
    plan = plan_pass(
        "s", [doc("a"), doc("b")], {"a": mirrored("a"), "b": mirrored("b")}, missing={"a"}
    )
    assert [(d.doc.remote_id, d.restore) for d in plan.downloads] == [("a", True)]
    assert plan.unchanged == 1


def test_forget_records_the_deletion_and_downloads_nothing() -> None:
    known = {"a": mirrored("a")}
    plan = plan_pass("s", [doc("a")], known, missing={"a"}, on_local_delete="forget")
    assert plan.downloads == []
    assert [d.remote_id for d in plan.forgotten] == ["a"]


def test_a_forgotten_document_stays_away_until_a_newer_version_arrives() -> None:
    known = {"a": KnownDocument("a", "v1", "s/a.pdf", DocState.DELETED_LOCALLY, 10)}
    same = plan_pass("s", [doc("a")], known, on_local_delete="forget")
    assert (same.downloads, same.unchanged) == ([], 1)
    newer = plan_pass("s", [doc("a", "v2")], known, on_local_delete="forget")
    assert [(d.doc.version, d.restore) for d in newer.downloads] == [("v2", False)]


def test_a_missing_file_of_a_changed_document_is_an_ordinary_download() -> None:
    plan = plan_pass(
        "s", [doc("a", "v2")], {"a": mirrored("a")}, missing={"a"}, on_local_delete="forget"
    )
    assert [(d.doc.version, d.restore) for d in plan.downloads] == [("v2", False)]
    assert plan.forgotten == []


def test_a_lost_source_folder_is_restored_whatever_the_setting() -> None:
    assert deletion_policy("forget", source_folder_present=False) == "restore"
    assert deletion_policy("forget", source_folder_present=True) == "forget"
    assert deletion_policy("restore", source_folder_present=True) == "restore"


# ---- adoption without a download (the quick check) ---------------------------------------

WHEN = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
WHEN_NS = 1_714_566_615_250_000_000


def test_remote_times_become_exact_nanoseconds_and_naive_ones_mean_utc() -> None:
    assert remote_mtime_ns(doc("a", modified=WHEN)) == WHEN_NS
    assert remote_mtime_ns(doc("a", modified=WHEN.replace(tzinfo=None))) == WHEN_NS
    assert remote_mtime_ns(doc("a")) is None


def test_a_file_with_the_listed_size_and_date_is_adopted_without_a_download() -> None:
    listed = doc("a", size=10, modified=WHEN)
    plan = plan_pass("s", [listed], {})
    assert unclaimed_targets(plan.downloads) == ["s/a.pdf"]
    coarse = OnDisk(size=10, mtime_ns=WHEN_NS // 10**9 * 10**9, regular=True)  # 1 s resolution
    adopt, fetch = split_adoptions(plan.downloads, {"s/a.pdf": coarse})
    assert ([d.rel_path for d in adopt], fetch) == (["s/a.pdf"], [])


def test_any_mismatch_or_missing_fact_means_a_download() -> None:
    on_disk = OnDisk(size=10, mtime_ns=WHEN_NS, regular=True)
    for listed, found in [
        (doc("a", size=11, modified=WHEN), on_disk),  # the size differs: certainly different
        (doc("a", size=10, modified=WHEN + timedelta(seconds=1)), on_disk),
        (doc("a", modified=WHEN), on_disk),  # no size in the listing
        (doc("a", size=10), on_disk),  # no date in the listing
        (doc("a", size=10, modified=WHEN), OnDisk(10, WHEN_NS, regular=False)),
    ]:
        adopt, fetch = split_adoptions(plan_pass("s", [listed], {}).downloads, {"s/a.pdf": found})
        assert (adopt, len(fetch)) == ([], 1), listed


def test_the_agents_own_file_at_the_path_is_never_quick_adopted() -> None:
    known = {"a": mirrored("a")}  # a new version is due; the file there is the old one
    plan = plan_pass("s", [doc("a", "v2", size=10, modified=WHEN)], known)
    assert unclaimed_targets(plan.downloads) == []
    adopt, _ = split_adoptions(plan.downloads, {"s/a.pdf": OnDisk(10, WHEN_NS, regular=True)})
    assert adopt == []


# ---- moves -------------------------------------------------------------------------------


def move(old: str, new: str) -> Move:
    return Move(doc(old), f"s/{old}", f"s/{new}")


def test_a_chain_of_moves_starts_from_its_free_end() -> None:
    steps = order_moves([move("a", "b"), move("b", "c")])
    assert steps == [("s/b", "s/c"), ("s/a", "s/b")]


def test_a_swap_goes_through_a_temporary_name() -> None:
    steps = order_moves([move("a", "b"), move("b", "a")])
    assert steps == [("s/a", "s/a.sync-agent-move"), ("s/b", "s/a"), ("s/a.sync-agent-move", "s/b")]


@given(st.permutations(list("abcdef")))
def test_any_permutation_of_names_moves_each_file_to_its_new_name(names: list[str]) -> None:
    moves = [move(old, new) for old, new in zip("abcdef", names, strict=True)]
    files = {f"s/{n}": n for n in "abcdef"}  # path -> whose content is there
    for old, new in order_moves(moves):
        assert new not in files, f"{old} -> {new} would overwrite"
        files[new] = files.pop(old)
    assert files == {f"s/{new}": old for old, new in zip("abcdef", names, strict=True)}
