"""The OpenCDE sandbox's in-memory documents and versions, and their DocumentVersion JSON.

Versions are immutable, as in a CDE: new content means a new version with a higher
`version_index`. Indexes jump by 1 or 2 so clients meet the gaps the spec allows. Demo
documents carry only a size and a seed; their bytes are made on demand, so a listing of
100,000 documents costs little memory.
"""

from __future__ import annotations

import hashlib
import mimetypes
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

DEMO_EPOCH = datetime(2024, 1, 8, 9, 0, tzinfo=UTC).timestamp()
DEMO_TITLES = (
    "Architectural model",
    "Structural model",
    "MEP coordination model",
    "Ground floor plan",
    "Fire safety concept",
    "Site survey",
    "Facade details",
    "Grundriss EG Übersicht",
    "Door schedule",
    "Clash report",
)
DEMO_EXTENSIONS = (".ifc", ".pdf", ".ifczip", ".dwg", ".docx", ".xlsx", ".bcfzip", ".txt")

JsonObject = dict[str, Any]


@dataclass
class Version:
    """One immutable version of a document."""

    index: int
    number: str
    name: str
    size: int
    created: float
    data: bytes | None = None  # None: made on demand by `content()`
    seed: int = 0

    def content(self, document_id: str) -> bytes:
        """The version's bytes: given ones, or deterministic filler of `size` bytes."""
        if self.data is not None:
            return self.data
        line = f"{document_id} {self.number} {self.name} seed={self.seed}\n".encode()
        return (line * (self.size // len(line) + 1))[: self.size]

    @property
    def content_type(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"


@dataclass
class Document:
    """A document and its versions, oldest first."""

    document_id: str
    title: str
    versions: list[Version] = field(default_factory=list)

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def version(self, index: int) -> Version | None:
        return next((v for v in self.versions if v.index == index), None)


def next_index(current: int, count: int) -> int:
    """The index after `current` for the `count`-th version: alternately +2 and +1."""
    return current + (2 if count % 2 == 1 else 1)


OFFSET = timezone(timedelta(hours=1))  # RFC 3339 allows any offset, not only `Z`


def rfc3339(timestamp: float, *, offset: bool = False) -> str:
    """`2022-02-14T08:02:53.866Z`, the examples' shape, or the same instant at +01:00."""
    moment = datetime.fromtimestamp(timestamp, OFFSET if offset else UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stable_uuid(text: str) -> str:
    """A version-4-shaped UUID derived from `text`, so ids repeat across runs."""
    digest = hashlib.sha256(text.encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))


@dataclass
class DocumentStore:
    """Every document the sandbox serves, in insertion order."""

    clock: Callable[[], float]
    documents: dict[str, Document] = field(default_factory=dict)
    _added: int = 0

    def add(self, title: str, name: str, data: bytes) -> str:
        self._added += 1
        document_id = stable_uuid(f"opencde-document:{self._added}")
        first = Version(1, "v1.0", name, len(data), self.clock(), data)
        self.documents[document_id] = Document(document_id, title, [first])
        return document_id

    def publish(self, document_id: str, data: bytes, name: str | None = None) -> int:
        document = self.require(document_id)
        latest = document.latest
        count = len(document.versions)
        index = next_index(latest.index, count)
        number = f"v{count + 1}.0"
        created = max(self.clock(), latest.created + 0.001)
        document.versions.append(
            Version(index, number, name or latest.name, len(data), created, data)
        )
        return index

    def remove(self, document_id: str) -> None:
        self.require(document_id)
        del self.documents[document_id]

    def require(self, document_id: str) -> Document:
        document = self.documents.get(document_id)
        if document is None:
            raise KeyError(f"no OpenCDE sandbox document {document_id!r}")
        return document

    def get(self, document_id: str) -> Document | None:
        return self.documents.get(document_id)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents.values())

    def __len__(self) -> int:
        return len(self.documents)

    def populate_demo(self, n: int, seed: int) -> list[str]:
        """Add `n` deterministic documents with 1-3 versions each; return their ids."""
        rng = random.Random(seed)
        ids = []
        for i in range(n):
            document = _demo_document(rng, seed, i)
            self.documents[document.document_id] = document
            ids.append(document.document_id)
        return ids


def _demo_document(rng: random.Random, seed: int, i: int) -> Document:
    document_id = stable_uuid(f"opencde-demo:{seed}:{i}")
    title = f"{DEMO_TITLES[i % len(DEMO_TITLES)]} {i + 1:03d}"
    name = f"{title.replace(' ', '_')}{DEMO_EXTENSIONS[rng.randrange(len(DEMO_EXTENSIONS))]}"
    versions: list[Version] = []
    index = 1
    for count in range(rng.choice((1, 1, 2, 3))):
        if count:
            index = next_index(index, count)
        created = DEMO_EPOCH + i * 60 + count * 86_400 + rng.randrange(1000) / 1000
        size = rng.randrange(256, 192 * 1024)
        number = f"v{count + 1}.0"
        versions.append(Version(index, number, name, size, created, None, rng.getrandbits(32)))
    return Document(document_id, title, versions)


@dataclass(frozen=True)
class LinkBuilder:
    """Absolute URLs and DocumentVersion JSON of one running sandbox.

    `details_link` adds the optional `document_details` link; `dates_with_offset` writes
    dates at +01:00 instead of `Z`.
    """

    base_url: str
    api_prefix: str
    details_link: bool = True
    dates_with_offset: bool = False

    @property
    def api(self) -> str:
        return f"{self.base_url}{self.api_prefix}"

    def versions(self, document_id: str) -> str:
        return f"{self.api}/documents/{document_id}/versions"

    def version(self, document_id: str, index: int) -> str:
        return f"{self.versions(document_id)}/{index}"

    def details(self, document_id: str) -> str:
        return f"{self.base_url}/ui/documents/{document_id}"

    def version_json(self, document: Document, version: Version) -> JsonObject:
        """A spec-shaped DocumentVersion."""
        own = self.version(document.document_id, version.index)
        links = {
            "document_version": {"url": own},
            "document_version_metadata": {"url": f"{own}/metadata"},
            "document_version_download": {"url": f"{own}/download"},
            "document_versions": {"url": self.versions(document.document_id)},
        }
        if self.details_link:
            links["document_details"] = {"url": self.details(document.document_id)}
        return {
            "links": links,
            "version_number": version.number,
            "version_index": version.index,
            "creation_date": rfc3339(version.created, offset=self.dates_with_offset),
            "title": document.title,
            "file_description": {"name": version.name, "size_in_bytes": version.size},
            "document_id": document.document_id,
        }


def metadata_json(document: Document, version: Version) -> JsonObject:
    """A spec-shaped DocumentMetadata: every value is a list of strings."""
    entries = [
        ("Title", [document.title], "string"),
        ("File name", [version.name], "string"),
        ("Version", [version.number], "string"),
        ("Created", [rfc3339(version.created)], "date-time"),
        ("Size", [str(version.size)], "integer64"),
        ("Content type", [version.content_type], "string"),
        ("Published", ["true"], "boolean"),
    ]
    return {
        "metadata": [
            {"name": name, "value": value, "data_type": kind} for name, value, kind in entries
        ]
    }
