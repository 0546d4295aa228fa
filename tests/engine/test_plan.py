"""The planner: what a window of the listing downloads, moves and skips, which paths it
claims, and what the end of a listing removes (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agent.engine.paths import mirror_path
from agent.engine.plan import (
    Move,
    OnDisk,
    OnLocalDelete,
    Plan,
    contested,
    deletion_policy,
    look_for_missing,
    order_moves,
    plan_window,
    remote_mtime_ns,
    removal,
    split_adoptions,
    unclaimed_targets,
    wanted_paths,
)
from agent.models import DocState, KnownDocument, RemoteDocument


def doc(rid: str, version: str = "v1", name: str | None = None, **kw: object) -> RemoteDocument:
    return RemoteDocument(remote_id=rid, version=version, name=name or f"{rid}.pdf", **kw)  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["report.pdf", "a b.txt", "con.txt", "x\ny", "", "\u212a.pdf", "q/r"]),
            st.lists(st.sampled_from(["f", "..", "a b"]), max_size=2),
            st.booleans(),
        ),
        max_size=5,
    )
)
def test_the_paths_a_window_wants_are_mirror_paths_of_its_unskipped_documents(
    items: list[tuple[str, list[str], bool]],
) -> None:
    """Whichever way they are worked out (a window of plain names at once, or each name
    sanitised), the wanted paths are `mirror_path`'s, and the skipped want none."""
    window = [
        doc(f"d{i}", name=name, folder=tuple(folder), skip_reason="skip" if skipped else None)
        for i, (name, folder, skipped) in enumerate(items)
    ]
    assert wanted_paths("s", window) == {
        d.remote_id: mirror_path("s", d.folder, d.name) for d in window if d.skip_reason is None
    }


def mirrored(rid: str, version: str = "v1", path: str | None = None) -> KnownDocument:
    return KnownDocument(rid, version, path or f"s/{rid}.pdf", DocState.MIRRORED, 10)


def plan(
    window: Sequence[RemoteDocument],
    known: Mapping[str, KnownDocument] | None = None,
    holders: Mapping[str, Collection[str]] | None = None,
    *,
    missing: Collection[str] = frozenset(),
    on_local_delete: OnLocalDelete = "restore",
) -> Plan:
    wanted = wanted_paths("s", window)
    return plan_window(
        window, wanted, known or {}, holders or {}, missing=missing, on_local_delete=on_local_delete
    )


def paths(p: Plan) -> dict[str, str]:
    found = {d.doc.remote_id: d.rel_path for d in p.downloads}
    return found | {m.doc.remote_id: m.new_path for m in p.moves}


def test_new_documents_are_downloaded() -> None:
    assert [d.rel_path for d in plan([doc("a"), doc("b")]).downloads] == ["s/a.pdf", "s/b.pdf"]


def test_unchanged_documents_cost_nothing_not_even_a_path_lookup() -> None:
    known = {"a": mirrored("a")}
    p = plan([doc("a")], known)
    assert (p.downloads, p.moves, p.unchanged) == ([], [], 1)
    assert contested(wanted_paths("s", [doc("a")]), known) == []


def test_a_changed_version_is_downloaded_again() -> None:
    assert [d.doc.version for d in plan([doc("a", "v2")], {"a": mirrored("a")}).downloads] == ["v2"]


def test_a_renamed_document_is_moved_not_downloaded() -> None:
    p = plan([doc("a", name="new.pdf")], {"a": mirrored("a")})
    assert p.downloads == []
    assert [(m.old_path, m.new_path) for m in p.moves] == [("s/a.pdf", "s/new.pdf")]


def test_skipped_documents_are_recorded_once() -> None:
    skipped = doc("u", skip_reason="url-only document")
    first = plan([skipped])
    assert (first.skips, first.downloads) == ([skipped], [])
    assert plan([skipped], {"u": KnownDocument("u", "v1", None, DocState.SKIPPED)}).skips == []


def test_a_failed_job_waits_for_its_retry_time_unless_the_version_changes() -> None:
    known = {"a": KnownDocument("a", "v1", "s/a.pdf", DocState.FAILED, waiting_version="v1")}
    assert plan([doc("a")], known).downloads == []
    assert len(plan([doc("a", "v2")], known).downloads) == 1


def test_the_first_claimant_in_a_pass_wins_a_free_path_case_insensitively() -> None:
    """Streaming rule: of two NEW documents wanting one path, the first listed gets it (the
    whole-listing planner gave it to the smallest id; a window cannot know later ones)."""
    first = plan([doc("b", name="x.pdf"), doc("a", name="X.pdf")])
    assert paths(first)["b"] == "s/x.pdf"
    assert paths(first)["a"].startswith("s/X (~")
    reversed_order = plan([doc("a", name="X.pdf"), doc("b", name="x.pdf")])
    assert paths(reversed_order)["a"] == "s/X.pdf"


