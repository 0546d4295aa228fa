"""What a pass must do, decided by pure functions over the listing, the state and the disk.

Files the user deleted. A mirrored file found missing (the pass's folder scan says so) is
downloaded again under `on_local_delete = "restore"` (the default: a mirror reflects the
remote). Under `"forget"` the document is recorded as deleted locally and left alone while
its remote version stays the same; a newer version is news the user has not seen, so it is
mirrored again like a new document. When the source's whole folder is gone the mirror was
lost (an unmounted volume, a deleted folder), not curated: everything is restored whatever
the setting.

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

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from agent.engine.paths import disambiguate, mirror_path
from agent.models import DocState, KnownDocument, RemoteDocument, metadata_digest

OnLocalDelete = Literal["restore", "forget"]
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
    downloads: list[Download] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    skips: list[RemoteDocument] = field(default_factory=list)
    sidecars: list[Sidecar] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    prunes: list[str] = field(default_factory=list)  # relative paths to delete
    forgotten: list[RemoteDocument] = field(default_factory=list)  # deleted by hand, let go
    waiting: int = 0
    unchanged: int = 0


def assign_paths(
    source: str, listing: Sequence[RemoteDocument], known: Mapping[str, KnownDocument]
) -> dict[str, str]:
    """A distinct, stable relative path for every listed document.

    Documents that want the same path (compared case-insensitively, for the file systems
    that fold case) are told apart by a suffix derived from their id; the one already
    holding the path keeps it, otherwise the smallest id does.
    """
    assigned: dict[str, str] = {}
    first_claim: dict[str, str] = {}  # casefolded path -> the id that claimed it first
    contested: dict[str, list[str]] = defaultdict(list)  # casefolded path -> other ids
    for doc in listing:
        path = mirror_path(source, doc.folder, doc.name)
        assigned[doc.remote_id] = path
        key = path.casefold()
        if first_claim.setdefault(key, doc.remote_id) != doc.remote_id:
            contested[key].append(doc.remote_id)
    for key, others in contested.items():
        claims = [first_claim[key], *others]
        holders = sorted(rid for rid in claims if _holds(known.get(rid), assigned[rid]))
        winner = holders[0] if holders else min(claims)
        for rid in claims:
            if rid != winner:
                assigned[rid] = _sibling(assigned[rid], rid)
    return assigned


def _holds(known: KnownDocument | None, path: str) -> bool:
    return known is not None and known.rel_path == path and known.state == DocState.MIRRORED


def _sibling(path: str, remote_id: str) -> str:
    folder, _, name = path.rpartition("/")
    return f"{folder}/{disambiguate(name, remote_id)}"


def deletion_policy(configured: OnLocalDelete, source_folder_present: bool) -> OnLocalDelete:
    """A source folder gone as a whole is a lost mirror: restore it, whatever the setting."""
    return configured if source_folder_present else "restore"


def plan_pass(
    source: str,
    listing: Sequence[RemoteDocument],
    known: Mapping[str, KnownDocument],
    *,
    missing: Collection[str] = frozenset(),
    on_local_delete: OnLocalDelete = "restore",
) -> Plan:
    """Compare the listing with the state: what to download, move, skip or mark removed.

    `missing` holds the ids of mirrored documents whose file is gone from the mirror.
    """
    plan = Plan()
    paths = assign_paths(source, [d for d in listing if d.skip_reason is None], known)
    listed = set()
    for doc in listing:
        listed.add(doc.remote_id)
        k = known.get(doc.remote_id)
        path = paths.get(doc.remote_id)
        if doc.remote_id in missing and path is not None and _unchanged(doc, k):
            _deleted_by_hand(plan, doc, k, path, on_local_delete)
        else:
            _decide(plan, doc, k, path)
    for rid, k in known.items():
        if rid not in listed and k.state != DocState.REMOVED:
            plan.removed.append(rid)
            if k.prune and k.rel_path and k.state == DocState.MIRRORED:
                plan.prunes.append(k.rel_path)
    return plan


def _unchanged(doc: RemoteDocument, known: KnownDocument | None) -> bool:
    return known is not None and known.state == DocState.MIRRORED and known.version == doc.version


def _deleted_by_hand(
    plan: Plan, doc: RemoteDocument, known: KnownDocument | None, path: str, policy: OnLocalDelete
) -> None:
    if policy == "forget":
        plan.forgotten.append(doc)
        return
    plan.downloads.append(Download(doc, path, known, restore=True))


def _decide(plan: Plan, doc: RemoteDocument, known: KnownDocument | None, path: str | None) -> None:
    if doc.skip_reason is not None or path is None:
        if not _skipped_already(doc, known):
            plan.skips.append(doc)
        else:
            plan.unchanged += 1
        return
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
            temp = f"{old}.sync-agent-move"
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
