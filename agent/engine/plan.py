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
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from agent.engine.paths import disambiguate, mirror_path
from agent.models import DocState, KnownDocument, RemoteDocument, metadata_digest
from agent.state.jobs import path_key


@dataclass(frozen=True, slots=True)
class Download:
    doc: RemoteDocument
    rel_path: str
    known: KnownDocument | None = None  # what the mirror holds now, to notice local edits


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
    return {
        doc.remote_id: mirror_path(source, doc.folder, doc.name)
        for doc in window
        if doc.skip_reason is None
    }


def contested(wanted: Mapping[str, str], known: Mapping[str, KnownDocument]) -> list[str]:
    """The path keys to look up holders of: those wanted by documents that do not hold them
    already (an unchanged document costs no lookup)."""
    return [path_key(path) for rid, path in wanted.items() if not _holds(known.get(rid), path)]


def plan_window(
    window: Sequence[RemoteDocument],
    wanted: Mapping[str, str],
    known: Mapping[str, KnownDocument],
    holders: Mapping[str, Collection[str]],
) -> Plan:
    """Compare a window of the listing with the state: what to download, move or skip.

    `wanted` holds the paths the documents want (`wanted_paths`); `known` the state's
    rows of the window's documents; `holders` the ids holding each contested path key
    (`contested`), claims of earlier windows included.
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
        _decide(plan, doc, k, path)
    return plan


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
    if known is None or known.state != DocState.SKIPPED or known.version != doc.version:
        plan.skips.append(doc)
    else:
        plan.unchanged += 1


def _decide(plan: Plan, doc: RemoteDocument, known: KnownDocument | None, path: str) -> None:
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
