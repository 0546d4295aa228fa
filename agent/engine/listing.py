"""A pass's listing, streamed: list -> plan -> queue, one window at a time.

The source's listing is read by its own task, a couple of windows ahead; each window takes
what has arrived (at most `WINDOW` documents, at least one), so the first downloads are
queued as soon as the first page is in, and later windows grow while the listing runs
ahead of planning. Per window: the state's rows of its documents and the holders of the
paths it contests are read, the window is planned (`plan_window`, pure), skips, moves and
sidecars are applied, and downloads are queued for the workers (`Workers.wake`).

Memory stays bounded by the window, whatever the size of the source, except for the ids
seen (the removal check needs them): once the whole listing is in, one streamed query
finds the documents of the state it did not have. A listing that fails part way removes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.engine.commit import SIDECAR_SUFFIX, prune
from agent.engine.plan import (
    Move,
    Plan,
    Removal,
    Sidecar,
    contested,
    plan_window,
    removal,
    wanted_paths,
)
from agent.errors import LeaseLostError
from agent.models import DocState, RemoteDocument, metadata_digest
from agent.state.store import Store
from agent.transfer.files import write_atomic

if TYPE_CHECKING:
    from agent.engine.sync import SourceRuntime

WINDOW = 1000  # listed documents planned together, at most
AHEAD = 2 * WINDOW  # listed documents read ahead of planning, at most
REMOVALS = 500  # removed documents recorded per transaction


@dataclass
class Listed:
    """What the listing part of a pass found and did."""

    listed: int = 0
    queued: int = 0
    moved: int = 0
    skipped: int = 0
    removed: int = 0
    unchanged: int = 0


class _End:
    """The listing is over (`error` set: it failed part way)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Ahead:
    """Listed documents read ahead of planning. The reader waits only when it is `limit`
    documents ahead; planning takes what has arrived, waiting only for the first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[RemoteDocument] = deque()
        self.end: _End | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()

    async def put(self, doc: RemoteDocument) -> None:
        self.items.append(doc)
        self._arrived.set()
        if len(self.items) >= self.limit:
            self._room.clear()
            await self._room.wait()

    def finish(self, end: _End) -> None:
        self.end = end
        self._arrived.set()

    async def take(self, most: int) -> tuple[list[RemoteDocument], _End | None]:
        """Up to `most` documents, and the end once nothing is left before it."""
        while not self.items and self.end is None:
            self._arrived.clear()
            await self._arrived.wait()
        window = [self.items.popleft() for _ in range(min(most, len(self.items)))]
        if len(self.items) < self.limit:
            self._room.set()
        return window, None if self.items else self.end


class Lister:
    """Lists one source and queues what its documents need (one pass)."""

    def __init__(
        self,
        store: Store,
        rt: SourceRuntime,
        *,
        mirror_dir: Path,
        staging: Path,
        queued: Callable[[], None],
        still_leased: Callable[[], bool],
    ) -> None:
        self.store = store
        self.rt = rt
        self.name = rt.config.name
        self.mirror_dir = mirror_dir
        self.staging = staging
        self.queued = queued  # wakes the workers
        self.still_leased = still_leased
        self.seen: set[str] = set()
        self.counts = Listed()

    async def run(self) -> Listed:
        async for window in self._windows():
            if not self.still_leased():
                raise LeaseLostError(f"{self.name}: the pass lease was taken over")
            await self._window(window)
        await self._remove_unlisted()
        return self.counts

    async def _windows(self) -> AsyncIterator[list[RemoteDocument]]:
        """The listing in windows of new ids (a repeated id keeps its first listing)."""
        ahead = _Ahead(AHEAD)
        reader = asyncio.create_task(self._read(ahead), name=f"list:{self.name}")
        try:
            while True:
                window, end = await ahead.take(WINDOW)
                fresh = [d for d in window if d.remote_id not in self.seen]
                self.seen.update(d.remote_id for d in fresh)
                self.counts.listed += len(fresh)
                if fresh:
                    yield fresh
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ahead: _Ahead) -> None:
        try:
            async for doc in self.rt.source.list_documents():
                await ahead.put(doc)
        except Exception as exc:  # handed to the planning side, which raises it
            ahead.finish(_End(exc))
        else:
            ahead.finish(_End())

    async def _window(self, window: Sequence[RemoteDocument]) -> None:
        documents = self.store.documents
        wanted = wanted_paths(self.name, window)
        probe = [
            (d.remote_id, d.version, wanted[d.remote_id], _digest(d))
            for d in window
            if d.remote_id in wanted
        ]
        unsettled = await documents.unsettled(self.name, probe)
        todo = [d for d in window if d.remote_id not in wanted or d.remote_id in unsettled]
        self.counts.unchanged += len(window) - len(todo)  # mirrored as listed: nothing to do
        if not todo:
            return
        wanted = {d.remote_id: wanted[d.remote_id] for d in todo if d.remote_id in wanted}
        known = await documents.known(self.name, [d.remote_id for d in todo])
        keys = contested(wanted, known)
        holders = await documents.holders(self.name, keys) if keys else {}
        plan = plan_window(todo, wanted, known, holders)
        await self._apply(plan)
        if plan.downloads:
            items = [(d.doc, d.rel_path) for d in plan.downloads]
            self.counts.queued += await self.store.jobs.enqueue(self.name, items)
            self.queued()

    async def _apply(self, plan: Plan) -> None:
        """Record skips, carry out moves, rewrite sidecars."""
        counts = self.counts
        counts.skipped += len(plan.skips)
        counts.moved += len(plan.moves)
        counts.unchanged += plan.unchanged + plan.waiting
        await self.store.documents.record_states(
            self.name, [(d, DocState.SKIPPED, d.skip_reason or "skipped", None) for d in plan.skips]
        )
        if plan.moves:
            moved = [await self._move(m) for m in plan.moves]
            await self.store.documents.record_moves(self.name, moved)
        for sidecar in plan.sidecars:
            await self._write_sidecar(sidecar)

    async def _move(self, move: Move) -> tuple[str, str, str]:
        old = self.mirror_dir / move.old_path
        new = self.mirror_dir / move.new_path
        await asyncio.to_thread(_rename, old, new, self.rt.config.write_metadata)
        self.rt.log.info("document.moved", old=move.old_path, new=move.new_path)
        return move.doc.remote_id, move.doc.name, move.new_path

    async def _write_sidecar(self, sidecar: Sidecar) -> None:
        """The listing's metadata changed while the document did not: rewrite the sidecar."""
        text, digest = metadata_digest(sidecar.doc.metadata)
        if text is not None and self.rt.config.write_metadata:
            dest = self.mirror_dir / (sidecar.rel_path + SIDECAR_SUFFIX)
            await asyncio.to_thread(write_atomic, dest, text.encode() + b"\n", self.staging)
        await self.store.documents.record_metadata(self.name, sidecar.doc.remote_id, text, digest)

    async def _remove_unlisted(self) -> None:
        """Mark removed what the complete listing did not have (streamed, in batches)."""
        batch: list[Removal] = []
        async for gone in self.store.documents.unlisted(self.name, self.seen):
            batch.append(removal(gone))
            if len(batch) >= REMOVALS:
                await self._remove(batch)
                batch = []
        await self._remove(batch)

    async def _remove(self, batch: Sequence[Removal]) -> None:
        if not batch:
            return
        self.counts.removed += len(batch)
        await self.store.documents.record_removed(self.name, [r.remote_id for r in batch])
        for rel_path in (r.prune_path for r in batch if r.prune_path):
            await asyncio.to_thread(prune, self.mirror_dir / rel_path)
            self.rt.log.info("document.pruned", path=rel_path)


def _digest(doc: RemoteDocument) -> str | None:
    return None if doc.metadata is None else metadata_digest(doc.metadata)[1]


def _rename(old: Path, new: Path, sidecar: bool) -> None:
    if not old.exists():
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old, new)
    if sidecar:
        old_meta = old.with_name(old.name + SIDECAR_SUFFIX)
        if old_meta.exists():
            os.replace(old_meta, new.with_name(new.name + SIDECAR_SUFFIX))
    with contextlib.suppress(OSError):
        old.parent.rmdir()  # only succeeds when the folder became empty
