"""The planner: what a pass downloads, moves, skips and marks removed (pure)."""

from __future__ import annotations

from agent.engine.plan import assign_paths, plan_pass
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
