"""OpenCDE data at the edge: the user's selection, DocumentVersions and the polling caches.

Everything here is pure and synchronous except the two selection cursor helpers. A
DocumentVersion becomes a `VersionInfo` (also the cached shape), and a `VersionInfo` the
agent's `RemoteDocument`; the latest version of a document keeps its name, older ones kept
by `keep_versions` get the version in theirs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from agent.errors import FatalSourceError
from agent.models import RemoteDocument
from agent.sources.vendor import load_json, parse_date, text
from agent.state.source_state import SourceState

SELECTION = "selection"


# ---------------------------------------------------------------- the selection


@dataclass(frozen=True, slots=True)
class SelectedDocument:
    """One document the user picked in the CDE (title and name as they were then)."""

    document_id: str
    title: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """The set of selected documents, in the order they were first picked."""

    documents: tuple[SelectedDocument, ...] = ()
    server_context: str | None = None

    def ids(self) -> list[str]:
        return [d.document_id for d in self.documents]

    def merged(
        self, picked: Iterable[SelectedDocument], server_context: str | None
    ) -> tuple[Selection, list[str]]:
        """The selection with `picked` added (known ones refreshed), and the ids that are new."""
        by_id = {d.document_id: d for d in self.documents}
        added = [d.document_id for d in picked if d.document_id not in by_id]
        by_id.update({d.document_id: d for d in picked})
        context = server_context if server_context is not None else self.server_context
        return Selection(tuple(by_id.values()), context), list(dict.fromkeys(added))

    def without(self, document_id: str) -> Selection:
        kept = tuple(d for d in self.documents if d.document_id != document_id)
        return replace(self, documents=kept)


async def load_selection(state: SourceState, source: str = "") -> Selection:
    raw = await state.load_cursor(SELECTION)
    if raw is None:
        return Selection()
    data = load_json(raw)
    try:
        assert isinstance(data, dict)
        docs = tuple(SelectedDocument(**d) for d in data.get("documents") or ())
        context = data.get("server_context")
        return Selection(docs, context if isinstance(context, str) else None)
    except (AssertionError, TypeError) as exc:
        message = f"the stored selection is unreadable: run `sync-agent select {source}`"
        raise FatalSourceError(source, message) from exc


async def save_selection(state: SourceState, selection: Selection) -> None:
    data = {
        "server_context": selection.server_context,
        "documents": [asdict(d) for d in selection.documents],
    }
    await state.save_cursor(SELECTION, json.dumps(data, separators=(",", ":")))


# ---------------------------------------------------------------- DocumentVersion


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """The parts of a DocumentVersion the agent uses; also the cached (cursor) shape."""

    document_id: str
    index: int
    number: str = ""
    title: str = ""
    name: str = ""
    size: int | None = None
    created: str = ""
    download: str | None = None
    all_versions: str | None = None
    details: str | None = None


def parse_version(item: object) -> VersionInfo | None:
    """A DocumentVersion, or None when it lacks a document_id or an integer version_index."""
    if not isinstance(item, dict):
        return None
    document_id, index = item.get("document_id"), item.get("version_index")
    if not isinstance(document_id, str) or not document_id:
        return None
    if not isinstance(index, int) or isinstance(index, bool):
        return None
    described = item.get("file_description")
    described = described if isinstance(described, dict) else {}
    links = item.get("links")
    links = links if isinstance(links, dict) else {}
    title = _text(item.get("title"))
    return VersionInfo(
        document_id=document_id,
        index=index,
        number=_text(item.get("version_number")),
        title=title,
        name=_text(described.get("name")) or title or document_id,
        size=_size(described.get("size_in_bytes")),
        created=_text(item.get("creation_date")),
        download=_link(links, "document_version_download"),
        all_versions=_link(links, "document_versions"),
        details=_link(links, "document_details"),
    )


def latest_per_document(versions: Iterable[VersionInfo]) -> dict[str, VersionInfo]:
    """The highest version_index of each document, whatever the order they came in."""
    latest: dict[str, VersionInfo] = {}
    for version in versions:
        known = latest.get(version.document_id)
        if known is None or version.index > known.index:
            latest[version.document_id] = version
    return latest


def previous_versions(
    versions: Iterable[VersionInfo], latest: VersionInfo, keep: int
) -> list[VersionInfo]:
    """The `keep - 1` newest versions of `latest`'s document older than it, newest first."""
    older = {
        v.index: v
        for v in versions
        if v.document_id == latest.document_id and v.index < latest.index
    }
    return [older[i] for i in sorted(older, reverse=True)][: max(0, keep - 1)]


