"""Renames in the mirror that a crash cannot leave unrecorded: documents renamed remotely.

Files are renamed first and their new paths recorded after, as one unit that runs to its
end even when the pass is cancelled (`finish`); a recording that fails moves the files
back. A process killed in between (SIGKILL, a power cut) can do neither: its files sit at
their new paths under rows that still name the old ones. They would look deleted by hand:
fetched again, or forgotten under `forget`; renamed again remotely before the next pass,
restored under the newest name beside the file left at the middle one.

So the moves are written down first (`IN_FLIGHT`, one of the source's cursors, which the
same database keeps), and the next pass's listing begins by recording where each file
really is (`recover`): at its new path, still at its old one, or at the temporary name a
cycle of renames goes through; a file is recognised by the size and digest its row records.
The pass then plans from there as from any other recorded path.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from agent.engine.commit import SIDECAR_SUFFIX, finish
from agent.engine.plan import MOVE_TEMP_SUFFIX, Move, order_moves
from agent.models import KnownDocument
from agent.state.store import Store
from agent.transfer.files import identical
from agent.transfer.mirrorfs import MirrorFS, off_loop

IN_FLIGHT = "sync-agent.moves-in-flight"  # the cursor holding moves not yet recorded
Recorded = tuple[str, str, str]  # (remote_id, name, rel_path), as `record_moves` takes them


class Mover:
    """Moves one source's files in the mirror and records them (see the module docstring)."""

    def __init__(self, store: Store, fs: MirrorFS, source: str, *, sidecars: bool, log: Any):
        self.store = store
        self.fs = fs
        self.source = source
        self.sidecars = sidecars  # metadata sidecars move with their files
        self.log = log
        self.cursors = store.for_source(source)

    async def carry_out(self, moves: Sequence[Move]) -> None:
        """Rename the files of `moves` and record their new paths, to the end even when the
        caller is cancelled meanwhile."""
        await finish(asyncio.ensure_future(self._carry_out(moves)))

    async def _carry_out(self, moves: Sequence[Move]) -> None:
        steps = order_moves(moves)
        await self.cursors.save_cursor(IN_FLIGHT, json.dumps([_written(m) for m in moves]))
        await off_loop(apply_moves, self.fs, steps, self.sidecars)
        try:
            await self.store.documents.record_moves(
                self.source, [(m.doc.remote_id, m.doc.name, m.new_path) for m in moves]
            )
        except BaseException:
            back = [(new, old) for old, new in reversed(steps)]
            await off_loop(apply_moves, self.fs, back, self.sidecars)
            raise
        await self.cursors.save_cursor(IN_FLIGHT, None)
        for move in moves:
            self.log.info("document.moved", old=move.old_path, new=move.new_path)

    async def recover(self) -> None:
        """Record where the files of moves a killed process left unrecorded are now."""
        saved = await self.cursors.load_cursor(IN_FLIGHT)
        if saved is None:
            return
        moves: list[list[str]] = json.loads(saved)
        documents = self.store.documents
        known = await documents.known(self.source, [m[0] for m in moves])
        digests = await documents.recorded_digests(self.source, list(known)) if known else {}
        found = await off_loop(_locate, self.fs, moves, known, digests, self.sidecars)
        if found:
            await documents.record_moves(self.source, found)
        await self.cursors.save_cursor(IN_FLIGHT, None)
        for remote_id, _, rel_path in found:
            self.log.warning("document.move_recovered", remote_id=remote_id, path=rel_path)


def _written(move: Move) -> list[str]:
    return [move.doc.remote_id, move.doc.name, move.old_path, move.new_path]


def _locate(
    fs: MirrorFS,
    moves: Sequence[Sequence[str]],
    known: Mapping[str, KnownDocument],
    digests: Mapping[str, str],
    sidecars: bool,
) -> list[Recorded]:
    """The documents whose file is no longer where their row says, and where it is."""
    found: list[Recorded] = []
    for remote_id, name, old, new in moves:
        row, digest = known.get(remote_id), digests.get(remote_id)
        if row is None or row.size is None or digest is None:
            continue
        for path in (new, old, old + MOVE_TEMP_SUFFIX):
            if _holds(fs, path, row.size, digest):
                if path != row.rel_path:
                    found.append((remote_id, name, path))
                    if sidecars and path != old:
                        _move_file(fs, old + SIDECAR_SUFFIX, path + SIDECAR_SUFFIX)
                break
    return found


def _holds(fs: MirrorFS, rel_path: str, size: int, digest: str) -> bool:
    folder = fs.parent(rel_path, repair=False)
    if folder is None:
        return False
    with folder:
        return identical(folder, rel_path.rpartition("/")[2], size, digest)


def apply_moves(fs: MirrorFS, steps: Sequence[tuple[str, str]], sidecars: bool) -> None:
    """Carry out (old, new) renames in order; a missing old file is left for a restore."""
    for old, new in steps:
        _move_file(fs, old, new)
        if sidecars:
            _move_file(fs, old + SIDECAR_SUFFIX, new + SIDECAR_SUFFIX)
        old_parent = old.rpartition("/")[0]
        if "/" in old_parent:  # a sub-folder the move may have emptied, never the source's
            grand, _, leaf = old_parent.rpartition("/")
            holder = fs.folder(grand)
            if holder is not None:
                with holder:
                    holder.remove_if_empty(leaf)


def _move_file(fs: MirrorFS, old: str, new: str) -> None:
    """Rename one regular file; whatever already sits at `new` is kept aside, not replaced."""
    source = fs.parent(old)
    if source is None:
        return
    with source:
        old_name = old.rpartition("/")[2]
        found = source.lstat(old_name)
        if found is None or not stat.S_ISREG(found.st_mode):
            source.clear_link(old_name)
            return
        new_parent, _, new_name = new.rpartition("/")
        with fs.make_folder(new_parent) as dest:
            taken = dest.lstat(new_name)
            if taken is not None and not stat.S_ISLNK(taken.st_mode):
                dest.set_aside(new_name)
            dest.move_in(source, old_name, new_name)
            dest.fsync()
        source.fsync()
