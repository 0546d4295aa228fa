"""A pass's listing, streamed: list -> plan -> queue, one window at a time.

The source's listing is read by its own task, a couple of windows ahead; each window takes
what has arrived (at most `WINDOW` documents, at least one), so the first downloads are
queued as soon as the first page is in, and later windows grow while the listing runs
ahead of planning. Per window: the state's rows of its documents and the holders of the
paths it contests are read, the window is planned (`plan_window`, pure), skips, moves and
sidecars are applied, and downloads are queued for the workers of every replica (`queued`).

Each window also looks at the mirror (one lstat per file, off the loop) for the files of its
mirrored documents, so files deleted by hand are restored or forgotten (`plan`), at the files
of removed documents listed again, taken back without a download when still as the agent
wrote them, and at the paths its downloads target where the state knows no file of the
agent's: a file there that passes the quick check is handed to the workers to adopt in
place instead of downloading.

Memory stays bounded by the window, whatever the size of the source, except for the ids
seen (the removal check needs them): once the whole listing is in, one streamed query
finds the documents of the state it did not have, unless a count shows there are none (every
row not removed was found settled). A listing that fails part way removes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.engine.commit import SIDECAR_SUFFIX, prune
from agent.engine.filtered_out import remove_filtered_out
from agent.engine.filters import (
    Filters,
    apply_filters,
    files_to_remove,
    recall_size_exclusions,
)
from agent.engine.moves import Mover
from agent.engine.plan import (
    Download,
    OnLocalDelete,
    Plan,
    Removal,
    Sidecar,
    contested,
    deletion_policy,
    look_for_missing,
    plan_window,
    removal,
    returning,
    split_adoptions,
    unclaimed_targets,
    wanted_paths,
)
from agent.engine.survey import on_disk, returned_intact
from agent.errors import LeaseLostError
from agent.models import DocState, RemoteDocument, metadata_digest
from agent.state.store import Store
from agent.transfer.files import find_missing, lstat_all
from agent.transfer.mirrorfs import Folder, MirrorFS, off_loop

if TYPE_CHECKING:
    from agent.engine.sync import SourceRuntime

WINDOW = 1000  # listed documents planned together, at most
AHEAD = 2 * WINDOW  # listed documents read ahead of planning, at most
REMOVALS = 500  # removed documents recorded per transaction
FORGOTTEN = "deleted by hand; on_local_delete = forget"
# The ids listed so far in a pass. A dict and not a set: a dict holding only strings is never
# tracked by the garbage collector, while a set is, and every full collection would walk
# its million entries (0.1-0.25 s each, a dozen times a re-poll of 1,000,000 documents).
Seen = dict[str, None]


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

    def add(self, doc: RemoteDocument) -> bool:
        """Keep `doc`; True when the reader is to wait for room (`room`) before the next."""
        items = self.items
        items.append(doc)
        if len(items) == 1:
            self._arrived.set()
        return len(items) >= self.limit

    async def room(self) -> None:
        self._room.clear()
        if len(self.items) >= self.limit:
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
        fs: MirrorFS,
        staging: Folder,
        queued: Callable[[], Awaitable[None]],
        adoptable: Callable[[str, Sequence[Download]], None],
        still_leased: Callable[[], bool],
    ) -> None:
        self.store = store
        self.rt = rt
        self.name = rt.config.name
        self.fs = fs
        self.staging = staging
        self.queued = queued  # wakes the workers, here and on every replica
        self.adoptable = adoptable  # tells the workers which queued files to adopt in place
        self.still_leased = still_leased
        self.filters = Filters.of(rt.config)
        self.seen: Seen = {}
        self.settled = 0  # listed documents mirrored as listed (each has a row, not removed)
        self.counts = Listed()
        self.folder_warned = False
        self.mover = Mover(store, fs, self.name, sidecars=rt.config.write_metadata, log=rt.log)

    async def run(self) -> Listed:
        await self.mover.recover()  # what a process killed while moving files left
        async with contextlib.aclosing(self._windows()) as windows:  # a failure stops the reader
            async for window in windows:
                self._check_lease()
                await self._window(window)
        await self._remove_unlisted()
        return self.counts

    def _check_lease(self) -> None:
        """Stop here when the pass lease is no longer this replica's: another replica may be
        listing the source now, and its plan, not this one, is to be carried out."""
        if not self.still_leased():
            raise LeaseLostError(f"{self.name}: the pass lease ran out or was taken over")

    async def _windows(self) -> AsyncGenerator[list[RemoteDocument], None]:
        """The listing in windows of new ids (a repeated id keeps its first listing)."""
        ahead = _Ahead(AHEAD)
        reader = asyncio.create_task(self._read(ahead), name=f"list:{self.name}")
        try:
            while True:
                window, end = await ahead.take(WINDOW)
                fresh = first_listings(window, self.seen)
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
                if ahead.add(doc):  # a call per document, a wait only when far ahead
                    await ahead.room()
        except Exception as exc:  # handed to the planning side, which raises it
            ahead.finish(_End(exc))
        else:
            ahead.finish(_End())

    async def _window(self, listed: Sequence[RemoteDocument]) -> None:
        documents = self.store.documents
        filtered = apply_filters(self.filters, self.name, listed)  # left out: skipped
        window = filtered.listing
        wanted = wanted_paths(self.name, window)  # by id, in the window's order
        versions = [d.version for d in window if d.remote_id in wanted]
        digests = (
            [_digest(d) for d in window if d.remote_id in wanted]
            if any(d.metadata is not None for d in window)
            else ()
        )
        unsettled = await documents.unsettled(
            self.name, list(wanted), versions, list(wanted.values()), digests
        )
        self.settled += len(wanted) - len(unsettled)
        ids = _needing(window, wanted, unsettled)
        known = await documents.known(self.name, ids) if ids else {}
        missing, policy = await self._missing(look_for_missing(wanted, unsettled, known))
        gone = [rid for rid in missing if rid not in known]
        if gone:  # mirrored as listed, but the file is gone: planned after all
            known.update(await documents.known(self.name, gone))
        todo = (
            [d for d in window if d.remote_id in ids or d.remote_id in missing]
            if ids or missing
            else []
        )
        self.counts.unchanged += len(window) - len(todo)  # mirrored as listed: nothing to do
        if not todo:
            return
        todo = recall_size_exclusions(self.filters, todo, known, filtered.excluded)
        wanted = {d.remote_id: wanted[d.remote_id] for d in todo if d.remote_id in wanted}
        keys = contested(wanted, known)
        holders = await documents.holders(self.name, keys) if keys else {}
        intact = await returned_intact(self.fs, returning(todo, known))
        plan = plan_window(
            todo, wanted, known, holders, missing=missing, intact=intact, on_local_delete=policy
        )
        await self._apply(plan)
        on_exclude = self.rt.config.on_filter_exclude
        going = files_to_remove(filtered.excluded, known, on_exclude)
        await remove_filtered_out(self.store, self.fs, self.name, going, self.rt.log)
        if plan.downloads:
            await self._hint_adoptions(plan.downloads)
            items = [(d.doc, d.rel_path) for d in plan.downloads]
            self.counts.queued += await self.store.jobs.enqueue(self.name, items)
            await self.queued()

    async def _missing(self, expected: Mapping[str, str]) -> tuple[set[str], OnLocalDelete]:
        """The ids among `expected` (id: path) whose file is gone, and the deletion policy
        that applies to them (one lstat per file: a window is a sliver of a big folder)."""
        configured = self.rt.config.on_local_delete
        if not expected:
            return set(), configured
        presence = await off_loop(find_missing, self.fs, self.name, expected.values(), 0)
        gone = presence.missing
        missing = {rid for rid, path in expected.items() if path in gone} if gone else set()
        policy = deletion_policy(configured, presence.source_folder)
        if missing and policy != configured and not self.folder_warned:
            self.folder_warned = True
            self.rt.log.warning("mirror.source_folder_missing", restoring=len(missing))
        return missing, policy

    async def _hint_adoptions(self, downloads: Sequence[Download]) -> None:
        """Files at the targets that pass the quick check: adopted by the workers in place
        (one lstat per target where the state knows no file of the agent's)."""
        targets = unclaimed_targets(downloads)
        if not targets:
            return
        found = await off_loop(lstat_all, self.fs, targets)
        adopt, _ = split_adoptions(downloads, on_disk(found))
        if adopt:
            self.adoptable(self.name, adopt)

    async def _apply(self, plan: Plan) -> None:
        """Record skips and forgotten files, carry out moves, rewrite sidecars."""
        counts, log = self.counts, self.rt.log
        counts.skipped += len(plan.skips)
        counts.moved += len(plan.moves)
        counts.unchanged += plan.unchanged + plan.waiting
        await self.store.documents.record_states(
            self.name, [(d, DocState.SKIPPED, d.skip_reason or "skipped", None) for d in plan.skips]
        )
        await self.store.documents.record_states(
            self.name, [(d, DocState.DELETED_LOCALLY, FORGOTTEN, None) for d in plan.forgotten]
        )
        for doc in plan.forgotten:
            log.info("document.deleted_locally", remote_id=doc.remote_id)
        if plan.returned:
            counts.unchanged += len(plan.returned)
            await self.store.documents.record_returned(
                self.name, [d.remote_id for d in plan.returned]
            )
            log.info("document.listed_again", count=len(plan.returned))
        for item in plan.downloads:
            if item.restore:
                log.info("document.restoring", remote_id=item.doc.remote_id, path=item.rel_path)
        if plan.moves:
            await self.mover.carry_out(plan.moves)
        for sidecar in plan.sidecars:
            await self._write_sidecar(sidecar)

    async def _write_sidecar(self, sidecar: Sidecar) -> None:
        """The listing's metadata changed while the document did not: rewrite the sidecar."""
        text, digest = metadata_digest(sidecar.doc.metadata)
        if text is not None and self.rt.config.write_metadata:
            data = text.encode() + b"\n"
            await off_loop(_write_sidecar, self.fs, sidecar.rel_path, data, self.staging)
        await self.store.documents.record_metadata(self.name, sidecar.doc.remote_id, text, digest)

    async def _remove_unlisted(self) -> None:
        """Mark removed what the complete listing did not have (streamed, in batches).

        Every document found settled in this pass has a row not removed, and rows leave
        that set only here, under the pass lease. So when there are exactly as many such
        rows as settled documents, they are those documents, all listed: nothing to remove,
        and their ids need not be read."""
        self._check_lease()
        if await self.store.documents.unremoved(self.name) == self.settled:
            return
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
        self._check_lease()  # between batches: a lost lease removes nothing more
        self.counts.removed += len(batch)
        await self.store.documents.record_removed(self.name, [r.remote_id for r in batch])
        for rel_path in (r.prune_path for r in batch if r.prune_path):
            await off_loop(prune, self.fs, rel_path)
            self.rt.log.info("document.pruned", path=rel_path)


def _needing(
    window: Sequence[RemoteDocument], wanted: Mapping[str, str], unsettled: Collection[str]
) -> set[str]:
    """The ids of the window the state's rows are needed for: skipped or unsettled."""
    if not unsettled and len(wanted) == len(window):
        return set()  # a re-poll of an unchanged source: no look at each document
    return {d.remote_id for d in window if d.remote_id not in wanted or d.remote_id in unsettled}


def first_listings(window: Sequence[RemoteDocument], seen: Seen) -> list[RemoteDocument]:
    """The documents of `window` not in `seen` (added to it): a repeated id keeps its first."""
    new = {d.remote_id for d in window}.difference(seen)
    if len(new) == len(window):  # no repeat (almost every window): no lookup per document
        seen.update(dict.fromkeys(new))
        return list(window)
    fresh = []
    for doc in window:
        if doc.remote_id in new:
            new.discard(doc.remote_id)
            seen[doc.remote_id] = None
            fresh.append(doc)
    return fresh


def _digest(doc: RemoteDocument) -> str | None:
    return None if doc.metadata is None else metadata_digest(doc.metadata)[1]


def _write_sidecar(fs: MirrorFS, rel_path: str, data: bytes, staging: Folder) -> None:
    parent, _, name = rel_path.rpartition("/")
    with fs.make_folder(parent) as folder:
        folder.write_atomic(name + SIDECAR_SUFFIX, data, staging)
