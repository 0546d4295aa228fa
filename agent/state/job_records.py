"""A download job's records: its lease, a claim of it, its status view, and how a row of
the `jobs` table maps to them and is written from a listed document."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.models import JobSpec, JobState, RemoteDocument


@dataclass(frozen=True, slots=True)
class JobLease:
    """One claim of a job: the fence of every write its holder makes."""

    job_id: int
    owner: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job leased to this replica: what to download, and what an earlier attempt left.

    `spec.temp_name` is this attempt's staging file. `partial` names the file holding the
    bytes persisted so far (`spec.validator`, `spec.digest` describe it), when it is not
    this attempt's own; `holder_may_live` says its writer did not release the job (its
    lease expired), so it may still be writing to it.
    """

    spec: JobSpec
    doc: RemoteDocument
    lease: JobLease
    partial: str | None
    holder_may_live: bool


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the status read model reports it (plain data, no user-facing words)."""

    source: str
    remote_id: str
    rel_path: str
    state: str
    bytes_done: int
    expected_size: int | None
    attempts: int
    last_error: str | None
    error_kind: str | None
    next_retry_at: float | None
    owner: str | None = None
    lease_until: float | None = None


def partial_name(source: str, job_id: int, attempt: int) -> str:
    """The staging file of one attempt at a job (ids are never reused, attempts only grow)."""
    return f"{source}-{job_id}.{attempt}.part"


def path_key(rel_path: str) -> str:
    """How a mirror path is compared for claims: casefolded, for file systems that fold case."""
    return rel_path.casefold()


def queued_values(doc: RemoteDocument, rel_path: str) -> dict[str, Any]:
    return {
        "rel_path": rel_path,
        "path_key": path_key(rel_path),
        "doc_json": _doc_json(doc),
        "owner": None,
        "lease_until": None,
    }


def new_job(source: str, doc: RemoteDocument, rel_path: str, now: float) -> dict[str, Any]:
    return {
        "source": source,
        "remote_id": doc.remote_id,
        "version": doc.version,
        "rel_path": rel_path,
        "path_key": path_key(rel_path),
        "attrs_json": json.dumps(dict(doc.attrs), sort_keys=True),
        "doc_json": _doc_json(doc),
        "state": JobState.QUEUED,
        "expected_size": doc.size,
        "bytes_done": 0,
        "temp_name": "",  # no bytes yet; each attempt names its own file
        "attempts": 0,
        "attempt": 0,
        "created_at": now,
        "updated_at": now,
    }


def _doc_json(doc: RemoteDocument) -> str:
    """The listed document as any replica needs it to download (attrs are kept apart)."""
    fields = {
        "name": doc.name,
        "folder": list(doc.folder),
        "size": doc.size,
        "modified": doc.modified.isoformat() if doc.modified else None,
        "locator": doc.locator,
        "external_url": doc.external_url,
        "metadata": doc.metadata,
        "prune": doc.prune_when_removed,
    }
    return json.dumps(fields, sort_keys=True, default=str)


def _document(row: Any, attrs: Mapping[str, str]) -> RemoteDocument:
    fields = json.loads(row.doc_json)
    modified = fields["modified"]
    return RemoteDocument(
        remote_id=row.remote_id,
        version=row.version,
        name=fields["name"],
        folder=tuple(fields["folder"]),
        size=fields["size"],
        modified=datetime.fromisoformat(modified) if modified else None,
        locator=fields["locator"],
        attrs=attrs,
        external_url=fields["external_url"],
        metadata=fields["metadata"],
        prune_when_removed=fields["prune"],
    )


def claimed(row: Any, previous_owner: str | None) -> Claimed:
    """A claimed row; `previous_owner` is who held it before (None: nobody, or, on SQLite,
    a previous process: the instance lock says it is gone)."""
    own = partial_name(row.source, row.id, row.attempt)
    lease = JobLease(row.id, row.owner, row.attempt)
    partial = row.temp_name if row.temp_name and row.temp_name != own else None
    may_live = previous_owner is not None and previous_owner != row.owner
    spec = job_spec(row, own)
    return Claimed(spec, _document(row, spec.attrs), lease, partial, holder_may_live=may_live)


def by_id(job: Claimed) -> int:
    return job.lease.job_id


def job_spec(row: Any, temp_name: str) -> JobSpec:
    return JobSpec(
        job_id=row.id,
        source=row.source,
        remote_id=row.remote_id,
        version=row.version,
        rel_path=row.rel_path,
        attrs=json.loads(row.attrs_json or "{}"),
        expected_size=row.expected_size,
        validator=row.validator,
        temp_name=temp_name,
        digest=row.digest,
    )


def job_view(r: Any) -> JobView:
    return JobView(
        r.source,
        r.remote_id,
        r.rel_path,
        r.state,
        r.bytes_done,
        r.expected_size,
        r.attempts,
        r.last_error,
        r.error_kind,
        r.next_retry_at,
        r.owner,
        r.lease_until,
    )
