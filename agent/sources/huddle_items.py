"""Huddle JSON at the edge: links, dates, folder pages and the per-folder listing cache.

Everything here is pure and synchronous. Vendor field names (`links`, `rel`, `href`,
`updated`, ...) are read here and nowhere past this package: a paged-folder item becomes a
`Summary` (its `self` link and a `DocEntry` of what the item showed) or a child-folder URL,
a folder's listing becomes a `FolderCache` (kept as compact JSON in a state cursor), and a
`DocEntry` becomes the agent's `RemoteDocument`.

A summary may show as little as its `self` link (the Folder pages of the documentation show
no more); `DocEntry.looked_up` says that an entry was read from the Document resource,
and `reusable` decides when such an entry still answers for a later summary.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from agent.models import RemoteDocument
from agent.sources.vendor import parse_date

NO_PERMISSION = "no download permission"
OFFLINE = "offline-file"
OFFLINE_PREVIEW = "offline-file-preview"
CACHE_FORMAT = 2


# -- links and dates --------------------------------------------------------------------------


def link(body: Mapping[str, Any], rel: str) -> Mapping[str, Any] | None:
    """The first link with relation `rel` in a Huddle resource, or None."""
    links = body.get("links")
    if not isinstance(links, list):
        return None
    for item in links:
        if isinstance(item, dict) and item.get("rel") == rel and isinstance(item.get("href"), str):
            return item
    return None


def href(body: Mapping[str, Any], rel: str) -> str | None:
    found = link(body, rel)
    return str(found["href"]) if found is not None else None


def id_from_href(url: str) -> str:
    """A resource's id: the last path segment of its `self` link."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return segments[-1] if segments else url


def canonical_date(value: object) -> str:
    """One spelling per instant, whole seconds, so a switch of date format is not a change."""
    parsed = parse_date(value)
    if parsed is None:
        return str(value) if value is not None else ""
    return parsed.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def change_key(version: object, updated: object) -> str:
    """The version the engine compares: Huddle's version number plus the canonical `updated`."""
    number = str(version) if isinstance(version, int | str) and str(version) else "?"
    return f"{number}@{canonical_date(updated)}"


