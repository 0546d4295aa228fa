"""A dry run: what a pass over a source would do, described from its survey, nothing done.

`preview_source` surveys the source exactly as a pass does (`agent.engine.survey`: the same
listing, filters and plan), looks at the files the downloads and moves would land on, and
describes the result as actions (`describe`, pure). It writes nothing to the mirror and
nothing to the state but tokens: a source's `PreviewState` passes tokens, and the cursors
that are credentials (`Source.credential_cursors`), through to the store, and keeps every
other cursor (listing caches) in memory for the run.

An action is one JSON object with the same keys whatever its kind (see docs/dry-run.md):
`action`, `id`, `path`, `size`, `from`, `why`, `deletes_file`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.config import SourceConfig
from agent.engine.filters import Filters, path_in_source, size_rules
from agent.engine.plan import Download, OnDisk, Plan, Removal
from agent.engine.survey import Survey, on_disk, survey
from agent.models import DocState, KnownDocument, RemoteDocument
from agent.sources.base import Source
from agent.state.source_state import SourceState, StoredToken
from agent.state.store import Store
from agent.transfer.files import lstat_all
from agent.transfer.mirrorfs import MirrorFS, off_loop

TOTALS = ("download", "adopt", "move", "keep_aside", "delete", "remove", "exclude", "skip")


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a pass would do (see the module docstring for the JSON keys)."""

    action: str  # download adopt move keep_aside remove exclude skip metadata forget
    id: str | None
    path: str | None
    size: int | None = None
    origin: str | None = None  # a move's old path: `from` in JSON
    why: str | None = None
    deletes_file: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "id": self.id,
            "path": self.path,
            "size": self.size,
            "from": self.origin,
            "why": self.why,
            "deletes_file": self.deletes_file,
        }


@dataclass
class SourcePreview:
    """What one pass over a source would do; `error` when it could not be surveyed."""

    name: str
    type: str
    listed: int = 0
    unchanged: int = 0
    waiting: int = 0  # failed downloads whose retry time has not come
    actions: list[Action] = field(default_factory=list)
    error: str | None = None

    def totals(self) -> dict[str, int]:
        """Counts per kind, `download_bytes`, `download_unknown_size` and `delete_bytes`."""
        counts = dict.fromkeys(TOTALS, 0)
        sizes = {"download_bytes": 0, "download_unknown_size": 0, "delete_bytes": 0}
        for act in self.actions:
            if act.action in counts:
                counts[act.action] += 1
            if act.deletes_file:
                counts["delete"] += 1
                sizes["delete_bytes"] += act.size or 0
            if act.action == "download":
                sizes["download_bytes"] += act.size or 0
                sizes["download_unknown_size"] += act.size is None
        return counts | sizes

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "error": self.error,
            "listed": self.listed,
            "unchanged": self.unchanged,
            "waiting": self.waiting,
            "totals": self.totals(),
            "actions": [a.as_json() for a in self.actions],
        }


class PreviewState:
    """A source's state for a dry run: tokens and credential cursors are saved (a rotated
    refresh token must not be lost), other cursors live in memory for the run."""

    def __init__(self, real: SourceState) -> None:
        self.real = real
        self.credential_cursors: frozenset[str] = frozenset()  # set once the source is built
        self.cursors: dict[str, str | None] = {}

    async def load_token(self, kind: str) -> StoredToken | None:
        return await self.real.load_token(kind)

    async def save_token(self, kind: str, value: str, expires_at: datetime | None = None) -> None:
        await self.real.save_token(kind, value, expires_at)

    def renewal(self) -> AbstractAsyncContextManager[None]:
        return self.real.renewal()  # a dry run renews under the same lock as the replicas

    async def load_cursor(self, key: str) -> str | None:
        if key in self.cursors:
            return self.cursors[key]
        return await self.real.load_cursor(key)

    async def save_cursor(self, key: str, value: str | None) -> None:
        if key in self.credential_cursors:
            await self.real.save_cursor(key, value)
        else:
            self.cursors[key] = value


async def preview_source(
    store: Store, fs: MirrorFS, source: Source, config: SourceConfig, log: Any
) -> SourcePreview:
    """Survey the source as a pass would, then describe it (see the module docstring)."""
    found = await survey(fs, store, config, source, log)
    targets = [d.rel_path for d in found.fetch] + [m.new_path for m in found.plan.moves]
    seen = on_disk(await off_loop(lstat_all, fs, targets)) if targets else {}
    preview = SourcePreview(config.name, config.type, listed=found.listed)
    preview.unchanged, preview.waiting = found.plan.unchanged, found.plan.waiting
    preview.actions = describe(config.name, found, seen, size_rules(Filters.of(config)))
    return preview


