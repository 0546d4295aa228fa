"""`on_filter_exclude = "remove"`: the mirrored files of documents the filters leave out go.

Each file is deleted through the mirror's folder handles (`agent.transfer.mirrorfs`), its
metadata sidecar with it, and the folders it leaves empty below the source's folder. A file
edited here since the agent wrote it is not the agent's to delete: it is set aside as a
local copy (`name (local copy <date>).ext`) instead. The state then forgets the file and
the journal says `document.removed` (`file_deleted`, and the `filter` rule) in one
transaction; a pass cut short in between deletes nothing twice and finishes the record on
the next pass, which finds the row still holding the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.engine.commit import SIDECAR_SUFFIX
from agent.engine.filters import ExcludedFile
from agent.state.store import Store
from agent.transfer.files import locally_edited
from agent.transfer.mirrorfs import MirrorFS, off_loop


async def remove_filtered_out(
    store: Store, fs: MirrorFS, source: str, removals: Sequence[ExcludedFile], log: Any
) -> int:
    """Delete these files (see the module docstring); how many the state let go of."""
    if not removals:
        return 0
    digests = await store.documents.recorded_digests(source, [r.remote_id for r in removals])
    done: list[tuple[str, dict[str, object]]] = []
    for removal in removals:
        kept = await off_loop(_remove_file, fs, removal, digests.get(removal.remote_id))
        data: dict[str, object] = {"filter": removal.rule}
        if kept is not None:
            data["local_copy"] = kept
        log.info("document.filtered_out", path=removal.rel_path, rule=removal.rule, kept_as=kept)
        done.append((removal.remote_id, data))
    await store.documents.record_files_removed(source, done)
    return len(done)


def _remove_file(fs: MirrorFS, removal: ExcludedFile, digest: str | None) -> str | None:
    """Delete one file and its sidecar; the name it was set aside under when edited here."""
    folder = fs.parent(removal.rel_path)
    if folder is None:
        return None
    kept = None
    with folder:
        name = removal.rel_path.rpartition("/")[2]
        if locally_edited(folder, name, removal.size, removal.mtime_ns, digest):
            kept = folder.set_aside(name)
        else:
            folder.unlink(name)
        folder.unlink(name + SIDECAR_SUFFIX)
        folder.fsync()
    _remove_empty_folders(fs, removal.rel_path)
    return kept


def _remove_empty_folders(fs: MirrorFS, rel_path: str) -> None:
    """The folders above the file that are now empty, up to (not including) the source's."""
    parts = rel_path.split("/")[:-1]
    while len(parts) > 1:
        leaf = parts.pop()
        holder = fs.folder("/".join(parts), repair=False)
        if holder is None:
            return
        with holder:
            holder.remove_if_empty(leaf)
            if holder.lstat(leaf) is not None:
                return  # not empty: nor is anything above it
