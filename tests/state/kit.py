"""Helpers for tests that need a job leased to them: enqueue a document and claim it."""

from __future__ import annotations

from agent.models import RemoteDocument
from agent.state.jobs import Claimed
from agent.state.store import Store

OWNER = "test-replica"
LEASE = 60.0


async def claimed(
    store: Store, source: str, doc: RemoteDocument, rel_path: str, owner: str = OWNER
) -> Claimed:
    """The job for `doc`, queued and then leased to `owner`."""
    await store.jobs.enqueue(source, [(doc, rel_path)])
    found = await store.jobs.claim(owner, [source], 10_000, LEASE)
    (mine,) = [c for c in found if c.doc.remote_id == doc.remote_id]
    return mine
