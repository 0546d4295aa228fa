"""Standard Metrics listing pages: the typed fast path and the loose path read alike."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from agent.errors import TransientError
from agent.sources.http import ApiResponse
from agent.sources.standard_metrics import read_page

NEXT = "https://api.example/v1/documents/?page=2&page_size=100"


def answer(body: object | bytes) -> ApiResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ApiResponse(
        200, "https://api.example/v1/documents/", CIMultiDictProxy(CIMultiDict()), raw
    )


def item(doc_id: object, **fields: object) -> dict[str, object]:
    return {"id": doc_id, "link": None, "parse_state": "parsed", **fields}


def test_a_documented_page_gives_ids_names_versions_dates_and_the_next_url() -> None:
    page = {
        "count": 3,
        "next": NEXT,
        "previous": None,
        "results": [
            item("a1", name="Q1.pdf", uploaded_at="2024-03-01T10:00:00Z"),
            item("b2", name=None, uploaded_at="2024-03-01T12:00:00+02:00"),
            item("", name="no id: left out"),
        ],
    }
    docs, after = read_page(answer(page))
    assert after == NEXT
    assert [(d.remote_id, d.name, d.version) for d in docs] == [
        ("a1", "Q1.pdf", "2024-03-01T10:00:00Z"),
        ("b2", "b2", "2024-03-01T12:00:00+02:00"),
    ]
    assert [d.modified for d in docs] == [
        datetime(2024, 3, 1, 10, tzinfo=UTC),
        datetime(2024, 3, 1, 10, tzinfo=UTC),  # another zone, read as UTC
    ]


def test_a_page_of_another_shape_is_read_field_by_field_as_before() -> None:
    """Numeric ids, names that are numbers, stray non-objects and a missing `next`: the
    typed decoder refuses the page, the loose path reads what it can."""
    page = {
        "results": [
            item(7, name=2024, uploaded_at="2024-03-01"),
            "not a document",
            item("c3", uploaded_at=None),
        ]
    }
    docs, after = read_page(answer(page))
    assert after is None
    assert [(d.remote_id, d.name, d.version) for d in docs] == [
        ("7", "2024", "2024-03-01"),
        ("c3", "c3", ""),
    ]
    assert docs[0].modified == datetime(2024, 3, 1, tzinfo=UTC)
    assert docs[1].modified is None


def test_both_paths_read_the_same_page_alike() -> None:
    results = [
        item(f"d{i}", name=f"r{i}.pdf", uploaded_at=f"2024-03-01T10:00:0{i}Z") for i in range(5)
    ]
    typed, _ = read_page(answer({"results": results, "next": None}))
    loose, _ = read_page(answer({"results": [*results, 1], "next": None}))  # 1: not typed
    assert typed == loose


@pytest.mark.parametrize("body", [b"<html>busy</html>", b"[1, 2]"])
def test_a_page_that_is_not_a_json_object_is_a_transient_error(body: bytes) -> None:
    with pytest.raises(TransientError):
        read_page(answer(body))


def test_listed_documents_and_their_copies_stay_out_of_the_garbage_collector() -> None:
    """A re-poll builds a million documents: none is tracked, even with metadata, nor its
    copy with a field replaced (tracked, they set off most of a pass's collections)."""
    docs, _ = read_page(answer({"results": [item("a1", name="Q1.pdf", uploaded_at="x")]}))
    with_metadata = msgspec.structs.replace(docs[0], metadata={"tags": ["q1"]}, attrs={"a": "b"})
    assert not any(gc.is_tracked(d) for d in (*docs, with_metadata))
