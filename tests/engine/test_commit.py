"""The committer: a stop never loses a batch, whether it was waiting or being flushed."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.engine.commit import Committer, Finished
from agent.engine.plan import Download
from agent.models import Fetched, JobSpec, RemoteDocument
from agent.state.documents import Mirrored
from agent.transfer.mirrorfs import Folder, MirrorFS


class HeldStore:
    """The store's three calls the committer makes; the first `mark_verified` waits for `go`."""

    def __init__(self) -> None:
        self.jobs = self
        self.documents = self
        self.inside = asyncio.Event()
        self.go = asyncio.Event()
        self.committed: list[Mirrored] = []

    async def mark_verified(self, _items: Sequence[Any]) -> None:
        self.inside.set()
        await self.go.wait()

    async def recorded_sha256(self, _source: str, _ids: Sequence[str]) -> dict[str, str]:
        return {}

    async def commit_mirrored(
        self, _source: str, items: Sequence[Mirrored], **_journal: object
    ) -> None:
        self.committed += items


def finished(staging: Folder, name: str, job_id: int) -> Finished:
    data = name.encode()
    (staging.path / f"{name}.part").write_bytes(data)
    doc = RemoteDocument(remote_id=name, version="1", name=name)
    job = JobSpec(job_id, "s", name, "1", f"s/{name}", temp_name=f"{name}.part")
    fetched = Fetched(
        str(staging.path / f"{name}.part"), len(data), hashlib.sha256(data).hexdigest(), None
    )
    return Finished(Download(doc, f"s/{name}"), job, fetched, None)


async def test_files_that_arrive_during_the_last_flush_are_committed_too(tmp_path: Path) -> None:
    fs = MirrorFS(tmp_path / "mirror")
    store = HeldStore()
    with fs.open_staging() as staging:
        committer = Committer(store, fs, staging, "s", write_metadata=False)  # type: ignore[arg-type]
        stop = asyncio.Event()
        flusher = asyncio.create_task(committer.flush_periodically(stop, interval=0.01))
        await committer.add(finished(staging, "a.bin", 1))
        await store.inside.wait()  # a periodic flush has taken a.bin and is in flight
        await committer.add(finished(staging, "b.bin", 2))
        stop.set()  # the pass ends while that flush runs
        store.go.set()
        await flusher

    assert sorted(m.rel_path for m in store.committed) == ["s/a.bin", "s/b.bin"]
    assert (fs.root / "s" / "b.bin").read_bytes() == b"b.bin"