# -- documents --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocEntry:
    """One document as a listing shows it, free of vendor field names.

    `checked` is None for an entry taken from a folder's summary; for one read from the
    Document resource it is that answer's `Last-Modified` ("" when it sent none).
    """

    doc_id: str
    name: str
    version: str
    updated: str
    size: int | None = None
    content_url: str | None = None  # None: no download permission (or not shown)
    mime: str | None = None
    created: str = ""
    description: str = ""
    checked: str | None = None

    @property
    def looked_up(self) -> bool:
        return self.checked is not None

    def to_json(self) -> list[Any]:
        return [
            self.doc_id,
            self.name,
            self.version,
            self.updated,
            self.size,
            self.content_url,
            self.mime,
            self.created,
            self.description,
            self.checked,
        ]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> DocEntry:
        doc_id, name, version, updated, size, content, mime, created, description, checked = row
        return cls(
            str(doc_id),
            str(name),
            str(version),
            str(updated),
            size if isinstance(size, int) else None,
            content if isinstance(content, str) else None,
            mime if isinstance(mime, str) else None,
            str(created or ""),
            str(description or ""),
            checked if isinstance(checked, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """A document as a folder or paged folder lists it: its `self` link and what it showed."""

    url: str
    entry: DocEntry

    @property
    def complete(self) -> bool:
        """A summary with a `content` link needs nothing from the Document resource."""
        return self.entry.content_url is not None


def doc_entry(item: Mapping[str, Any], self_url: str | None = None) -> DocEntry | None:
    """A document resource or summary as a DocEntry (None without a `self` link)."""
    self_url = href(item, "self") or self_url
    if self_url is None:
        return None
    content = link(item, "content")
    title = str(item.get("title") or "")
    name = str(content.get("title") or "") if content is not None else ""
    name = name or _with_extension(title, item.get("extension")) or id_from_href(self_url)
    mime = (content.get("type") if content is not None else None) or item.get("mimeType")
    size = item.get("size")
    return DocEntry(
        doc_id=id_from_href(self_url),
        name=name,
        version=change_key(item.get("version"), item.get("updated")),
        updated=canonical_date(item.get("updated")),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        content_url=str(content["href"]) if content is not None else None,
        mime=str(mime) if isinstance(mime, str) and mime else None,
        created=canonical_date(item.get("created")),
        description=str(item.get("description") or ""),
    )


def summary(item: Mapping[str, Any]) -> Summary | None:
    """A folder's document item as a Summary (None without a `self` link)."""
    entry = doc_entry(item)
    url = href(item, "self")
    return Summary(url, entry) if entry is not None and url is not None else None


def reusable(shown: DocEntry, known: DocEntry | None) -> bool:
    """Whether an entry read from the Document resource still answers for this summary.

    Only when the summary shows `updated` equal to the entry's, and no other version
    number: a summary with no dates (only `self`) must be asked again.
    """
    if known is None or not known.looked_up or not shown.updated:
        return False
    number = _version_number(shown.version)
    return shown.updated == known.updated and number in ("?", _version_number(known.version))


def _version_number(version: str) -> str:
    return version.partition("@")[0]


def _with_extension(title: str, extension: object) -> str:
    if not title or not isinstance(extension, str) or not extension:
        return title
    suffix = "." + extension.lstrip(".")
    return title if title.lower().endswith(suffix.lower()) else title + suffix


def rendition_name(name: str, mime: str) -> str:
    """The file name of a conversion: `report.docx` -> `report.pdf` for application/pdf."""
    extension = mimetypes.guess_extension(mime, strict=False)
    if extension is None:
        extension = "." + mime.rpartition("/")[2].split("+")[0].split(".")[-1]
    stem = PurePosixPath(name).stem if PurePosixPath(name).suffix else name
    return f"{stem}{extension}"


def preview_reason(reason: str) -> str:
    """The `x-download-reason` of a rendition kept for preview beside an original.

    Automatic offline copies have a preview counterpart; any other configured reason is
    the user's choice for every download and is kept.
    """
    return OFFLINE_PREVIEW if reason == OFFLINE else reason


def remote_documents(
    entry: DocEntry, folder: tuple[str, ...], reason: str, formats: Sequence[str]
) -> Iterator[RemoteDocument]:
    """The original document and, when it can be downloaded, one rendition per format."""
    modified = parse_date(entry.updated)
    metadata = {
        "title": entry.name,
        "description": entry.description,
        "mime_type": entry.mime,
        "created": entry.created,
        "updated": entry.updated,
        "size": entry.size,
    }
    attrs = {"x-download-reason": reason}
    yield RemoteDocument(
        remote_id=entry.doc_id,
        version=entry.version,
        name=entry.name,
        folder=folder,
        size=entry.size,
        modified=modified,
        locator=entry.content_url,
        attrs=attrs,
        skip_reason=None if entry.content_url else NO_PERMISSION,
        metadata=metadata,
    )
    if entry.content_url is None:
        return
    for mime in formats:
        if entry.mime is not None and mime.lower() == entry.mime.lower():
            continue  # asking for the original type returns the original
        yield RemoteDocument(
            remote_id=f"{entry.doc_id}#{mime}",
            version=entry.version,
            name=rendition_name(entry.name, mime),
            folder=folder,
            modified=modified,
            locator=entry.content_url,
            attrs={"accept": mime, "x-download-reason": preview_reason(reason)},
            metadata={**metadata, "mime_type": mime, "converted_from": entry.mime},
        )


# -- folders ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderPage:
    """One page of a paged folder: child folder URLs, document summaries, the `next` link."""

    folders: tuple[str, ...]
    documents: tuple[Summary, ...]
    next_url: str | None


def folder_page(body: Mapping[str, Any]) -> FolderPage:
    folders: list[str] = []
    documents: list[Summary] = []
    items = body.get("items")
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "folder":
            child = href(item, "self")
            if child is not None:
                folders.append(child)
        elif item.get("type") == "document":
            shown = summary(item)
            if shown is not None:
                documents.append(shown)
    return FolderPage(tuple(folders), tuple(documents), href(body, "next"))


def inline_page(body: Mapping[str, Any]) -> FolderPage:
    """A folder's inline child lists, for a folder that links no paged `collection` view."""
    items: list[dict[str, Any]] = []
    for key, kind in (("folders", "folder"), ("documents", "document")):
        children = body.get(key)
        if isinstance(children, list):
            items.extend({**c, "type": kind} for c in children if isinstance(c, dict))
    return folder_page({"items": items})


@dataclass(frozen=True, slots=True)
class FolderCache:
    """What one folder held when last listed, replayed when it answers 304 Not Modified.

    `title` is the folder's path component (a workspace root's is the workspace title).
    """

    last_modified: str | None
    title: str
    folders: tuple[str, ...] = ()
    documents: tuple[DocEntry, ...] = field(default_factory=tuple)

    def encode(self) -> str:
        data = {
            "v": CACHE_FORMAT,
            "lm": self.last_modified,
            "t": self.title,
            "f": list(self.folders),
            "d": [d.to_json() for d in self.documents],
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, text: str | None) -> FolderCache | None:
        """The cache in `text`, or None when absent, unreadable or of another format."""
        if not text:
            return None
        try:
            data = json.loads(text)
            if data.get("v") != CACHE_FORMAT:
                return None
            return cls(
                data["lm"] if isinstance(data["lm"], str) else None,
                str(data["t"]),
                tuple(str(f) for f in data["f"]),
                tuple(DocEntry.from_json(row) for row in data["d"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def cache_key(folder_url: str) -> str:
    """The state-cursor key of a folder's cache (bounded length, whatever the URL)."""
    return "folder:" + hashlib.sha256(folder_url.encode()).hexdigest()[:32]


def unique_label(label: str, root_id: str, used: set[str]) -> str:
    """A root's first path component, made distinct from the roots already placed."""
    label = label.strip() or root_id
    if label.casefold() in used:
        label = f"{label} ({root_id})"
    used.add(label.casefold())
    return label
