"""What a pass would do, worked out from the listing, the state and the mirror: changing none.

A survey plans the whole listing the way a pass plans each window of it
(`agent.engine.listing`): the same filters (`agent.engine.filters`), the same look at the
mirror for files deleted by hand, the same pure planner (`plan_window`, the whole listing as
one window), the same quick check of download targets, and the documents of the state the
listing no longer has. It reads and never writes (a source may save tokens): a dry run
(`agent.engine.dryrun`) describes it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import SourceConfig
from agent.engine.filters import (
    ExcludedFile,
    Filters,
    apply_filters,
    files_to_remove,
    recall_size_exclusions,
)
from agent.engine.plan import (
    Download,
    OnDisk,
    OnLocalDelete,
    Plan,
    Removal,
    contested,
    deletion_policy,
    intact_files,
    look_for_missing,
    plan_window,
    removal,
    returning,
    split_adoptions,
    unclaimed_targets,
    wanted_paths,
)
from agent.models import KnownDocument, RemoteDocument
from agent.sources.base import Source
from agent.state.store import Store
from agent.transfer.files import find_missing, lstat_all
from agent.transfer.mirrorfs import MirrorFS, off_loop


@dataclass
class Survey:
    """A pass's plan and what it was made from."""

    listed: int
    known: dict[str, KnownDocument]
    plan: Plan
    adopt: list[Download] = field(default_factory=list)  # in place already: no download
    fetch: list[Download] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # remote id -> the filter rule
    filtered_out: list[ExcludedFile] = field(default_factory=list)  # on_filter_exclude=remove
    unlisted: list[Removal] = field(default_factory=list)  # gone from the listing


async def survey(
    fs: MirrorFS, store: Store, config: SourceConfig, source: Source, log: Any
) -> Survey:
    """List, filter, read the state and the mirror, and plan (see the module docstring)."""
    name, documents = config.name, store.documents
    listing = unique([doc async for doc in source.list_documents()])
    filters = Filters.of(config)
    filtered = apply_filters(filters, name, listing)
    known = await documents.known(name, [d.remote_id for d in listing])
    filtered.listing = recall_size_exclusions(filters, filtered.listing, known, filtered.excluded)
    wanted = wanted_paths(name, filtered.listing)
    missing, policy = await _missing(fs, config, look_for_missing(wanted, wanted, known), log)
    keys = contested(wanted, known)
    holders = await documents.holders(name, keys) if keys else {}
    intact = await returned_intact(fs, returning(filtered.listing, known))
    plan = plan_window(
        filtered.listing,
        wanted,
        known,
        holders,
        missing=missing,
        intact=intact,
        on_local_delete=policy,
    )
    adopt, fetch = await quick_adoptions(fs, plan.downloads)
    seen = {d.remote_id for d in listing}
    gone = [k async for k in documents.unlisted(name, seen)]
    known.update({k.remote_id: k for k in gone})
    return Survey(
        len(listing),
        known,
        plan,
        adopt,
        fetch,
        filtered.excluded,
        files_to_remove(filtered.excluded, known, config.on_filter_exclude),
        [removal(k) for k in gone],
    )


async def _missing(
    fs: MirrorFS, config: SourceConfig, expected: Mapping[str, str], log: Any
) -> tuple[set[str], OnLocalDelete]:
    """The ids among `expected` (id: path) whose file is gone, and the deletion policy."""
    if not expected:
        return set(), config.on_local_delete
    presence = await off_loop(find_missing, fs, config.name, expected.values(), 0)
    gone = presence.missing
    missing = {rid for rid, path in expected.items() if path in gone} if gone else set()
    policy = deletion_policy(config.on_local_delete, presence.source_folder)
    if missing and policy != config.on_local_delete:
        log.warning("mirror.source_folder_missing", restoring=len(missing))
    return missing, policy


async def quick_adoptions(
    fs: MirrorFS, downloads: list[Download]
) -> tuple[list[Download], list[Download]]:
    """(to adopt without a download, to download): one lstat per unclaimed target."""
    targets = unclaimed_targets(downloads)
    if not targets:
        return [], list(downloads)
    found = await off_loop(lstat_all, fs, targets)
    return split_adoptions(downloads, on_disk(found))


async def returned_intact(fs: MirrorFS, back: Mapping[str, KnownDocument]) -> set[str]:
    """The ids of removed documents listed again (`returning`, by path) whose files are
    still as the agent wrote them: one lstat each."""
    if not back:
        return set()
    found = await off_loop(lstat_all, fs, list(back))
    return intact_files(back, on_disk(found))


def unique(listing: list[RemoteDocument]) -> list[RemoteDocument]:
    """The listing with each id once (its first listing)."""
    seen: dict[str, RemoteDocument] = {}
    for doc in listing:
        seen.setdefault(doc.remote_id, doc)
    return list(seen.values())


def on_disk(found: Mapping[str, os.stat_result]) -> dict[str, OnDisk]:
    return {
        rel: OnDisk(st.st_size, st.st_mtime_ns, stat.S_ISREG(st.st_mode))
        for rel, st in found.items()
    }
