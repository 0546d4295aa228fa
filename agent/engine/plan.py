"""What a pass must do, decided by pure functions over the listing and the known state."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.engine.paths import disambiguate, mirror_path
from agent.models import DocState, KnownDocument, RemoteDocument, metadata_digest


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
    downloads: list[Download] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    skips: list[RemoteDocument] = field(default_factory=list)
    sidecars: list[Sidecar] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    prunes: list[str] = field(default_factory=list)  # relative paths to delete
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


def plan_pass(
    source: str, listing: Sequence[RemoteDocument], known: Mapping[str, KnownDocument]
) -> Plan:
    """Compare the listing with the state: what to download, move, skip or mark removed."""
    plan = Plan()
    paths = assign_paths(source, [d for d in listing if d.skip_reason is None], known)
    listed = set()
    for doc in listing:
        listed.add(doc.remote_id)
        _decide(plan, doc, known.get(doc.remote_id), paths.get(doc.remote_id))
    for rid, k in known.items():
        if rid not in listed and k.state != DocState.REMOVED:
            plan.removed.append(rid)
            if k.prune and k.rel_path and k.state == DocState.MIRRORED:
                plan.prunes.append(k.rel_path)
    return plan


def _decide(plan: Plan, doc: RemoteDocument, known: KnownDocument | None, path: str | None) -> None:
    if doc.skip_reason is not None or path is None:
        if known is None or known.state != DocState.SKIPPED or known.version != doc.version:
            plan.skips.append(doc)
        else:
            plan.unchanged += 1
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
