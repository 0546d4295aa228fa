"""The journal's entries as others read them: JSON, CloudEvents 1.0, and a line for a person.

One JSON form serves `GET /events`, `sync-agent events --json` and the `on_change` command's
stdin; a webhook's body is a CloudEvent (structured mode) whose `id` is the entry's id, sent
as `webhook-id` too, and whose `data` is that same JSON form without the envelope's fields.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from agent.models import EventType
from agent.state.journal import Event

CLOUDEVENTS_TYPE = "application/cloudevents+json"
COUNTS = ("downloaded", "moved", "removed", "skipped", "failed")


def iso_time(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds: 2024-05-01T12:00:03.250Z."""
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def event_json(event: Event) -> dict[str, Any]:
    """An entry as JSON: the form of `/events`, `events --json` and the hook's stdin."""
    shown = {field.name: getattr(event, field.name) for field in fields(event)}
    return {**shown, "time": iso_time(event.time), "data": dict(event.data)}


def cloud_event(event: Event) -> dict[str, Any]:
    """A CloudEvents 1.0 event in structured mode: `subject` is the path in the mirror."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/sync-agent/sources/{event.source}",
        "type": event.type,
        "time": iso_time(event.time),
        "datacontenttype": "application/json",
    }
    if event.path is not None:
        body["subject"] = event.path
    envelope = ("id", "type", "time")
    body["data"] = {k: v for k, v in event_json(event).items() if k not in envelope}
    return body


def compact(value: Any) -> str:
    """JSON without spaces: what is signed is exactly what is sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def human_line(event: Event) -> str:
    """One line for a terminal: time, seq, what happened, where."""
    when = datetime.fromtimestamp(event.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    what = event.type.partition(".")[2].replace("_", " ")
    return f"{when}  #{event.seq:<6} {what:<17} {event.source:<12} {_detail(event)}"


def _detail(event: Event) -> str:
    data = event.data
    if event.type == EventType.PASS_COMPLETED:
        return ", ".join(f"{data.get(k, 0)} {k}" for k in COUNTS)
    if event.type == EventType.MOVED:
        return f"{data.get('old_path')} -> {event.path}"
    if event.type == EventType.FAILED:
        return f"{event.path or event.document_id}: {data.get('error')}"
    if event.type == EventType.LOCAL_COPY_KEPT:
        return f"{data.get('document_path')}: local edit kept as {event.path}"
    size = f" ({event.size} bytes)" if event.size is not None else ""
    return f"{event.path or event.document_id}{size}"
