"""On-demand fetch: one document now, outside the schedule, through the pass's own path.

The document is found in its source's listing (read until it appears), placed where a pass
would place it (its mirrored path, else the path the planner's rule gives it), and its job is
queued and leased to this replica in one transaction, so no worker claims it in between. It
is downloaded with its own `x-download-reason` for this attempt (Huddle's audit trail reads
it), verified, renamed into place and committed by a `Committer` like a pass's, which
journals it (`data.on_demand`, `data.reason`). A job another replica holds under a live
lease is waited for (its commit is the fetch's result).

A document the source's filters leave out (`agent.engine.filters`) is refused
(`FilteredOutError`, naming the rule) before anything is queued: the mirror holds what a pass
would keep there, and a file fetched past its filters would be left stale by every later
pass, or deleted again under `on_filter_exclude = "remove"`. A size the listing does not
give is taken from what the state learned of that version (its mirrored file, or a pass
that skipped it by a size rule that still reads the same), else checked when the download
starts, as in a pass.

A failed download leaves the job to be resumed by the next pass, and is journaled as
`document.failed`. A download whose commit fails (the state database or the mirror refused
the write) is reported as that, its job given back with the verified file, which the next
pass puts in place.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from msgspec.structs import replace

from agent.engine.filters import (
    FILTER_PREFIX,
    Filters,
    excluded_by,
    path_in_source,
    recall_size_exclusions,
    size_rule,
    sized,
)
from agent.engine.handoff import size_of
from agent.engine.paths import mirror_path
from agent.engine.plan import assign_one
from agent.engine.sync import Engine, SourceRuntime
from agent.errors import (
    AgentError,
    CorruptStateError,
    DocumentError,
    MirrorError,
    PermanentError,
    SkipDocument,
    StateError,
    describe_error,
)
from agent.models import DocState, EventType, KnownDocument, RemoteDocument
from agent.state.jobs import Claimed, path_key
from agent.state.journal import NewEvent
from agent.state.store import Store

REASON_ATTR = "x-download-reason"
WAIT_POLL = 0.2  # seconds between looks while another replica holds the job


class NotListedError(AgentError):
    """The source does not list the document (or lists it without content to download)."""

    def __init__(self, source: str, remote_id: str, why: str) -> None:
        super().__init__(f"{source}: document {remote_id!r} {why}")
        self.source = source
        self.remote_id = remote_id


class FilteredOutError(NotListedError):
    """The source's filters leave the document out: `get` fetches only what a pass would."""

    def __init__(self, source: str, remote_id: str, path: str, rule: str) -> None:
        why = (
            f"({path}) is left out by the source's filters: {rule}; a pass would not mirror "
            "it, so it is not fetched (change the source's include, exclude, min_size or "
            "max_size to have it)"
        )
        super().__init__(source, remote_id, why)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A document fetched on demand: where it is in the mirror, and what it holds."""

    source: str
    remote_id: str
    version: str
    rel_path: str
    size: int
    digest: str  # "<algorithm>:<hex>"


async def fetch_now(engine: Engine, rt: SourceRuntime, remote_id: str, reason: str) -> FetchResult:
    """Download one document now (the caller holds the source's pass lock)."""
    name, store = rt.config.name, engine.store
    doc = await _listed(rt, remote_id)
    await _refuse_filtered(store, rt, doc)
    rel_path = await place(store, name, doc)
    deadline = time.monotonic() + 3 * engine.leases.seconds
    while True:
        job = await store.jobs.claim_document(
            engine.leases.owner, name, doc, rel_path, engine.leases.seconds
        )
        if job is not None:
            return await _fetch(engine, rt, job, reason)
        if await store.leases.repairing(name):
            why = "cannot be fetched while `sync-agent verify --repair` repairs its source"
            raise NotListedError(name, remote_id, why + ": try again once it ends")
        done = await _committed(store, name, doc)
        if done is not None or time.monotonic() > deadline:
            if done is None:
                raise NotListedError(name, remote_id, "is being downloaded by another replica")
            return done
        await asyncio.sleep(WAIT_POLL)


async def _fetch(engine: Engine, rt: SourceRuntime, job: Claimed, reason: str) -> FetchResult:
    note = {"on_demand": True, "reason": reason}
    try:
        committed = await engine.workers.fetch_one(rt, job, attrs={REASON_ATTR: reason}, note=note)
    except SkipDocument as exc:  # a size the listing lacked, refused by a filter, say
        await _skipped(engine.store, rt, job, exc)
        raise _refusal(rt.config.name, job, exc) from None
    except DocumentError as exc:
        await _failed(engine, rt, job, exc, reason=reason)
        raise
    except (StateError, MirrorError) as exc:
        raise _not_committed(rt, job, exc) from exc
    if not committed:  # the lease was lost before the commit: another replica has the job
        raise NotListedError(rt.config.name, job.doc.remote_id, "was taken over by another replica")
    (done,) = committed
    rt.log.info("fetch.done", remote_id=job.doc.remote_id, path=done.rel_path, reason=reason)
    return FetchResult(
        rt.config.name, job.doc.remote_id, job.doc.version, done.rel_path, done.size, done.digest
    )


async def _listed(rt: SourceRuntime, remote_id: str) -> RemoteDocument:
    async for doc in rt.source.list_documents():
        if doc.remote_id != remote_id:
            continue
        if doc.skip_reason is not None:
            why = f"has nothing to download: {doc.skip_reason}"
            raise NotListedError(rt.config.name, remote_id, why)
        return doc
    raise NotListedError(rt.config.name, remote_id, "is not in the source's listing")


async def _refuse_filtered(store: Store, rt: SourceRuntime, doc: RemoteDocument) -> None:
    """Raise `FilteredOutError` when the source's filters leave `doc` out: as listed, or by
    the size the state knows of this version when the listing gives none."""
    name, filters = rt.config.name, Filters.of(rt.config)
    path = path_in_source(name, doc)
    rule = excluded_by(filters, path, doc.size)
    if rule is None and doc.size is None and sized(filters):
        known = (await store.documents.known(name, [doc.remote_id])).get(doc.remote_id)
        rule = _known_size_rule(filters, doc, known)
    if rule is not None:
        raise FilteredOutError(name, doc.remote_id, path, rule)


def _known_size_rule(
    filters: Filters, doc: RemoteDocument, known: KnownDocument | None
) -> str | None:
    """The size rule that leaves out this unsized version of `doc`, by the size of its
    mirrored file or the size rule a pass recorded skipping it by (if it still applies)."""
    if known is None or known.version != doc.version:
        return None
    if known.state == DocState.MIRRORED and known.size is not None:
        return size_rule(filters, known.size)
    (recalled,) = recall_size_exclusions(filters, [doc], {doc.remote_id: known}, {})
    reason = recalled.skip_reason
    return None if reason is None else reason.removeprefix(FILTER_PREFIX)


async def place(store: Store, source: str, doc: RemoteDocument) -> str:
    """Where a pass would put `doc`: the path its mirrored file holds, else the one the
    planner's rule gives. A path the row only remembers (the document was forgotten,
    removed, skipped or failed) may be another document's by now: it is not reused."""
    known = (await store.documents.known(source, [doc.remote_id])).get(doc.remote_id)
    if known is not None and known.rel_path and known.state == DocState.MIRRORED:
        return known.rel_path
    path = mirror_path(source, doc.folder, doc.name)
    holders = await store.documents.holders(source, [path_key(path)])
    return assign_one(doc.remote_id, path, known, holders)


async def _committed(store: Store, source: str, doc: RemoteDocument) -> FetchResult | None:
    """The document's row once another replica mirrored this version, else None."""
    row = await store.documents.get(source, doc.remote_id)
    if row is None or row.state != DocState.MIRRORED or row.version != doc.version:
        return None
    if row.rel_path is None or row.size is None or row.digest is None:
        return None
    return FetchResult(source, doc.remote_id, doc.version, row.rel_path, row.size, row.digest)


def _not_committed(rt: SourceRuntime, job: Claimed, exc: StateError | MirrorError) -> AgentError:
    """The error to report when the downloaded file could not be put in place and recorded
    (its job is back in the queue with the verified file): the same kind, saying so. A
    damaged database keeps its own error, which says what happens to it."""
    rt.log.warning("fetch.not_committed", remote_id=job.doc.remote_id, error=str(exc))
    if isinstance(exc, CorruptStateError):
        return exc
    what = (
        f"{rt.config.name}: {job.spec.rel_path} was downloaded but could not be put in the "
        f"mirror and recorded ({exc}); the next pass puts it there"
    )
    return StateError(what) if isinstance(exc, StateError) else MirrorError(what)


async def _skipped(store: Store, rt: SourceRuntime, job: Claimed, exc: SkipDocument) -> None:
    """Record the document skipped, as a pass would (its job goes with it)."""
    doc = replace(job.doc, external_url=exc.external_url or job.doc.external_url)
    await store.documents.record_states(
        rt.config.name, [(doc, DocState.SKIPPED, exc.message, None)]
    )
    rt.log.info("fetch.skipped", remote_id=doc.remote_id, reason=exc.message)


def _refusal(source: str, job: Claimed, exc: SkipDocument) -> NotListedError:
    """What to tell the user who asked for a document its download showed has to be skipped."""
    if exc.message.startswith(FILTER_PREFIX):
        path = job.spec.rel_path.partition("/")[2]
        return FilteredOutError(
            source, job.doc.remote_id, path, exc.message.removeprefix(FILTER_PREFIX)
        )
    return NotListedError(source, job.doc.remote_id, f"has nothing to download: {exc.message}")


async def _failed(
    engine: Engine, rt: SourceRuntime, job: Claimed, exc: DocumentError, *, reason: str
) -> None:
    """Leave the job for the next pass to resume, and journal the failure."""
    error = describe_error(exc)
    size = size_of(engine.staging, job.spec.temp_name) or 0
    await engine.store.jobs.failed(
        job.lease,
        kind=exc.kind,
        error=error,
        permanent=isinstance(exc, PermanentError),
        retry_in=0.0,
        bytes_done=size,
        temp_name=job.spec.temp_name if size else None,
    )
    doc = job.doc
    event = NewEvent(
        EventType.FAILED,
        rt.config.name,
        doc.remote_id,
        doc.version,
        job.spec.rel_path,
        data={"on_demand": True, "reason": reason, "error": error},
    )
    await engine.store.journal.record([event])
    rt.log.warning("fetch.failed", remote_id=doc.remote_id, kind=exc.kind, error=str(exc))
