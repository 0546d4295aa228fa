"""On-demand placement: a fetch outside the schedule targets the path a pass would give the
document, never a path another document's file holds."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from agent.agent import Agent
from agent.engine.ondemand import FilteredOutError, place
from agent.engine.paths import disambiguate, mirror_path
from agent.errors import StateError
from agent.models import DocState, PassStats, RemoteDocument
from agent.state.documents import Mirrored
from agent.state.store import Store
from tests.state.kit import claimed
from tests.transfer.transfer_kit import SOURCE as KIT_SOURCE
from tests.transfer.transfer_kit import World, payload

SOURCE = "src"
PATH = mirror_path(SOURCE, (), "x.txt")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state' / 'state.db'}"
    async with Store.open(url, tmp_path / "state") as opened:
        yield opened


async def mirror(store: Store, doc: RemoteDocument, rel_path: str) -> None:
    job = await claimed(store, SOURCE, doc, rel_path)
    mirrored = Mirrored(job.lease, doc, rel_path, 3, "ab" * 32, 0, None, None)
    assert await store.documents.commit_mirrored(SOURCE, [mirrored])


@pytest.mark.parametrize(
    "state", [DocState.DELETED_LOCALLY, DocState.REMOVED, DocState.SKIPPED, DocState.FAILED]
)
async def test_an_old_path_another_document_now_holds_is_not_reused(
    store: Store, state: DocState
) -> None:
    """A document whose row keeps a path it no longer holds (forgotten after a hand delete,
    removed, skipped, failed) gets a sibling name when another document is mirrored there."""
    a = RemoteDocument(remote_id="A", version="v1", name="x.txt")
    b = RemoteDocument(remote_id="B", version="v1", name="x.txt")
    await store.documents.record_states(SOURCE, [(a, state, "gone", PATH)])
    await mirror(store, b, PATH)

    target = await place(store, SOURCE, a)

    assert target == f"{SOURCE}/{disambiguate('x.txt', 'A')}"


async def test_a_free_old_path_of_a_document_that_left_it_is_taken_again(store: Store) -> None:
    """With nobody at the path, a document that let its path go gets the plain name back."""
    a = RemoteDocument(remote_id="A", version="v1", name="x.txt")
    await store.documents.record_states(SOURCE, [(a, DocState.DELETED_LOCALLY, "gone", PATH)])

    assert await place(store, SOURCE, a) == PATH


async def test_a_mirrored_document_keeps_its_path_even_after_a_remote_rename(
    store: Store,
) -> None:
    """A document mirrored at a path is fetched to that path (the next pass moves it)."""
    a = RemoteDocument(remote_id="A", version="v1", name="x.txt")
    await mirror(store, a, PATH)

    renamed = RemoteDocument(remote_id="A", version="v2", name="renamed.txt")
    assert await place(store, SOURCE, renamed) == PATH


class _FailDocumentWrites:
    """Fails the first write to the documents table (the commit of a placed file), as a
    failing disk would; every other statement goes through."""

    def __init__(self) -> None:
        self.armed = False
        self.failed = 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()[:3]
        if not self.armed or self.failed:
            return
        if words[:1] in (["INSERT"], ["UPDATE"]) and "documents" in words:
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error")


async def test_a_fetch_whose_commit_fails_says_so_and_the_next_pass_places_it(
    world: World,
) -> None:
    """When the state database fails while an on-demand fetch commits, `get` reports that
    failure (not a take-over by another replica), and the next pass mirrors the document."""
    doc_id = world.add("report.pdf", payload(4000, seed=1))
    fault = _FailDocumentWrites()
    event.listen(Engine, "before_cursor_execute", fault)
    try:
        async with Agent.open(world.config(), sleep=world.sleeps) as agent:
            fault.armed = True
            with pytest.raises(StateError) as raised:
                await agent.fetch_now(KIT_SOURCE, doc_id, "open-file-other-app")
    finally:
        event.remove(Engine, "before_cursor_execute", fault)
    assert fault.failed == 1
    assert "another replica" not in str(raised.value)
    assert "report.pdf" in str(raised.value)
    assert "next pass" in str(raised.value)
    outcome = await world.sync()
    assert isinstance(outcome, PassStats), outcome
    assert outcome.failed == 0
    await world.assert_exact()


async def test_a_size_the_state_knows_refuses_a_fetch_without_asking_storage(
    world: World,
) -> None:
    """Standard Metrics lists no sizes; once a pass learned a document's size (it recorded
    it skipped by max_size, or mirrored it and the limit then shrank), `get` refuses it by
    the size rule without a request to the storage host."""
    huge = world.add("huge.pdf", payload(5000, seed=2))
    fits = world.add("fits.pdf", payload(300, seed=3))
    world.source_options.update(max_size="1000")
    outcome = await world.sync()
    assert isinstance(outcome, PassStats), outcome
    assert (outcome.downloaded, outcome.skipped) == (1, 1)

    for doc_id, limit in ((huge, "1000"), (fits, "200")):
        world.source_options.update(max_size=limit)
        async with Agent.open(world.config(), sleep=world.sleeps) as agent:
            world.storage.log.clear()
            with pytest.raises(FilteredOutError, match=f"max_size {limit} bytes"):
                await agent.fetch_now(KIT_SOURCE, doc_id, "open-file-other-app")
        assert world.storage.log.records == [], doc_id
