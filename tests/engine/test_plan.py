"""The planner: what a window of the listing downloads, moves and skips, which paths it
claims, and what the end of a listing removes (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from agent.engine.plan import Plan, contested, plan_window, removal, wanted_paths
from agent.models import DocState, KnownDocument, RemoteDocument


def doc(rid: str, version: str = "v1", name: str | None = None, **kw: object) -> RemoteDocument:
    return RemoteDocument(remote_id=rid, version=version, name=name or f"{rid}.pdf", **kw)  # type: ignore[arg-type]


def mirrored(rid: str, version: str = "v1", path: str | None = None) -> KnownDocument:
    return KnownDocument(rid, version, path or f"s/{rid}.pdf", DocState.MIRRORED, 10)


def plan(
    window: Sequence[RemoteDocument],
    known: Mapping[str, KnownDocument] | None = None,
    holders: Mapping[str, Collection[str]] | None = None,
) -> Plan:
    return plan_window(window, wanted_paths("s", window), known or {}, holders or {})


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
