"""The change journal, on SQLite and on PostgreSQL: each recorded change journaled with it,
in commit order, replayed, waited for, and pruned by age."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from agent.models import DocState, EventType, PassStats, RemoteDocument
from agent.state.documents import Mirrored
from agent.state.journal import NewEvent
from agent.state.store import Store
from agent.state.tables import EventRow
from tests.state.conftest import ManualClock
from tests.state.kit import claimed

SRC = "src"


def doc(remote_id: str, version: str = "v1") -> RemoteDocument:
    return RemoteDocument(remote_id=remote_id, version=version, name=f"{remote_id}.pdf")


async def mirror(
    store: Store, d: RemoteDocument, sha: str = "a" * 64, kept: dict[str, str] | None = None
) -> None:
    job = await claimed(store, SRC, d, f"{SRC}/{d.name}")
    item = Mirrored(job.lease, d, f"{SRC}/{d.name}", 10, sha, 123, None, None)
    await store.documents.commit_mirrored(SRC, [item], kept=kept or {})


async def types(store: Store, since: int = 0) -> list[tuple[str, str | None]]:
    return [(e.type, e.path) for e in await store.journal.read(since, 100)]


async def test_a_first_file_is_added_and_a_new_version_updated(store: Store) -> None:
    await mirror(store, doc("a"))
    await mirror(store, doc("a", "v2"), sha="b" * 64)

    first, second = await store.journal.read(0, 10)
    assert (first.type, first.document_id, first.version, first.size, first.digest) == (
        EventType.ADDED,
        "a",
        "v1",
        10,
        "a" * 64,
    )
    assert (second.type, second.version, second.digest) == (EventType.UPDATED, "v2", "b" * 64)
    assert second.data["previous_version"] == "v1"
    assert first.seq < second.seq
    assert first.id != second.id


async def test_a_kept_local_copy_is_journaled_before_the_file_that_replaced_it(
    store: Store,
) -> None:
    await mirror(store, doc("a"))
    await mirror(store, doc("a", "v2"), kept={"a": "a (local copy).pdf"})

    assert (await types(store))[1:] == [
        (EventType.LOCAL_COPY_KEPT, "src/a (local copy).pdf"),
        (EventType.UPDATED, "src/a.pdf"),
    ]


async def test_failed_moved_and_removed_documents_are_journaled(store: Store) -> None:
    await mirror(store, doc("a"))
    await mirror(store, doc("b"))
    await store.documents.record_states(SRC, [(doc("c"), DocState.FAILED, "gone: 404", "src/c")])
    await store.documents.record_states(SRC, [(doc("d"), DocState.SKIPPED, "no content", None)])
    await store.documents.record_moves(SRC, [("a", "a2.pdf", "src/sub/a2.pdf")])
    await store.documents.record_removed(SRC, ["b"])
    await store.documents.record_removed(SRC, ["b"])  # already removed: not journaled again

    events = await store.journal.read(2, 10)
    assert [(e.type, e.document_id, e.path) for e in events] == [
        (EventType.FAILED, "c", "src/c"),
        (EventType.MOVED, "a", "src/sub/a2.pdf"),
        (EventType.REMOVED, "b", "src/b.pdf"),
    ]
    assert events[0].data["error"] == "gone: 404"
    assert events[1].data["old_path"] == "src/a.pdf"
    assert events[2].data["file_deleted"] is False


async def test_a_file_adopted_at_start_up_is_journaled(store: Store) -> None:
    job = await claimed(store, SRC, doc("a"), "src/a.pdf")
    await store.jobs.release([(job.lease, None)])  # its holder stopped
    assert await store.documents.adopt_placed(job.spec, 10, "c" * 64, 1)
    (event,) = await store.journal.read(0, 10)
    assert (event.type, event.path, event.digest) == (EventType.ADDED, "src/a.pdf", "c" * 64)


async def test_a_pass_journals_its_counts(store: Store) -> None:
    await store.journal.pass_completed(SRC, PassStats(listed=3, downloaded=2, failed=1), ok=False)
    (event,) = await store.journal.read(0, 10)
    assert event.type == EventType.PASS_COMPLETED
    assert (event.data["listed"], event.data["downloaded"], event.data["ok"]) == (3, 2, False)


async def test_reads_page_in_order_and_filter_by_type_and_source(store: Store) -> None:
    await store.journal.record([NewEvent(EventType.ADDED, s, path=f"{s}/x") for s in "abcab"])
    page = await store.journal.read(0, 2)
    rest = await store.journal.read(page[-1].seq, 10)
    assert [e.source for e in page + rest] == list("abcab")
    only = await store.journal.read(0, 10, sources=["b"], types=[EventType.ADDED])
    assert [e.source for e in only] == ["b", "b"]
    assert await store.journal.read(0, 10, types=[EventType.REMOVED]) == []
    assert await store.journal.last_seq() == rest[-1].seq


async def test_numbers_are_never_reused_even_when_every_entry_was_pruned(
    store: Store, clock: ManualClock
) -> None:
    first = await store.journal.record([NewEvent(EventType.ADDED, SRC)])
    clock.now += 100
    assert await store.journal.prune(clock.now) == 1
    second = await store.journal.record([NewEvent(EventType.ADDED, SRC)])
    assert second[0].seq > first[0].seq


async def test_a_waiting_reader_is_woken_by_a_commit_of_this_process(store: Store) -> None:
    start = await store.journal.last_seq()
    waiter = asyncio.create_task(store.journal.wait(start, 10, 30.0, poll=30.0))
    await asyncio.sleep(0.05)
    begun = time.monotonic()
    await mirror(store, doc("a"))
    (event,) = await asyncio.wait_for(waiter, 5)
    assert event.document_id == "a"
    assert time.monotonic() - begun < 5  # woken, not polled (the poll is 30 s)


async def test_a_wait_finds_entries_another_process_wrote_by_polling(
    store: Store, state_url: str, tmp_path: Path
) -> None:
    async with Store.open(state_url, tmp_path / "state") as other:  # another process's store
        waiter = asyncio.create_task(store.journal.wait(0, 10, 10.0, poll=0.05))
        await asyncio.sleep(0.05)
        await other.journal.record([NewEvent(EventType.ADDED, SRC, path="src/x")])
        (event,) = await asyncio.wait_for(waiter, 5)
    assert event.path == "src/x"


async def test_a_wait_with_nothing_new_returns_empty_after_its_time(store: Store) -> None:
    assert await store.journal.wait(0, 10, 0.1, poll=0.05) == []


async def test_pruning_deletes_old_entries_in_batches_and_keeps_recent_ones(
    store: Store, clock: ManualClock
) -> None:
    await store.journal.record([NewEvent(EventType.ADDED, SRC)] * 25)
    clock.now += 10
    await store.journal.record([NewEvent(EventType.UPDATED, SRC)] * 3)
    assert await store.journal.prune(clock.now - 5, batch=10) == 25
    assert [e.type for e in await store.journal.read(0, 100)] == [EventType.UPDATED] * 3


async def test_subscribers_get_what_committed_and_nothing_of_a_rollback(store: Store) -> None:
    seen: list[str] = []
    unsubscribe = store.journal.subscribe(lambda events: seen.extend(e.type for e in events))

    async def rolled_back() -> None:
        async with store.db.begin() as conn:
            await store.journal.append(conn, [NewEvent(EventType.ADDED, SRC)])
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert await store.journal.read(0, 10) == []
    await mirror(store, doc("a"))
    unsubscribe()
    await mirror(store, doc("b"))
    assert seen == [EventType.ADDED]


async def test_on_postgresql_a_later_number_never_commits_before_an_earlier_one(
    pg_migrated_url: str, tmp_path: Path
) -> None:
    """A writer that drew its number waits for nobody, but the next writer cannot draw one
    until it committed: a reader at the newest number never skips an entry committed later."""
    async with Store.open(pg_migrated_url, tmp_path / "state") as store:
        first_drawn, release = asyncio.Event(), asyncio.Event()

        async def slow_writer() -> None:
            async with store.db.begin() as conn:
                await store.journal.append(conn, [NewEvent(EventType.ADDED, "slow")])
                first_drawn.set()
                await release.wait()  # holds its transaction open after drawing its number

        slow = asyncio.create_task(slow_writer())
        await first_drawn.wait()
        fast = asyncio.create_task(store.journal.record([NewEvent(EventType.ADDED, "fast")]))
        await asyncio.sleep(0.3)
        assert not fast.done()  # it waits for the slow writer's commit to draw its number
        assert await store.journal.read(0, 10) == []
        release.set()
        await slow
        await fast
        events = await store.journal.read(0, 10)
        assert [e.source for e in events] == ["slow", "fast"]
        async with store.db.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(EventRow)) == 2
