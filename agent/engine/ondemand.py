"""On-demand fetch: one document now, outside the schedule, through the pass's own path.

The document is found in its source's listing (read until it appears), placed where a pass
would place it (its known path, else its sanitised path, told apart from another document
holding that name), downloaded as a resumable job with its own `x-download-reason`
(Huddle's audit trail reads it), verified, renamed into place and committed by the same
`Committer` as a pass, which journals it (`data.on_demand`, `data.reason`). The caller holds
the source's pass lock, so a pass never downloads the same job at the same time.

A failed download leaves the job to be resumed by the next pass, and is journaled as
`document.failed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.engine.commit import Committer, Finished
from agent.engine.paths import disambiguate, mirror_path
from agent.engine.plan import Download
from agent.engine.sync import Engine, SourceRuntime
from agent.errors import AgentError, DocumentError, PermanentError, describe_error
from agent.models import EventType, JobSpec, KnownDocument, RemoteDocument
from agent.state.journal import NewEvent
from agent.transfer.download import Endpoint

REASON_ATTR = "x-download-reason"


class NotListedError(AgentError):
    """The source does not list the document (or lists it without content to download)."""

    def __init__(self, source: str, remote_id: str, why: str) -> None:
        super().__init__(f"{source}: document {remote_id!r} {why}")
        self.source = source
        self.remote_id = remote_id


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A document fetched on demand: where it is in the mirror, and what it holds."""

    source: str
    remote_id: str
    version: str
    rel_path: str
    size: int
    sha256: str


async def fetch_now(engine: Engine, rt: SourceRuntime, remote_id: str, reason: str) -> FetchResult:
    """Download one document now (the caller holds the source's pass lock)."""
    name = rt.config.name
    doc = await _listed(rt, remote_id)
    known = await engine.store.documents.known(name)
    item = Download(doc, place(name, doc, known), known.get(remote_id))
    job = await engine.store.jobs.claim_one(name, doc, item.rel_path)
    endpoint = Endpoint(rt.source, doc, {**job.attrs, REASON_ATTR: reason}, rt.limiter)
    note = {"on_demand": True, "reason": reason}
    try:
        async with engine.slots:
            metadata = await rt.source.describe(doc)
            fetched = await engine.downloader.fetch(job, endpoint, engine.store.jobs.checkpoint)
    except DocumentError as exc:
        await _failed(engine, rt, item, job, exc, reason=reason)
        raise
    committer = Committer(engine.store, engine.fs, engine.staging, name, rt.config.write_metadata)
    committer.note = note
    await committer.add(Finished(item, job, fetched, metadata))
    await committer.flush()
    rt.log.info("fetch.done", remote_id=remote_id, path=item.rel_path, reason=reason)
    return FetchResult(name, remote_id, doc.version, item.rel_path, fetched.size, fetched.sha256)


async def _listed(rt: SourceRuntime, remote_id: str) -> RemoteDocument:
    async for doc in rt.source.list_documents():
        if doc.remote_id != remote_id:
            continue
        if doc.skip_reason is not None:
            why = f"has nothing to download: {doc.skip_reason}"
            raise NotListedError(rt.config.name, remote_id, why)
        return doc
    raise NotListedError(rt.config.name, remote_id, "is not in the source's listing")


def place(source: str, doc: RemoteDocument, known: Mapping[str, KnownDocument]) -> str:
    """Where a pass would put `doc`: its known path, else its own, unless another holds it."""
    mine = known.get(doc.remote_id)
    if mine is not None and mine.rel_path:
        return mine.rel_path
    path = mirror_path(source, doc.folder, doc.name)
    taken = {k.rel_path.casefold() for r, k in known.items() if k.rel_path and r != doc.remote_id}
    if path.casefold() not in taken:
        return path
    folder, _, file_name = path.rpartition("/")
    return f"{folder}/{disambiguate(file_name, doc.remote_id)}"


async def _failed(
    engine: Engine,
    rt: SourceRuntime,
    item: Download,
    job: JobSpec,
    exc: DocumentError,
    *,
    reason: str,
) -> None:
    """Leave the job for the next pass to resume, and journal the failure."""
    error = describe_error(exc)
    partial = engine.staging.lstat(job.temp_name)
    await engine.store.jobs.failed(
        job.job_id,
        kind=exc.kind,
        error=error,
        permanent=isinstance(exc, PermanentError),
        retry_in=0.0,
        bytes_done=partial.st_size if partial is not None else 0,
    )
    doc = item.doc
    event = NewEvent(
        EventType.FAILED,
        rt.config.name,
        doc.remote_id,
        doc.version,
        item.rel_path,
        data={"on_demand": True, "reason": reason, "error": error},
    )
    await engine.store.journal.record([event])
    rt.log.warning("fetch.failed", remote_id=doc.remote_id, kind=exc.kind, error=str(exc))
