"""The journal events a write to the documents table records: added or updated (with a
kept local copy), failed, removed, file removed, listed again, moved. Pure builders over
rows and items."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agent.models import DocState, EventType, RemoteDocument
from agent.state.journal import NewEvent

if TYPE_CHECKING:
    from agent.state.documents import Mirrored


def mirrored_events(
    source: str,
    item: Mirrored,
    before: Mapping[str, tuple[str, str | None]],
    kept: Mapping[str, str],
    note: Mapping[str, object],
) -> list[NewEvent]:
    doc = item.doc
    change = added(
        source, doc.remote_id, doc.version, item.rel_path, size=item.size, digest=item.digest
    )
    events = [added_or_updated(change, before, note)]
    if doc.remote_id in kept:
        folder = item.rel_path.rpartition("/")[0]
        copy = NewEvent(
            EventType.LOCAL_COPY_KEPT,
            source,
            doc.remote_id,
            doc.version,
            f"{folder}/{kept[doc.remote_id]}" if folder else kept[doc.remote_id],
            data={"document_path": item.rel_path},
        )
        events.insert(0, copy)
    return events


def added(
    source: str, remote_id: str, version: str, rel_path: str, *, size: int, digest: str
) -> NewEvent:
    return NewEvent(EventType.ADDED, source, remote_id, version, rel_path, size, digest)


def added_or_updated(
    change: NewEvent, before: Mapping[str, tuple[str, str | None]], note: Mapping[str, object]
) -> NewEvent:
    """`document.updated` when the agent had mirrored a file of the document before."""
    old_version, old_digest = before.get(change.document_id or "", ("", None))
    if old_digest is None:
        return replace(change, data=note)
    data = {**note, "previous_version": old_version}
    return replace(change, type=EventType.UPDATED, data=data)


def failed_event(
    source: str, doc: RemoteDocument, rel_path: str | None, reason: str | None
) -> NewEvent:
    data = {"error": reason or "failed"}
    return NewEvent(EventType.FAILED, source, doc.remote_id, doc.version, rel_path, data=data)


def removed_event(source: str, row: Any) -> NewEvent:
    pruned = bool(row.prune and row.rel_path and row.state == DocState.MIRRORED)
    return file_removed_event(source, row, {"file_deleted": pruned})


def file_removed_event(source: str, row: Any, data: Mapping[str, object]) -> NewEvent:
    return _of_row(EventType.REMOVED, source, row, {"file_deleted": True, **data})


def returned_event(source: str, row: Any) -> NewEvent:
    """A removed document listed again whose file is still in place: in the mirror again."""
    return _of_row(EventType.ADDED, source, row, {"listed_again": True})


def _of_row(kind: EventType, source: str, row: Any, data: Mapping[str, object]) -> NewEvent:
    """An event about the file a row records."""
    return NewEvent(
        kind, source, row.remote_id, row.version, row.rel_path, row.size, row.digest, data=data
    )


def moved_event(source: str, row: Any, rel_path: str) -> NewEvent:
    return NewEvent(
        EventType.MOVED,
        source,
        row.remote_id,
        row.version,
        rel_path,
        row.size,
        row.digest,
        data={"old_path": row.rel_path},
    )
