"""What a pass must do, decided by pure functions, one window of the listing at a time.

A pass streams: each window (a few hundred listed documents) is planned against the state's
rows of those documents and the paths other documents hold, and its downloads are queued
before the next window is read. Nothing here needs the whole listing or the whole state.

Paths. Every listed document wants `mirror_path(source, folder, name)`; paths are compared
casefolded, for the file systems that fold case. The rule, decided per window:

1. A document that holds its path keeps it: the state records its file there (mirrored),
   or its queued job will place it there.
2. A path another document holds is taken: the newcomer gets a sibling name with a suffix
   from its own id (`name (~1a2b3c4d).ext`). A holder leaving its path in this same pass
   (renamed or removed) frees it for the next pass, not this one: its claim is known only
   when its window comes, and no rename must land where a file still is.
3. Among documents that want a free path, the first listed in this pass wins; the claim is
   persisted with its job before the next window is planned, so later windows see it.

Once held, a path stays with its document across passes, whatever the listing order; a
sibling name moves to the plain one in a later pass once the plain one is free.

Files the user deleted. A mirrored file found missing (each window's look at the mirror
says so) is downloaded again under `on_local_delete = "restore"` (the default: a mirror
reflects the remote). Under `"forget"` the document is recorded as deleted locally and left
alone while its remote version stays the same; a newer version is news the user has not
seen, so it is mirrored again like a new document. When the source's whole folder is gone
the mirror was lost (an unmounted volume, a deleted folder), not curated: everything is
restored whatever the setting.

Documents listed again. A document the listing dropped is recorded removed and its file
kept (unless its source asked for pruning): a flaky server's empty page or a folder briefly
out of reach must not cost a second download. Listed again at the same version and path,
with its file still at the recorded size and mtime, it is mirrored again as it is.

Files the state does not know about (its database was lost, or a file was copied in). A
document whose path holds such a file is normally fetched into staging and the commit step
compares bytes: identical files are adopted, different ones kept beside as local copies.
The download is skipped (rsync's "quick check") when the listing gives both a size and a
modification time and the file has that size and that mtime to the second: the agent sets
each file it places to the document's remote modification time, so that is the file the
agent would have written. Adoption still hashes the file, to record what it holds. A
different size proves the file different; any other mismatch is settled by the bytes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from agent.engine.paths import disambiguate, mirror_path, plain_names
from agent.models import DocState, KnownDocument, RemoteDocument, metadata_digest
from agent.state.jobs import path_key

OnLocalDelete = Literal["restore", "forget"]
MOVE_TEMP_SUFFIX = ".sync-agent-move"  # a cycle of renames goes through `<old><suffix>`
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Download:
    doc: RemoteDocument
    rel_path: str
    known: KnownDocument | None = None  # what the mirror holds now, to notice local edits
    restore: bool = False  # the file was deleted by hand and is fetched again


@dataclass(frozen=True, slots=True)
class OnDisk:
    """What one lstat found at a path the state holds no file for."""

    size: int
    mtime_ns: int
    regular: bool


@dataclass(frozen=True, slots=True)
class Move:
    doc: RemoteDocument
    old_path: str
    new_path: str


@dataclass(frozen=True, slots=True)
class Sidecar:
    doc: RemoteDocument
    rel_path: str


@dataclass
class Plan:
    """One window's plan."""

    downloads: list[Download] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    skips: list[RemoteDocument] = field(default_factory=list)
    sidecars: list[Sidecar] = field(default_factory=list)
    forgotten: list[RemoteDocument] = field(default_factory=list)  # deleted by hand, let go
    returned: list[RemoteDocument] = field(default_factory=list)  # listed again, file intact
    waiting: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class Removal:
    """A document the listing no longer has: mark it removed, and delete its file when the
    source asked for that (`prune`)."""

    remote_id: str
    prune_path: str | None


def wanted_paths(source: str, window: Sequence[RemoteDocument]) -> dict[str, str]:
    """The path each document of the window wants (the skipped want none), by id."""
    wanting = [doc for doc in window if doc.skip_reason is None]
    if not any(doc.folder for doc in wanting) and plain_names([doc.name for doc in wanting]):
        return {doc.remote_id: f"{source}/{doc.name}" for doc in wanting}  # as `mirror_path`
    return {doc.remote_id: mirror_path(source, doc.folder, doc.name) for doc in wanting}


def contested(wanted: Mapping[str, str], known: Mapping[str, KnownDocument]) -> list[str]:
    """The path keys to look up holders of: those wanted by documents that do not hold them
    already (an unchanged document costs no lookup)."""
    return [path_key(path) for rid, path in wanted.items() if not _holds(known.get(rid), path)]


