"""Database faults during a pass, after Nextcloud's testdatabaseerror.cpp: for every i, the i-th
write to the state database fails during a pass, then a clean pass leaves the mirror exact,
with no duplicate, no lost local edit and no error but the agent's own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from transfer_kit import World, payload, sha256

from agent.errors import AgentError
from agent.models import PassStats
from agent.sandbox.standard_metrics import StandardMetricsSandbox
from agent.sandbox.storage import StorageHost

WRITES = ("INSERT", "UPDATE", "DELETE")
EDIT = b"my own notes, never to be lost"


@dataclass
class WriteFaults:
    """Counts the write statements every engine sends; the `fail_at`-th fails as a disk would.

    Hooked on SQLAlchemy's `before_cursor_execute` event, under the state layer's error
    boundary, so the fault reaches the agent exactly as a driver error does.
    """

    fail_at: int
    count: int = 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in WRITES:
            self.count += 1
            if self.count == self.fail_at:
                raise sqlite3.OperationalError("disk I/O error")


@contextmanager
def injected(faults: WriteFaults) -> Iterator[WriteFaults]:
    event.listen(Engine, "before_cursor_execute", faults)
    try:
        yield faults
    finally:
        event.remove(Engine, "before_cursor_execute", faults)


async def one_run(tmp: Path, fail_at: int) -> int:
    """Mirror, then edit, delete and change things; fail the `fail_at`-th write of the next
    pass; heal with a clean pass and check the mirror. Returns the writes the pass made."""
    storage = StorageHost()
    sandbox = StandardMetricsSandbox(storage)
    async with storage.running(), sandbox.running() as base:
        world = World(storage, sandbox, base, tmp, agent_options={"max_concurrent_downloads": 1})
        ids = [world.add(f"doc-{i}.pdf", payload(3000 + i, seed=i)) for i in range(4)]
        _ok(await world.sync())
        paths = {i: await world.mirrored_path(i) for i in ids}
        edited, deleted = paths[ids[0]], paths[ids[2]]
        assert edited is not None
        assert deleted is not None
        edited.write_bytes(EDIT)  # and a new version arrives: kept beside it
        sandbox.update_document(ids[0], payload(3100, seed=10))
        sandbox.rename_document(ids[1], "renamed.pdf")  # a move
        deleted.unlink()  # restored
        world.add("new.pdf", payload(3200, seed=11))
        world.add("large.bin", payload(1_500_000, seed=12))  # journaled: checkpoints are written

        with injected(WriteFaults(fail_at)) as faults:
            outcome = await _sync(world)
        assert isinstance(outcome, PassStats | AgentError), repr(outcome)
        _ok(await world.sync())
        await _assert_healed(world, edited.parent)
    return faults.count


async def _assert_healed(world: World, folder: Path) -> None:
    """Byte-exact, each document once, and the edit kept once beside its document."""
    await world.assert_exact()
    wanted = sorted(sha256(world.sandbox.content(i)) for i in world.sandbox.document_ids())
    files = [p for p in folder.iterdir() if p.is_file()]
    copies = [p for p in files if "(local copy" in p.name]
    assert [p.read_bytes() for p in copies] == [EDIT]
    assert sorted(sha256(p.read_bytes()) for p in files if p not in copies) == wanted


async def _sync(world: World) -> PassStats | BaseException:
    """What `sync-agent sync` would report: a pass's outcome, or the error that stopped the
    agent before or after its passes (start-up and shut-down write to the state too)."""
    try:
        return await world.sync()
    except AgentError as exc:
        return exc


def _ok(outcome: PassStats | BaseException) -> PassStats:
    assert isinstance(outcome, PassStats), repr(outcome)
    assert outcome.failed == 0, outcome.errors
    return outcome


async def test_every_write_of_a_pass_may_fail_and_the_next_pass_heals(tmp_path: Path) -> None:
    writes = await one_run(tmp_path / "no-fault", fail_at=0)
    assert writes >= 8, "the pass under test writes more than this: is the hook counting?"
    failed = []
    for fail_at in range(1, writes + 1):
        try:
            await one_run(tmp_path / f"fault-{fail_at}", fail_at)
        except AssertionError as exc:
            failed.append(f"write {fail_at} of {writes}: {exc}")
    assert failed == [], "\n".join(failed)
