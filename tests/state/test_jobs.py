"""The job queue and its leases, on SQLite and on PostgreSQL: enqueue, claim, heartbeat,
fencing of late holders, takeover of expired leases, pass leases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import LeaseLostError
from agent.models import JobState, RemoteDocument
from agent.state.documents import Mirrored
from agent.state.jobs import partial_name
from agent.state.store import Store
from tests.state.conftest import ManualClock
from tests.state.kit import LEASE, claimed

SRC = "src"
ME, OTHER = "replica-a", "replica-b"


def doc(remote_id: str, version: str = "v1", **extra: object) -> RemoteDocument:
    return RemoteDocument(remote_id=remote_id, version=version, name=f"{remote_id}.pdf", **extra)  # type: ignore[arg-type]


async def queue(store: Store, *docs: RemoteDocument) -> None:
    await store.jobs.enqueue(SRC, [(d, f"{SRC}/{d.name}") for d in docs])


# ---------------------------------------------------------------- enqueue and claim


async def test_a_claimed_job_carries_the_listed_document_and_its_first_lease(
    store: Store, clock: ManualClock
) -> None:
    listed = doc(
        "a",
        folder=("Board", "2024"),
        size=12,
        modified=datetime(2024, 5, 1, 12, tzinfo=UTC),
        locator="blob/7",
        attrs={"reason": "offline"},
        metadata={"title": "A", "tags": ["x"]},
    )
    await queue(store, listed)

    (job,) = await store.jobs.claim(ME, [SRC], 10, LEASE)

    assert job.doc == listed
    assert (job.lease.owner, job.lease.attempt) == (ME, 1)
    assert job.spec.temp_name == partial_name(SRC, job.lease.job_id, 1)
    assert job.partial is None
    (view,) = await store.jobs.views()
    assert (view.state, view.owner, view.lease_until) == (JobState.ACTIVE, ME, clock.now + LEASE)


async def test_claims_take_the_oldest_jobs_in_batches_and_never_a_live_lease(store: Store) -> None:
    await queue(store, *(doc(f"d{i}") for i in range(5)))

    first = await store.jobs.claim(ME, [SRC], 3, LEASE)
    second = await store.jobs.claim(OTHER, [SRC], 3, LEASE)

    assert [c.doc.remote_id for c in first] == ["d0", "d1", "d2"]
    assert [c.doc.remote_id for c in second] == ["d3", "d4"]
    assert await store.jobs.claim(OTHER, [SRC], 3, LEASE) == []
    assert await store.jobs.claim(ME, ["elsewhere"], 3, LEASE) == []


async def test_concurrent_claims_never_share_a_job(
    state_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    async with (
        Store.open(state_url, tmp_path / "a", clock=clock) as one,
        Store.open(state_url, tmp_path / "b", clock=clock) as two,
    ):
        await queue(one, *(doc(f"d{i}") for i in range(60)))

        async def drain(store: Store, owner: str) -> list[int]:
            got: list[int] = []
            while batch := await store.jobs.claim(owner, [SRC], 4, LEASE):
                got += [c.lease.job_id for c in batch]
            return got

        a, b = await asyncio.gather(drain(one, ME), drain(two, OTHER))

    assert not set(a) & set(b)
    assert len(a) + len(b) == 60


async def test_enqueue_keeps_a_job_per_version_and_leaves_a_leased_one_alone(store: Store) -> None:
    await queue(store, doc("a", attrs={"reason": "first"}))
    first = await store.jobs.claim(ME, [SRC], 1, LEASE)
    await store.jobs.release([(first[0].lease, None)])
    await store.jobs.enqueue(SRC, [(doc("a", attrs={"reason": "other"}), "src/moved.pdf")])

    (again,) = await store.jobs.claim(ME, [SRC], 1, LEASE)
    assert again.lease.job_id == first[0].lease.job_id
    assert again.doc.attrs == {"reason": "first"}  # the job keeps what it was created with
    assert again.spec.rel_path == "src/moved.pdf"  # the path follows the listing

    assert await store.jobs.enqueue(SRC, [(doc("a"), "src/a.pdf")]) == 0  # leased: left alone
    assert await store.jobs.enqueue(SRC, [(doc("a", "v2"), "src/a.pdf")]) == 1
    (newer,) = await store.jobs.claim(ME, [SRC], 1, LEASE)
    assert newer.lease.job_id > again.lease.job_id
    assert (newer.doc.version, newer.doc.attrs) == ("v2", {})


async def test_enqueue_skips_a_document_mirrored_as_wanted_unless_it_is_restored(
    store: Store,
) -> None:
    """A document whose row records the wanted version mirrored at the wanted path is not
    queued again (its job was committed after the pass read the row); a restore of its
    deleted file, a newer version or another path is."""
    for rid in ("a", "b", "c", "d"):
        job = await claimed(store, SRC, doc(rid), f"src/{rid}.pdf", owner=ME)
        item = Mirrored(job.lease, job.doc, f"src/{rid}.pdf", 1, "0" * 64, 1, None, None)
        assert await store.documents.commit_mirrored(SRC, [item]) == [item]

    assert await store.jobs.enqueue(SRC, [(doc("a"), "src/a.pdf")]) == 0
    assert await store.jobs.views() == []
    assert await store.jobs.enqueue(SRC, [(doc("b"), "src/b.pdf")], restoring=["b"]) == 1
    assert await store.jobs.enqueue(SRC, [(doc("c", "v2"), "src/c.pdf")]) == 1
    assert await store.jobs.enqueue(SRC, [(doc("d"), "src/moved.pdf")]) == 1
    assert sorted(v.remote_id for v in await store.jobs.views()) == ["b", "c", "d"]


async def test_job_ids_are_never_reused_after_a_job_is_retired(store: Store) -> None:
    job = await claimed(store, SRC, doc("a"), "src/a.pdf", owner=ME)
    item = Mirrored(job.lease, job.doc, "src/a.pdf", 1, "0" * 64, 1, None, None)
    assert await store.documents.commit_mirrored(SRC, [item]) == [item]

    later = await claimed(store, SRC, doc("b"), "src/b.pdf", owner=ME)

    assert later.lease.job_id > job.lease.job_id


# ---------------------------------------------------------------- heartbeats and takeover


async def test_an_expired_lease_is_taken_over_with_the_partial_and_its_offset(
    store: Store, clock: ManualClock
) -> None:
    job = await claimed(store, SRC, doc("a", size=100), "src/a.pdf", owner=ME)
    await store.jobs.checkpoint(job.lease, 40, '"etag"', job.spec.temp_name)

    clock.now += LEASE - 1
    assert await store.jobs.claim(OTHER, [SRC], 5, LEASE) == []  # still alive
    clock.now += 2
    (taken,) = await store.jobs.claim(OTHER, [SRC], 5, LEASE)

    assert (taken.lease.owner, taken.lease.attempt) == (OTHER, 2)
    assert taken.partial == job.spec.temp_name
    assert taken.spec.validator == '"etag"'
    assert taken.spec.temp_name != job.spec.temp_name  # each attempt writes its own file
    # PostgreSQL replicas may share nothing but the database: the old holder may still run.
    assert taken.holder_may_live is not store.jobs.exclusive


async def test_heartbeats_keep_a_lease_and_report_the_ones_lost(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, doc("a"), doc("b"))
    a, b = await store.jobs.claim(ME, [SRC], 2, LEASE)
    for _ in range(3):
        clock.now += LEASE / 2
        assert await store.jobs.extend([a.lease], LEASE) == {a.lease.job_id}

    (taken,) = await store.jobs.claim(OTHER, [SRC], 5, LEASE)

    assert taken.lease.job_id == b.lease.job_id
    assert await store.jobs.extend([a.lease, b.lease], LEASE) == {a.lease.job_id}


async def test_a_late_holder_can_neither_checkpoint_nor_verify_nor_commit_nor_fail(
    store: Store, clock: ManualClock
) -> None:
    job = await claimed(store, SRC, doc("a"), "src/a.pdf", owner=ME)
    clock.now += LEASE + 1
    (taken,) = await store.jobs.claim(OTHER, [SRC], 1, LEASE)
    late = job.lease

    with pytest.raises(LeaseLostError):
        await store.jobs.checkpoint(late, 10, '"v"', job.spec.temp_name)
    assert await store.jobs.mark_verified([(late, 10, "1" * 64, job.spec.temp_name)]) == set()
    mirrored = Mirrored(late, job.doc, "src/a.pdf", 10, "1" * 64, 1, None, None)
    assert await store.documents.commit_mirrored(SRC, [mirrored]) == []
    failure = {"kind": "transient", "error": "x", "permanent": False, "retry_in": 5.0}
    assert not await store.jobs.failed(late, bytes_done=0, **failure)
    await store.jobs.release([(late, "stale.part")])

    (view,) = await store.jobs.views()
    assert (view.owner, view.state, view.bytes_done) == (OTHER, JobState.ACTIVE, 0)
    assert await store.documents.get(SRC, "a") is None
    assert await store.jobs.mark_verified([(taken.lease, 10, "1" * 64, "f")]) == {
        taken.lease.job_id
    }


async def test_a_batch_writes_each_held_job_its_own_values_and_skips_the_lost_one(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, doc("a"), doc("b"), doc("c"))
    a, b, c = await store.jobs.claim(ME, [SRC], 3, LEASE)
    clock.now += LEASE / 2
    assert await store.jobs.extend([a.lease, c.lease], LEASE) == {a.lease.job_id, c.lease.job_id}
    clock.now += LEASE / 2 + 1
    (taken,) = await store.jobs.claim(OTHER, [SRC], 3, LEASE)  # b's lease ran out
    assert taken.lease.job_id == b.lease.job_id

    kept = await store.jobs.mark_verified(
        [(j.lease, size, f"blake3:{size}", f"{size}.part") for j, size in ((a, 1), (b, 2), (c, 3))]
    )

    assert kept == {a.lease.job_id, c.lease.job_id}
    assert await store.jobs.verified() == []  # a and c are leased: left to their holder
    # released, a keeps the staging file it was verified in, c names another; b is not ours
    await store.jobs.release([(a.lease, None), (b.lease, "late.part"), (c.lease, "c.part")])
    found = {
        s.remote_id: (size, digest, s.temp_name) for s, size, digest in await store.jobs.verified()
    }
    assert found == {"a": (1, "blake3:1", "1.part"), "c": (3, "blake3:3", "c.part")}
    (other,) = [v for v in await store.jobs.views() if v.remote_id == "b"]
    assert (other.owner, other.bytes_done, other.state) == (OTHER, 0, JobState.ACTIVE)


async def test_a_released_job_is_claimable_at_once_and_its_partial_is_safe(
    store: Store, clock: ManualClock
) -> None:
    job = await claimed(store, SRC, doc("a"), "src/a.pdf", owner=ME)
    await store.jobs.release([(job.lease, job.spec.temp_name)])

    (again,) = await store.jobs.claim(OTHER, [SRC], 1, LEASE)

    assert again.partial == job.spec.temp_name
    assert not again.holder_may_live
    assert await store.jobs.outstanding(SRC, OTHER)
    assert not await store.jobs.outstanding(SRC, ME)  # OTHER's live lease: its work


async def test_start_up_on_sqlite_queues_what_a_previous_process_held(store: Store) -> None:
    await queue(store, doc("a"), doc("b"))
    await store.jobs.claim(ME, [SRC], 2, LEASE)

    assert await store.jobs.release_all() == 2

    assert {v.state for v in await store.jobs.views()} == {JobState.QUEUED}
    assert len(await store.jobs.claim(OTHER, [SRC], 5, LEASE)) == 2


async def test_failures_let_go_count_attempts_and_schedule_by_the_clock(
    store: Store, clock: ManualClock
) -> None:
    job = await claimed(store, SRC, doc("a"), "src/a.pdf", owner=ME)
    assert await store.jobs.failed(
        job.lease, kind="permanent", error="gone", permanent=True, retry_in=30, bytes_done=7
    )

    (view,) = await store.jobs.views(SRC)
    assert await store.jobs.attempts(job.lease.job_id) == 1
    assert (view.state, view.error_kind, view.bytes_done) == (JobState.FAILED, "permanent", 7)
    assert (view.owner, view.next_retry_at) == (None, clock.now + 30)
    assert not await store.jobs.outstanding(SRC, ME)
    assert await store.jobs.claim(ME, [SRC], 1, LEASE) == []  # only a pass queues it again
    await queue(store, doc("a"))
    assert len(await store.jobs.claim(ME, [SRC], 1, LEASE)) == 1


async def test_start_up_finds_files_of_verified_jobs_no_lease_holds(
    store: Store, clock: ManualClock
) -> None:
    a = await claimed(store, SRC, doc("a"), "src/a.pdf", owner=ME)
    await store.jobs.checkpoint(a.lease, 100, '"etag"', a.spec.temp_name)
    await store.jobs.mark_verified([(a.lease, 12, "9" * 64, a.spec.temp_name)])

    assert await store.jobs.verified() == []  # its holder is alive
    clock.now += LEASE + 1
    assert [(j.remote_id, j.temp_name, n, h) for j, n, h in await store.jobs.verified()] == [
        ("a", a.spec.temp_name, 12, "9" * 64)
    ]
    assert a.spec.temp_name in await store.jobs.temp_names()


# ---------------------------------------------------------------- pass leases


async def test_a_pass_lease_has_one_holder_until_it_is_released_or_runs_out(
    store: Store, clock: ManualClock
) -> None:
    assert await store.leases.take(SRC, ME, 30) is None
    assert await store.leases.take(SRC, ME, 30) is None  # renewing is taking again
    holder = await store.leases.take(SRC, OTHER, 30)
    assert holder is not None
    assert (holder.owner, holder.lease_until) == (ME, clock.now + 30)

    clock.now += 20
    assert await store.leases.renew(SRC, ME, 30)
    clock.now += 20
    assert await store.leases.take(SRC, OTHER, 30) is not None
    clock.now += 11
    assert await store.leases.take(SRC, OTHER, 30) is None  # ran out: taken over
    assert not await store.leases.renew(SRC, ME, 30)

    await store.leases.release(SRC, ME)  # not its own: nothing happens
    assert await store.leases.take(SRC, ME, 30) is not None
    await store.leases.release(SRC, OTHER)
    assert await store.leases.take(SRC, ME, 30) is None