def plan_window(
    window: Sequence[RemoteDocument],
    wanted: Mapping[str, str],
    known: Mapping[str, KnownDocument],
    holders: Mapping[str, Collection[str]],
    *,
    missing: Collection[str] = frozenset(),
    intact: Collection[str] = frozenset(),
    on_local_delete: OnLocalDelete = "restore",
) -> Plan:
    """Compare a window of the listing with the state: what to download, move or skip.

    `wanted` holds the paths the documents want (`wanted_paths`); `known` the state's
    rows of the window's documents; `holders` the ids holding each contested path key
    (`contested`), claims of earlier windows included; `missing` the ids of mirrored
    documents whose file is gone from the mirror; `intact` the ids of removed documents
    whose file is still as the agent wrote it (`intact_files`).
    """
    plan = Plan()
    claimed: dict[str, str] = {}  # path key -> the id that claimed it in this window
    for doc in window:
        k = known.get(doc.remote_id)
        if doc.skip_reason is not None:
            _skip(plan, doc, k)
            continue
        path = _assign(doc.remote_id, wanted[doc.remote_id], k, holders, claimed)
        claimed[path_key(path)] = doc.remote_id
        if doc.remote_id in missing and _unchanged(doc, k):
            _deleted_by_hand(plan, doc, k, path, on_local_delete)
        elif doc.remote_id in intact and _returning(doc, k, path):
            plan.returned.append(doc)
        else:
            _decide(plan, doc, k, path)
    return plan


def returning(
    window: Sequence[RemoteDocument], known: Mapping[str, KnownDocument]
) -> dict[str, KnownDocument]:
    """The removed documents listed again at the version whose file their rows record, by
    path: their files, when still as the agent wrote them, are taken back without a download
    (a listing that briefly dropped documents must not cost the mirror a second download)."""
    back = {}
    for doc in window:
        k = known.get(doc.remote_id)
        if k is not None and k.rel_path and _returning(doc, k, k.rel_path):
            back[k.rel_path] = k
    return back


def intact_files(
    candidates: Mapping[str, KnownDocument], on_disk: Mapping[str, OnDisk]
) -> set[str]:
    """The ids of `candidates` (by path) whose file has the size and mtime recorded."""
    return {
        k.remote_id
        for path, k in candidates.items()
        if (found := on_disk.get(path)) is not None
        and found.regular
        and (found.size, found.mtime_ns) == (k.size, k.mtime_ns)
    }


def deletion_policy(configured: OnLocalDelete, source_folder_present: bool) -> OnLocalDelete:
    """A source folder gone as a whole is a lost mirror: restore it, whatever the setting."""
    return configured if source_folder_present else "restore"


def look_for_missing(
    wanted: Mapping[str, str], unsettled: Collection[str], known: Mapping[str, KnownDocument]
) -> dict[str, str]:
    """Where each mirrored document of the window at its listed version should have its
    file (by id): the settled ones at the path they want, the others at their known path."""
    paths = (
        {rid: path for rid, path in wanted.items() if rid not in unsettled}
        if unsettled
        else dict(wanted)
    )
    for rid, k in known.items():
        if k.state == DocState.MIRRORED and k.rel_path and rid not in paths:
            paths[rid] = k.rel_path
    return paths


def assign_one(
    remote_id: str,
    path: str,
    known: KnownDocument | None,
    holders: Mapping[str, Collection[str]],
) -> str:
    """The path of one document planned alone (an on-demand fetch): the rule above."""
    return _assign(remote_id, path, known, holders, {})


def removal(gone: KnownDocument) -> Removal:
    """What to do about a document of the state the whole listing did not have."""
    prunes = gone.prune and gone.rel_path and gone.state == DocState.MIRRORED
    return Removal(gone.remote_id, gone.rel_path if prunes else None)


def _assign(
    remote_id: str,
    path: str,
    known: KnownDocument | None,
    holders: Mapping[str, Collection[str]],
    claimed: Mapping[str, str],
) -> str:
    if _holds(known, path):
        return path
    key = path_key(path)
    others = [rid for rid in holders.get(key, ()) if rid != remote_id]
    if others or claimed.get(key, remote_id) != remote_id:
        return _sibling(path, remote_id)
    return path


def _holds(known: KnownDocument | None, path: str) -> bool:
    return known is not None and known.rel_path == path and known.state == DocState.MIRRORED