def versioned_name(name: str, number: str) -> str:
    """`plan.pdf` + `v3.0` -> `plan (v3.0).pdf`: the extension stays last."""
    label = number.replace("/", "-").replace("\\", "-").strip()
    stem, ext = os.path.splitext(name)
    return f"{stem} ({label}){ext}"


def _text(value: object) -> str:
    return text(value) or ""


def _size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _link(links: Mapping[str, object], key: str) -> str | None:
    link = links.get(key)
    url = link.get("url") if isinstance(link, dict) else link
    return url if isinstance(url, str) and url else None


def _version_from_json(data: object) -> VersionInfo | None:
    try:
        return VersionInfo(**data) if isinstance(data, dict) else None
    except TypeError:
        return None


# ---------------------------------------------------------------- polling caches


@dataclass
class PollCache:
    """The last `document-versions` answer: the ids asked for, its ETag, the latest versions."""

    ids: list[str]
    etag: str | None
    latest: dict[str, VersionInfo]

    def to_json(self) -> str:
        latest = [asdict(v) for v in self.latest.values()]
        return json.dumps({"ids": self.ids, "etag": self.etag, "latest": latest})

    @classmethod
    def from_json(cls, raw: str | None) -> PollCache | None:
        data = load_json(raw)
        if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
            return None
        parsed = [_version_from_json(v) for v in data.get("latest") or ()]
        if any(v is None for v in parsed):
            return None
        etag = data.get("etag")
        latest = {v.document_id: v for v in parsed if v is not None}
        return cls(list(data["ids"]), etag if isinstance(etag, str) else None, latest)


@dataclass
class HistoryCache:
    """Previous versions per document, valid while the latest index and `keep` are unchanged."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: bool = False

    def get(self, latest: VersionInfo, keep: int) -> list[VersionInfo] | None:
        entry = self.entries.get(latest.document_id)
        if not entry or entry.get("latest") != latest.index or entry.get("keep") != keep:
            return None
        parsed = [_version_from_json(v) for v in entry.get("previous") or ()]
        return None if any(v is None for v in parsed) else [v for v in parsed if v is not None]

    def put(self, latest: VersionInfo, keep: int, previous: list[VersionInfo]) -> None:
        saved = {"latest": latest.index, "keep": keep, "previous": [asdict(v) for v in previous]}
        self.entries[latest.document_id] = saved
        self.changed = True

    def prune(self, document_ids: Iterable[str]) -> None:
        wanted = set(document_ids)
        for stale in [d for d in self.entries if d not in wanted]:
            del self.entries[stale]
            self.changed = True

    @classmethod
    def from_json(cls, raw: str | None) -> HistoryCache:
        data = load_json(raw)
        return (
            cls({k: v for k, v in data.items() if isinstance(v, dict)})
            if isinstance(data, dict)
            else cls()
        )


def to_remote(version: VersionInfo, *, older: bool = False) -> RemoteDocument:
    """The agent's view of a version: the latest under its own name, older ones suffixed."""
    remote_id = f"{version.document_id}@{version.index}" if older else version.document_id
    name = version.name
    if older:
        name = versioned_name(name, version.number or f"v{version.index}")
    metadata = {
        "document_id": version.document_id,
        "title": version.title,
        "version_number": version.number,
        "version_index": version.index,
        "creation_date": version.created,
        "details_url": version.details,
    }
    return RemoteDocument(
        remote_id=remote_id,
        version=str(version.index),
        name=name,
        size=version.size,
        modified=parse_date(version.created),
        locator=version.download,
        attrs={"download_url": version.download} if version.download else {},
        skip_reason=None if version.download else "no download link",
        metadata=metadata,
        prune_when_removed=older,  # versions beyond keep_versions leave the mirror
    )
