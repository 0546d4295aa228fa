"""What a pass will do, worked out from the listing, the state and the mirror: changing none.

A survey lists the source, applies its filters (`agent.engine.filters`), reads the state,
scans the mirror once for files deleted by hand, plans (`agent.engine.plan`, pure) and looks
at the download targets the state holds no file for (rsync's quick check). A pass
(`agent.engine.sync`) then carries the survey out; a dry run (`agent.engine.dryrun`) only
describes it. Nothing here writes to the mirror or to the state (a source may save tokens).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.config import SourceConfig
from agent.engine.filters import Filters, Removal, apply_filters, files_to_remove
from agent.engine.plan import (
    Download,
    OnDisk,
    Plan,
    deletion_policy,
    plan_pass,
    split_adoptions,
    unclaimed_targets,
)
from agent.models import DocState, KnownDocument, RemoteDocument
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
    removals: list[Removal] = field(default_factory=list)  # on_filter_exclude = "remove"


async def survey(
    fs: MirrorFS, store: Store, config: SourceConfig, source: Source, log: Any
) -> Survey:
    """List, filter, read the state and the mirror, and plan (see the module docstring)."""
    name = config.name
    listing = unique([doc async for doc in source.list_documents()])
    filtered = apply_filters(Filters.of(config), name, listing)
    known = await store.documents.known(name)
    plan = await plan_on_disk(fs, config, filtered.listing, known, log)
    adopt, fetch = await quick_adoptions(fs, plan.downloads)
    removals = files_to_remove(filtered.excluded, known, config.on_filter_exclude)
    return Survey(len(listing), known, plan, adopt, fetch, filtered.excluded, removals)


async def plan_on_disk(
    fs: MirrorFS,
    config: SourceConfig,
    listing: Sequence[RemoteDocument],
    known: dict[str, KnownDocument],
    log: Any,
) -> Plan:
    """The pass's plan, after one scan of the mirror for files deleted by hand."""
    name = config.name
    presence = await off_loop(find_missing, fs, name, _mirrored_paths(known))
    gone = presence.missing
    missing = (
        {rid for rid, k in known.items() if k.state == DocState.MIRRORED and k.rel_path in gone}
        if gone
        else set()
    )
    policy = deletion_policy(config.on_local_delete, presence.source_folder)
    if missing and policy != config.on_local_delete:
        log.warning("mirror.source_folder_missing", restoring=len(missing))
    return plan_pass(name, listing, known, missing=missing, on_local_delete=policy)


async def quick_adoptions(
    fs: MirrorFS, downloads: Sequence[Download]
) -> tuple[list[Download], list[Download]]:
    """(to adopt without a download, to download): one lstat per unclaimed target."""
    targets = unclaimed_targets(downloads)
    if not targets:
        return [], list(downloads)
    found = await off_loop(lstat_all, fs, targets)
    return split_adoptions(downloads, on_disk(found))


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


def _mirrored_paths(known: Mapping[str, KnownDocument]) -> Iterator[str]:
    for k in known.values():
        if k.state == DocState.MIRRORED and k.rel_path:
            yield k.rel_path
