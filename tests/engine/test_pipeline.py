"""The engine as a pipeline over the leased job queue, in one process against the Standard
Metrics sandbox: downloads start while the listing runs, removal waits for a complete
listing, a fatal error stops its source's other downloads cleanly, a batch being placed is
always committed, expired leases are taken over from their offset, and a pass leaves jobs
under another replica's live lease to it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from agent.agent import Agent
from agent.errors import AuthenticationError, LeaseLostError, TransientError
from agent.models import DocState, JobState, PassStats, RemoteDocument
from tests.transfer.transfer_kit import SOURCE, World, payload, sha256

GHOST = "a-replica-that-stalled"


@asynccontextmanager
async def running(world: World) -> AsyncIterator[Agent]:
    async with Agent.open(world.config(), sleep=world.sleeps) as agent:
        yield agent


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Wrapped:
    """The agent's real source with a hook around its listing and download targets."""

    def __init__(
        self,
        inner: Any,
        *,
        after_first_page: Callable[[], Awaitable[None]] | None = None,
        target: Callable[[RemoteDocument], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.after_first_page = after_first_page
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        count = 0
        async for doc in self.inner.list_documents():
            yield doc
            count += 1
            if count == 100 and self.after_first_page is not None:
                await self.after_first_page()

    async def download_target(self, doc: RemoteDocument, attrs: Any) -> Any:
        if self.target is not None:
            await self.target(doc)
        return await self.inner.download_target(doc, attrs)


def wrap(agent: Agent, **hooks: Any) -> None:
    runtime = agent.slots[SOURCE].runtime
    runtime.source = Wrapped(runtime.source, **hooks)  # type: ignore[assignment]


def ok(outcome: PassStats | BaseException) -> PassStats:
    assert isinstance(outcome, PassStats), outcome
    assert outcome.failed == 0, outcome.errors
    return outcome


# ---------------------------------------------------------------- streaming


async def test_downloads_start_while_the_listing_is_still_being_read(world: World) -> None:
    """The listing waits after its first page until a file of that page is in the mirror:
    a pass that lists everything before downloading would never get past it."""
    for i in range(150):
        world.add(f"doc-{i:03}.pdf", payload(200, seed=i))
    folder = world.mirror / SOURCE

    async def first_file_placed() -> None:
        await until(lambda: folder.is_dir() and any(folder.iterdir()), "a file from page one")

    async with running(world) as agent:
        wrap(agent, after_first_page=first_file_placed)
        stats = ok(await agent.run_pass(SOURCE))

    assert (stats.listed, stats.downloaded) == (150, 150)
    await world.assert_exact()


async def test_removal_waits_for_a_complete_listing(world: World) -> None:
    """A listing that fails part way marks nothing removed; a complete one marks what it
    no longer has."""
    ids = [world.add(f"doc-{i:03}.pdf", payload(100, seed=i)) for i in range(150)]
    ok(await world.sync())

    async def broken() -> None:
        raise TransientError("the listing broke after its first page")

    async with running(world) as agent:
        wrap(agent, after_first_page=broken)
        with pytest.raises(TransientError):
            await agent.run_pass(SOURCE)
        known = await agent.store.documents.known(SOURCE)
    assert {k.state for k in known.values()} == {DocState.MIRRORED}

    world.sandbox.remove_document(ids[7])
    stats = ok(await world.sync())

    assert stats.removed == 1
    async with running(world) as agent:
        gone = await agent.store.documents.get(SOURCE, ids[7])
    assert gone is not None
    assert gone.state == DocState.REMOVED


# ---------------------------------------------------------------- fatal errors and commits


async def test_a_fatal_error_stops_the_sources_other_downloads_which_checkpoint(
    world: World,
) -> None:
    """One download's rejected credentials end the pass, and the source's download already
    under way is cancelled before the pass returns: it checkpoints and its job goes back
    to the queue, resumable (it does not run on behind the failed pass)."""
    size = 3 * 1024 * 1024
    slow = world.add("slow.bin", payload(size, seed=1))
    world.add("refused.bin", payload(10, seed=2))
    world.storage.faults.bytes_per_second = 400_000

    async def refuse_once_the_slow_one_runs(doc: RemoteDocument) -> None:
        if doc.remote_id != slow:  # once the slow one wrote bytes the cancel must checkpoint
            await until(lambda: _staged_bytes(world) > 0, "the slow transfer to write")
            raise AuthenticationError(SOURCE, "credentials rejected")

    async with running(world) as agent:
        wrap(agent, target=refuse_once_the_slow_one_runs)
        with pytest.raises(AuthenticationError):
            await agent.run_pass(SOURCE)
        assert agent.engine.workers.running == {}  # nothing of the source runs on
        sent = world.storage.bytes_sent
        await asyncio.sleep(0.3)
        assert world.storage.bytes_sent == sent
        views = {v.remote_id: v for v in await agent.store.jobs.views(SOURCE)}

    assert 0 < sent < size
    job = views[slow]
    assert (job.state, job.owner) == (JobState.QUEUED, None)
    assert 0 < job.bytes_done <= sent  # checkpointed: the next pass resumes from there
    partials = [p for p in world.staging.iterdir() if p.stat().st_size]
    assert len(partials) == 1
    world.storage.faults.bytes_per_second = None
    ok(await world.sync())
    await world.assert_exact()


def _staged_bytes(world: World) -> int:
    total = 0
    for path in world.staging.iterdir():
        with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
            total += path.stat().st_size
    return total


async def test_a_batch_being_placed_is_committed_whatever_is_cancelled(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the committer's flusher (what a pass's end did) and the one waiting to
    close it while a batch is being renamed into place leaves no renamed file without its
    row: the batch runs to its commit first."""
    from agent.engine import commit  # noqa: PLC0415 - patched below

    doc_id = world.add("placed.pdf", payload(5000, seed=3))
    placing = asyncio.Event()
    release = asyncio.Event()
    real = commit.Committer._place_all
    loop = asyncio.get_running_loop()

    def slow_place_all(self: commit.Committer, *args: Any) -> Any:
        loop.call_soon_threadsafe(placing.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        return real(self, *args)

    monkeypatch.setattr(commit.Committer, "_place_all", slow_place_all)
    async with running(world) as agent:
        sync = asyncio.create_task(agent.run_pass(SOURCE))
        await asyncio.wait_for(placing.wait(), 10)
        committer = agent.engine.workers.committers[SOURCE]
        committer._task.cancel()  # the flusher itself: the cancellation under test
        closing = asyncio.create_task(committer.close())
        await asyncio.sleep(0.05)
        closing.cancel()
        sync.cancel()
        release.set()
        await asyncio.gather(sync, closing, return_exceptions=True)
        row = await agent.store.documents.get(SOURCE, doc_id)

    assert row is not None
    assert row.state == DocState.MIRRORED
    assert (world.mirror / SOURCE / "placed.pdf").read_bytes() == payload(5000, seed=3)


# ---------------------------------------------------------------- leases


async def ghost_claims(agent: Agent, world: World, *, seconds: float) -> tuple[Any, bytes]:
    """A replica that claimed the only document's job, wrote half of it and checkpointed,
    then stalled; returns its claim and the document's bytes."""
    runtime = agent.slots[SOURCE].runtime
    (doc,) = [d async for d in runtime.source.list_documents()]
    data = world.sandbox.content(doc.remote_id)
    await agent.store.jobs.enqueue(SOURCE, [(doc, f"{SOURCE}/{doc.name}")])
    (job,) = await agent.store.jobs.claim(GHOST, [SOURCE], 1, seconds)
    half = len(data) // 2
    world.staging.mkdir(parents=True, exist_ok=True)
    (world.staging / job.spec.temp_name).write_bytes(data[:half])
    etag = world.storage.blobs[world.blob_key(doc.remote_id)].etag
    await agent.store.jobs.checkpoint(job.lease, half, etag, job.spec.temp_name)
    return job, data


async def test_an_expired_lease_is_taken_over_and_resumes_from_its_offset(
    world: World, state_url: str
) -> None:
    """The stalled replica's job is claimed again once its lease runs out, continued from
    the checkpointed bytes with a Range request, and the stalled replica, waking up, can
    write nothing more to the job."""
    world.agent_options["state_url"] = state_url
    world.add("big.bin", payload(2 * 1024 * 1024 + 5, seed=4))
    async with running(world) as agent:
        ghost, data = await ghost_claims(agent, world, seconds=0.2)
        await asyncio.sleep(0.3)
        world.storage.log.clear()

        stats = ok(await agent.run_pass(SOURCE))

        assert stats.downloaded == 1
        ranges = [r.headers.get("range") for r in world.storage.log.records]
        assert ranges == [f"bytes={len(data) // 2}-"]
        with pytest.raises(LeaseLostError):
            await agent.store.jobs.checkpoint(ghost.lease, len(data), None, ghost.spec.temp_name)
    assert sha256((world.mirror / SOURCE / "big.bin").read_bytes()) == sha256(data)
    assert sorted(p.name for p in world.staging.iterdir()) == []  # no partial left behind


async def test_a_pass_leaves_jobs_under_another_replicas_live_lease_to_it(
    world: World,
) -> None:
    """A live lease is its holder's work: the pass neither downloads it nor waits for it."""
    world.add("held.bin", payload(50_000, seed=5))
    async with running(world) as agent:
        await ghost_claims(agent, world, seconds=60)
        world.storage.log.clear()

        stats = ok(await agent.run_pass(SOURCE))

        (view,) = await agent.store.jobs.views(SOURCE)
    assert (stats.listed, stats.downloaded) == (1, 0)
    assert (view.owner, view.state) == (GHOST, JobState.ACTIVE)
    assert world.storage.log.records == []


async def test_a_pass_listed_elsewhere_works_the_queue_only(world: World) -> None:
    """Another replica holds the source's pass lease: this pass lists nothing, and
    downloads the jobs that replica queued."""
    for i in range(3):
        world.add(f"q-{i}.pdf", payload(300, seed=10 + i))
    async with running(world) as agent:
        runtime = agent.slots[SOURCE].runtime
        docs = [d async for d in runtime.source.list_documents()]
        await agent.store.jobs.enqueue(SOURCE, [(d, f"{SOURCE}/{d.name}") for d in docs])
        assert await agent.store.leases.take(SOURCE, GHOST, 60) is None
        world.sandbox.log.clear()

        stats = ok(await agent.run_pass(SOURCE))

    assert (stats.listed, stats.downloaded) == (0, 3)
    assert not [r for r in world.sandbox.log.records if r.path.endswith("/documents/")]
    await world.assert_exact()
