"""The listing's windows: a repeated id keeps its first listing, whichever window repeats it."""

from __future__ import annotations

import gc

from agent.engine.listing import Seen, first_listings
from agent.models import RemoteDocument


def doc(remote_id: str, version: str = "v1") -> RemoteDocument:
    return RemoteDocument(remote_id, version, f"{remote_id}.pdf")


def test_a_window_without_repeats_is_kept_whole_and_its_ids_seen() -> None:
    seen: Seen = {}
    window = [doc("a"), doc("b")]
    assert first_listings(window, seen) == window
    assert sorted(seen) == ["a", "b"]


def test_an_id_repeated_in_its_window_or_a_later_one_keeps_its_first_listing() -> None:
    seen: Seen = {}
    first = first_listings([doc("a"), doc("b"), doc("a", "v2")], seen)
    assert [(d.remote_id, d.version) for d in first] == [("a", "v1"), ("b", "v1")]
    later = first_listings([doc("c"), doc("b", "v3"), doc("c", "v4")], seen)
    assert [(d.remote_id, d.version) for d in later] == [("c", "v1")]
    assert sorted(seen) == ["a", "b", "c"]


def test_the_ids_seen_stay_out_of_the_garbage_collectors_walks() -> None:
    """A re-poll sees a million ids: the collector must not traverse them at each full pass."""
    seen: Seen = {}
    first_listings([doc("a"), doc("b")], seen)
    first_listings([doc("c"), doc("c", "v2")], seen)
    assert not gc.is_tracked(seen)