def describe(
    source: str, found: Survey, seen: Mapping[str, OnDisk], sizes: Sequence[str] = ()
) -> list[Action]:
    """The survey as actions, in the order a pass takes them (pure). `sizes` are the
    source's size rules: a download whose size the listing does not give says it is
    checked against them when it starts."""
    plan, known = found.plan, found.known
    actions = _skips(source, plan, found)
    actions += [
        Action("forget", d.remote_id, _path(known.get(d.remote_id))) for d in plan.forgotten
    ]
    actions += _removals(found.unlisted, known)
    actions += _moves(plan, known, seen)
    actions += [Action("metadata", s.doc.remote_id, s.rel_path) for s in plan.sidecars]
    actions += [Action("adopt", d.doc.remote_id, d.rel_path, d.doc.size) for d in found.adopt]
    actions += _downloads(found.fetch, seen, sizes)
    return actions


def _skips(source: str, plan: Plan, found: Survey) -> list[Action]:
    deleting = {r.remote_id: r for r in found.filtered_out}
    actions = []
    for doc in plan.skips:
        rule = found.excluded.get(doc.remote_id)
        if rule is None:
            actions.append(Action("skip", doc.remote_id, _wanted(source, doc), why=doc.skip_reason))
        elif doc.remote_id not in deleting:
            actions.append(
                Action("exclude", doc.remote_id, _wanted(source, doc), doc.size, why=rule)
            )
    actions += [  # newly excluded or not: their files go
        Action("exclude", r.remote_id, r.rel_path, r.size, why=r.rule, deletes_file=True)
        for r in found.filtered_out
    ]
    return actions


def _removals(unlisted: Sequence[Removal], known: Mapping[str, KnownDocument]) -> list[Action]:
    actions = []
    for gone in unlisted:
        rid = gone.remote_id
        k = known.get(rid)
        path = _path(k)
        deletes = gone.prune_path is not None
        size = k.size if k is not None else None
        why = "gone from the listing" + (
            "; the source deletes its file" if deletes else "; its file stays"
        )
        actions.append(Action("remove", rid, path, size, why=why, deletes_file=deletes))
    return actions


def _moves(
    plan: Plan, known: Mapping[str, KnownDocument], seen: Mapping[str, OnDisk]
) -> list[Action]:
    leaving = {m.old_path for m in plan.moves}
    actions = []
    for move in plan.moves:
        k = known.get(move.doc.remote_id)
        if move.new_path in seen and move.new_path not in leaving:
            actions.append(
                Action(
                    "keep_aside",
                    None,
                    move.new_path,
                    seen[move.new_path].size,
                    why="in the way of a move",
                )
            )
        actions.append(
            Action(
                "move",
                move.doc.remote_id,
                move.new_path,
                k.size if k else None,
                origin=move.old_path,
            )
        )
    return actions


def _downloads(
    fetch: Sequence[Download], seen: Mapping[str, OnDisk], sizes: Sequence[str]
) -> list[Action]:
    unsized = f"size unknown: checked against {' and '.join(sizes)} when it starts"
    actions = []
    for item in fetch:
        found = seen.get(item.rel_path)
        if found is not None and (why := _aside(item, found)) is not None:
            actions.append(
                Action("keep_aside", item.doc.remote_id, item.rel_path, found.size, why=why)
            )
        why = _reason(item)
        if sizes and item.doc.size is None:
            why = f"{why}; {unsized}"
        actions.append(
            Action("download", item.doc.remote_id, item.rel_path, item.doc.size, why=why)
        )
    return actions


def _aside(item: Download, found: OnDisk) -> str | None:
    """Why the file at a download's target may be kept aside as a local copy, or None."""
    k = item.known
    if not found.regular:
        return "not a regular file (a link or a folder): set aside"
    if k is None or k.rel_path != item.rel_path or k.size is None:
        return "a file the state does not know: kept as a local copy unless identical"
    if (found.size, found.mtime_ns) != (k.size, k.mtime_ns):
        return "changed here since mirrored: kept as a local copy unless identical"
    return None


def _reason(item: Download) -> str:
    k = item.known
    if item.restore:
        return "deleted here: restored"
    if k is None:
        return "new"
    if k.version != item.doc.version:
        return "new version"
    return {
        DocState.FAILED: "failed before: retried",
        DocState.SKIPPED: "no longer skipped",
        DocState.REMOVED: "listed again",
    }.get(k.state, "not mirrored yet")


def _wanted(source: str, doc: RemoteDocument) -> str:
    return f"{source}/{path_in_source(source, doc)}"


def _path(known: KnownDocument | None) -> str | None:
    return None if known is None else known.rel_path
