"""The committer: a stop never loses a batch, whether it was waiting or being flushed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.engine import commit
from agent.engine.commit import COMMIT_BATCH, Committer, Finished
from agent.engine.plan import Download
from agent.models import Fetched, JobSpec, KnownDocument, RemoteDocument
from agent.state.documents import Mirrored
from agent.state.jobs import JobLease
from agent.transfer.durable import Durability
from agent.transfer.mirrorfs import Folder, MirrorFS


class HeldStore:
    """The store's calls the committer makes; the first `mark_verified` waits for `go`."""

    def __init__(self) -> None:
        self.jobs = self
        self.documents = self
        self.inside = asyncio.Event()
        self.go = asyncio.Event()
        self.committed: list[Mirrored] = []

    async def mark_verified(self, items: Sequence[Any]) -> set[int]:
        self.inside.set()
        await self.go.wait()
        return {lease.job_id for lease, *_ in items}  # every job still held

    async def known(self, _source: str, _ids: Sequence[str]) -> dict[str, KnownDocument]:
        return {}

    async def recorded_digests(self, _source: str, _ids: Sequence[str]) -> dict[str, str]:
        return {}

    async def commit_mirrored(
        self, _source: str, items: Sequence[Mirrored], **_journal: object
    ) -> list[Mirrored]:
        self.committed += items
        return list(items)


def finished(staging: Folder, name: str, job_id: int) -> Finished:
    data = name.encode()
    (staging.path / f"{name}.part").write_bytes(data)
    doc = RemoteDocument(remote_id=name, version="1", name=name)
    job = JobSpec(job_id, "s", name, "1", f"s/{name}", temp_name=f"{name}.part")
    fetched = Fetched(
        str(staging.path / f"{name}.part"),
        len(data),
        f"sha256:{hashlib.sha256(data).hexdigest()}",
        None,
    )
    lease = JobLease(job_id, "me", 1)
    return Finished(Download(doc, f"s/{name}"), lease, job, fetched, None)


def committer_of(
    store: HeldStore, fs: MirrorFS, staging: Folder, durability: Durability, flushed: list[Mirrored]
) -> Committer:
    """A committer of source "s" over the held store; a failed batch fails the test."""
    return Committer(
        store,  # type: ignore[arg-type]
        fs,
        staging,
        "s",
        write_metadata=False,
        durability=durability,
        on_flushed=lambda _batch, done: flushed.extend(done),
        on_failed=lambda _batch, exc: pytest.fail(f"the batch failed: {exc}"),
    )


async def test_files_that_arrive_during_the_last_flush_are_committed_too(tmp_path: Path) -> None:
    fs = MirrorFS(tmp_path / "mirror")
    store = HeldStore()
    flushed: list[Mirrored] = []
    with contextlib.closing(Durability()) as durability, fs.open_staging() as staging:
        committer = committer_of(store, fs, staging, durability, flushed)
        committer.add(finished(staging, "a.bin", 1))
        await store.inside.wait()  # the first batch has taken a.bin and is in flight
        committer.add(finished(staging, "b.bin", 2))
        closing = asyncio.create_task(committer.close())  # the pass ends while that flush runs
        await asyncio.sleep(0)
        store.go.set()
        await closing

    assert sorted(m.rel_path for m in store.committed) == ["s/a.bin", "s/b.bin"]
    assert sorted(m.rel_path for m in flushed) == ["s/a.bin", "s/b.bin"]
    assert (fs.root / "s" / "b.bin").read_bytes() == b"b.bin"


async def committed_count(store: HeldStore, count: int) -> None:
    """Wait (bounded) until the store has committed `count` files."""
    async with asyncio.timeout(10):
        while len(store.committed) < count:
            await asyncio.sleep(0.01)


async def test_a_gathering_batch_commits_when_full_and_a_partial_one_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that join a gathering batch commit as soon as it is full, whatever the
    interval; fewer wait for the interval or for the pass to say nothing more is coming."""
    monkeypatch.setattr(commit, "FLUSH_INTERVAL", 3600.0)  # the interval never runs out here
    fs = MirrorFS(tmp_path / "mirror")
    store = HeldStore()
    store.go.set()
    with contextlib.closing(Durability()) as durability, fs.open_staging() as staging:
        committer = committer_of(store, fs, staging, durability, [])
        committer.add(finished(staging, "first", 0))  # the committer was idle: at once
        await committed_count(store, 1)
        for n in range(1, COMMIT_BATCH):
            committer.add(finished(staging, f"f{n}", n))
        for _ in range(20):  # turns of the loop in which a commit could start
            await asyncio.sleep(0)
        assert len(store.committed) == 1  # one short of a batch: it waits

        committer.add(finished(staging, "full", COMMIT_BATCH))
        await committed_count(store, 1 + COMMIT_BATCH)
        committer.add(finished(staging, "straggler", COMMIT_BATCH + 1))
        committer.hurry()
        await committed_count(store, 2 + COMMIT_BATCH)
        await committer.close()

    assert (fs.root / "s" / "straggler").read_bytes() == b"straggler"