def _sibling(path: str, remote_id: str) -> str:
    folder, _, name = path.rpartition("/")
    return f"{folder}/{disambiguate(name, remote_id)}"


def _skip(plan: Plan, doc: RemoteDocument, known: KnownDocument | None) -> None:
    if not _skipped_already(doc, known):
        plan.skips.append(doc)
    else:
        plan.unchanged += 1


def _returning(doc: RemoteDocument, known: KnownDocument | None, path: str) -> bool:
    return (
        known is not None
        and known.state == DocState.REMOVED
        and known.version == doc.version
        and known.rel_path == path
        and known.size is not None
    )


def _unchanged(doc: RemoteDocument, known: KnownDocument | None) -> bool:
    return known is not None and known.state == DocState.MIRRORED and known.version == doc.version


def _deleted_by_hand(
    plan: Plan, doc: RemoteDocument, known: KnownDocument | None, path: str, policy: OnLocalDelete
) -> None:
    if policy == "forget":
        plan.forgotten.append(doc)
        return
    plan.downloads.append(Download(doc, path, known, restore=True))


def _decide(plan: Plan, doc: RemoteDocument, known: KnownDocument | None, path: str) -> None:
    if known is not None and known.state == DocState.DELETED_LOCALLY:
        if known.version == doc.version:
            plan.unchanged += 1  # the user let this version go
        else:
            plan.downloads.append(Download(doc, path, known))
        return
    if known is None or known.version != doc.version or known.state != DocState.MIRRORED:
        if known is not None and known.waiting_version == doc.version:
            plan.waiting += 1
            return
        plan.downloads.append(Download(doc, path, known))
        return
    if known.rel_path != path:
        plan.moves.append(Move(doc, known.rel_path or path, path))
    elif doc.metadata is not None and metadata_digest(doc.metadata)[1] != known.metadata_hash:
        plan.sidecars.append(Sidecar(doc, path))
    else:
        plan.unchanged += 1


def _skipped_already(doc: RemoteDocument, known: KnownDocument | None) -> bool:
    """Recorded skipped, this version, for this reason (a filter's rule may have changed)."""
    if known is None or known.state != DocState.SKIPPED or known.version != doc.version:
        return False
    return known.reason is None or known.reason == doc.skip_reason


def order_moves(moves: Sequence[Move]) -> list[tuple[str, str]]:
    """(old, new) renames that never land on a file another move has yet to take away.

    A chain (b -> c, a -> b) runs from its free end; a cycle (a -> b, b -> a) goes through a
    temporary name beside its first file.
    """
    pending = {m.old_path: m.new_path for m in moves if m.old_path != m.new_path}
    steps: list[tuple[str, str]] = []
    while pending:
        free = [old for old, new in pending.items() if new not in pending]
        if not free:  # every destination is still taken: break the cycle
            old = next(iter(pending))
            temp = old + MOVE_TEMP_SUFFIX
            steps.append((old, temp))
            pending[temp] = pending.pop(old)
            continue
        steps += [(old, pending.pop(old)) for old in free]
    return steps


def unclaimed_targets(downloads: Sequence[Download]) -> list[str]:
    """Paths of downloads where the state knows of no file of the agent's: worth an lstat."""
    return [d.rel_path for d in downloads if not _holds_file(d.known, d.rel_path)]


def _holds_file(known: KnownDocument | None, path: str) -> bool:
    return known is not None and known.rel_path == path and known.size is not None


def split_adoptions(
    downloads: Sequence[Download], on_disk: Mapping[str, OnDisk]
) -> tuple[list[Download], list[Download]]:
    """(to adopt without a download, to download): see the module docstring."""
    adopt: list[Download] = []
    fetch: list[Download] = []
    for item in downloads:
        found = on_disk.get(item.rel_path)
        quick = found is not None and not _holds_file(item.known, item.rel_path)
        (adopt if quick and _looks_written(item.doc, found) else fetch).append(item)
    return adopt, fetch


def _looks_written(doc: RemoteDocument, found: OnDisk | None) -> bool:
    """Size and mtime (to the second) are what placing this document would have left."""
    wanted = remote_mtime_ns(doc)
    if found is None or not found.regular or doc.size is None or wanted is None:
        return False
    return found.size == doc.size and found.mtime_ns // 10**9 == wanted // 10**9


def remote_mtime_ns(doc: RemoteDocument) -> int | None:
    """The document's remote modification time in ns since the epoch (naive means UTC)."""
    if doc.modified is None:
        return None
    moment = doc.modified if doc.modified.tzinfo else doc.modified.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