def test_a_path_claimed_in_an_earlier_window_or_pass_stays_with_its_claimant() -> None:
    """Claims persist with their jobs: a later window sees them as holders."""
    later = plan([doc("a", name="X.pdf")], holders={"s/x.pdf": {"b"}})
    assert paths(later)["a"].startswith("s/X (~")
    own = plan([doc("b", name="x.pdf")], holders={"s/x.pdf": {"b"}})  # its own queued job
    assert paths(own)["b"] == "s/x.pdf"


def test_the_holder_keeps_its_name_whatever_the_listing_order() -> None:
    known = {"b": mirrored("b", path="s/x.pdf")}
    listing = [doc("a", name="X.pdf"), doc("b", name="x.pdf")]
    keys = contested(wanted_paths("s", listing), known)
    assert keys == ["s/x.pdf"]  # only the newcomer looks the path up
    p = plan(listing, known, holders={"s/x.pdf": {"b"}})
    assert "b" not in paths(p)  # unchanged, keeps s/x.pdf
    assert p.unchanged == 1
    assert paths(p)["a"].startswith("s/X (~")


def test_a_sibling_name_is_stable_and_moves_to_the_plain_name_once_it_is_free() -> None:
    first = paths(plan([doc("a", name="x.pdf")], holders={"s/x.pdf": {"b"}}))["a"]
    again = paths(plan([doc("a", name="x.pdf")], holders={"s/x.pdf": {"b"}}))["a"]
    assert first == again
    known = {"a": mirrored("a", path=first)}
    assert [(m.old_path, m.new_path) for m in plan([doc("a", name="x.pdf")], known).moves] == [
        (first, "s/x.pdf")
    ]


def test_documents_that_ask_for_it_are_pruned_when_dropped() -> None:
    old = KnownDocument("d@1", "1", "s/a (v1).pdf", DocState.MIRRORED, 1, prune=True)
    assert removal(old).prune_path == "s/a (v1).pdf"
    assert removal(mirrored("b")).prune_path is None
    failed = KnownDocument("f", "1", "s/f.pdf", DocState.FAILED, 1, prune=True)
    assert removal(failed).prune_path is None


# ---- files deleted by hand -------------------------------------------------------------


def test_a_file_deleted_by_hand_is_downloaded_again_by_default() -> None:
    p = plan([doc("a"), doc("b")], {"a": mirrored("a"), "b": mirrored("b")}, missing={"a"})
    assert [(d.doc.remote_id, d.rel_path, d.restore) for d in p.downloads] == [
        ("a", "s/a.pdf", True)
    ]
    assert p.unchanged == 1


def test_the_window_looks_for_the_files_of_its_mirrored_documents_only() -> None:
    wanted = {"a": "s/a.pdf", "b": "s/b.pdf", "c": "s/c.pdf"}
    known = {
        "b": mirrored("b", path="s/old-b.pdf"),
        "c": KnownDocument("c", "v1", None, DocState.FAILED),
    }
    assert look_for_missing(wanted, {"b", "c"}, known) == {"a": "s/a.pdf", "b": "s/old-b.pdf"}


def test_forget_records_the_deletion_and_downloads_nothing() -> None:
    p = plan([doc("a")], {"a": mirrored("a")}, missing={"a"}, on_local_delete="forget")
    assert p.downloads == []
    assert [d.remote_id for d in p.forgotten] == ["a"]


def test_a_forgotten_document_stays_away_until_a_newer_version_arrives() -> None:
    known = {"a": KnownDocument("a", "v1", "s/a.pdf", DocState.DELETED_LOCALLY, 10)}
    same = plan([doc("a")], known, on_local_delete="forget")
    assert (same.downloads, same.unchanged) == ([], 1)
    newer = plan([doc("a", "v2")], known, on_local_delete="forget")
    assert [(d.doc.version, d.restore) for d in newer.downloads] == [("v2", False)]


def test_a_missing_file_of_a_changed_document_is_an_ordinary_download() -> None:
    p = plan([doc("a", "v2")], {"a": mirrored("a")}, missing={"a"}, on_local_delete="forget")
    assert [(d.doc.version, d.restore) for d in p.downloads] == [("v2", False)]
    assert p.forgotten == []


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
    p = plan([listed])
    assert unclaimed_targets(p.downloads) == ["s/a.pdf"]
    coarse = OnDisk(size=10, mtime_ns=WHEN_NS // 10**9 * 10**9, regular=True)  # 1 s resolution
    adopt, fetch = split_adoptions(p.downloads, {"s/a.pdf": coarse})
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
        adopt, fetch = split_adoptions(plan([listed]).downloads, {"s/a.pdf": found})
        assert (adopt, len(fetch)) == ([], 1), listed


def test_the_agents_own_file_at_the_path_is_never_quick_adopted() -> None:
    known = {"a": mirrored("a")}  # a new version is due; the file there is the old one
    p = plan([doc("a", "v2", size=10, modified=WHEN)], known)
    assert unclaimed_targets(p.downloads) == []
    adopt, _ = split_adoptions(p.downloads, {"s/a.pdf": OnDisk(10, WHEN_NS, regular=True)})
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
