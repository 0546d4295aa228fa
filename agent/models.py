"""The agent's own data types: what every source produces and the engine consumes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import msgspec

EMPTY: Mapping[str, str] = MappingProxyType({})


class DocState(StrEnum):
    """Where a document stands in the mirror."""

    PENDING = "pending"  # known, not mirrored yet (or a newer version is waiting)
    MIRRORED = "mirrored"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to download by design (URL-only, no permission, no content)
    REMOVED = "removed"  # gone from the remote listing; the mirrored file is kept
    DELETED_LOCALLY = "deleted-locally"  # deleted by hand, on_local_delete = "forget"


class JobState(StrEnum):
    """Where a download job stands."""

    QUEUED = "queued"
    ACTIVE = "active"
    RETRY = "retry"  # waiting for its next attempt
    FAILED = "failed"  # permanent failure, retried only on a slow schedule


class EventType(StrEnum):
    """What a change-journal entry says happened (`agent.state.journal`)."""

    ADDED = "document.added"  # a document's first file is in the mirror
    UPDATED = "document.updated"  # a new version replaced the file
    MOVED = "document.moved"  # renamed or moved remotely: the file followed
    REMOVED = "document.removed"  # gone from the listing (the file is kept unless pruned)
    LOCAL_COPY_KEPT = "document.local_copy_kept"  # a local edit was moved aside, not lost
    FAILED = "document.failed"  # the download gave up after its retries
    PASS_COMPLETED = "source.pass_completed"  # noqa: S105 - a pass ended; counts in `data`


class RemoteDocument(msgspec.Struct, frozen=True, gc=False):
    """One downloadable thing as a source lists it, already free of vendor field names.

    `remote_id` is unique within the source; `version` changes whenever the content does.
    `name` and `folder` are untrusted: the engine sanitises them into a mirror path.
    `locator` tells the source where the content is (opaque to the engine); `attrs` are
    request attributes a download job keeps for its whole life, resumes included.

    Not tracked by the garbage collector (`gc=False`): a re-poll lists a million, and
    tracked they set off most of its collections. Being frozen, one can take part in a
    reference cycle only through a mutable value it holds (`metadata`, `attrs`) coming to
    hold the document itself, which nothing does.
    """

    remote_id: str
    version: str
    name: str
    folder: tuple[str, ...] = ()
    size: int | None = None
    modified: datetime | None = None
    locator: str | None = None
    attrs: Mapping[str, str] = EMPTY
    skip_reason: str | None = None
    external_url: str | None = None
    metadata: Mapping[str, Any] | None = None
    prune_when_removed: bool = False  # delete the mirrored file once the listing drops it


@dataclass(frozen=True, slots=True)
class KnownDocument:
    """What the state database remembers of a document, as the planner needs it."""

    remote_id: str
    version: str
    rel_path: str | None
    state: DocState
    size: int | None = None
    metadata_hash: str | None = None
    waiting_version: str | None = None  # a failed job for this version waits for its retry time
    prune: bool = False  # the source asked for the file to go when the document does
    mtime_ns: int | None = None  # of the file the agent wrote, to notice local edits
    reason: str | None = None  # why it was skipped (or failed), as recorded


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A download job as the transfer layer sees it; persisted so it survives restarts."""

    job_id: int
    source: str
    remote_id: str
    version: str
    rel_path: str
    attrs: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    expected_size: int | None = None
    validator: str | None = None
    temp_name: str = ""
    digest: str | None = None  # "<algorithm>:<hex>", set once verified for the rename


@dataclass(frozen=True, slots=True)
class Fetched:
    """A verified temporary file ready to be flushed and renamed into the mirror."""

    temp_path: str
    size: int
    digest: str  # "<algorithm>:<hex>" (agent/transfer/digests.py)
    validator: str | None


@dataclass(frozen=True, slots=True)
class PassStats:
    """What one pass over a source did."""

    listed: int = 0
    downloaded: int = 0
    adopted: int = 0  # files already in the mirror recorded without a download
    moved: int = 0
    skipped: int = 0
    removed: int = 0
    failed: int = 0
    unchanged: int = 0
    bytes: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = ()  # what the listing had to tell the user (nothing selected)


def metadata_digest(metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """Canonical JSON of a metadata mapping and its sha256 (None for no metadata)."""
    if metadata is None:
        return None, None
    text = json.dumps(metadata, sort_keys=True, ensure_ascii=False, indent=2, default=str)
    return text, hashlib.sha256(text.encode()).hexdigest()
