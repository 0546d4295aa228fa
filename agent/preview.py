"""`sync --dry-run` and `run --dry-run`: survey each source read-only and print the result.

Nothing is opened for writing that a pass would need: no instance lock (a running daemon
may hold the state folder: a dry run beside it is safe), no repair of a damaged database,
no staging folder, no job. Each source gets a `PreviewState` (tokens saved, listing caches
kept in memory: `agent.engine.dryrun`). A state database that does not exist yet is
created, empty, so that tokens obtained on a first run are kept.

`--json` prints one object: `{"dry_run": true, "sources": [...], "totals": {...}}`, each
source as `SourcePreview.as_json` (docs/dry-run.md describes every key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config import Config, SourceConfig
from agent.engine.dryrun import TOTALS, Action, PreviewState, SourcePreview, preview_source
from agent.engine.filters import amount
from agent.errors import AgentError
from agent.log import get_logger
from agent.sources.base import SourceContext
from agent.sources.http import ApiClient, open_session
from agent.sources.registry import build_source
from agent.state.store import Store
from agent.transfer.mirrorfs import MirrorFS
from agent.transfer.pacing import RateLimiter

Outcome = SourcePreview | AgentError
NOTHING_DONE = "dry run: nothing was downloaded, moved or deleted, and the state was not changed"


async def dry_run(config: Config, names: Sequence[str] | None = None) -> dict[str, Outcome]:
    """A preview of each named (default: every enabled) source, surveyed concurrently."""
    chosen = (
        [config.source(n) for n in names] if names else [s for s in config.sources if s.enabled]
    )
    fs = MirrorFS(config.agent.mirror_dir)
    async with Store.open(config.agent.state_url, config.agent.state_dir) as store:
        found = await asyncio.gather(*(_preview(config, store, fs, cfg) for cfg in chosen))
    return {cfg.name: outcome for cfg, outcome in zip(chosen, found, strict=True)}


async def _preview(config: Config, store: Store, fs: MirrorFS, cfg: SourceConfig) -> Outcome:
    log = get_logger(source=cfg.name)
    try:
        async with open_session(limit=8, limit_per_host=8) as session:
            limiter = RateLimiter(cfg.requests_per_minute)
            client = ApiClient(session, limiter, source=cfg.name, proxies=config.proxies)
            state = PreviewState(store.for_source(cfg.name))
            source = build_source(SourceContext(cfg, config.agent, client, state))
            state.credential_cursors = source.credential_cursors
            return await preview_source(store, fs, source, cfg, log)
    except AgentError as exc:
        log.error("dry_run.failed", error=str(exc))
        return exc


def preview_json(outcomes: Mapping[str, Outcome], config: Config) -> dict[str, Any]:
    """The `--json` document (see the module docstring)."""
    sources = []
    for name, outcome in outcomes.items():
        if isinstance(outcome, SourcePreview):
            sources.append(outcome.as_json())
        else:
            failed = SourcePreview(name, config.source(name).type, error=str(outcome))
            sources.append(failed.as_json())
    return {"dry_run": True, "sources": sources, "totals": _sum(outcomes)}


def print_preview(outcomes: Mapping[str, Outcome]) -> None:
    """The human report: every action, a line per source, the total."""
    for name, outcome in outcomes.items():
        if not isinstance(outcome, SourcePreview):
            print(f"{name}: could not be surveyed: {outcome}")
            continue
        print(f"{name} ({outcome.type}): {outcome.listed} listed")
        for act in outcome.actions:
            print("  " + _line(act))
        print(f"  = {_summary(outcome.totals())}, {outcome.unchanged} unchanged")
    print(f"total: {_summary(_sum(outcomes))}")
    print(NOTHING_DONE)


def _line(act: Action) -> str:
    size = "" if act.size is None else f"  {amount(act.size)}"
    origin = f"{act.origin} -> " if act.origin else ""
    why = f"  ({act.why})" if act.why else ""
    deletes = "  [deletes the file]" if act.deletes_file else ""
    return f"{act.action:<10} {origin}{act.path or act.id}{size}{why}{deletes}"


def _summary(totals: Mapping[str, int]) -> str:
    unknown = totals["download_unknown_size"]
    sizes = amount(totals["download_bytes"]) + (f", {unknown} of unknown size" if unknown else "")
    parts = [f"{totals['download']} to download ({sizes})"]
    parts.append(f"{totals['delete']} to delete ({amount(totals['delete_bytes'])})")
    words = {"adopt": "adopted in place", "move": "to move", "keep_aside": "kept aside"}
    words |= {"remove": "removed remotely", "exclude": "excluded by filters", "skip": "skipped"}
    parts += [f"{totals[k]} {w}" for k, w in words.items() if totals[k]]
    return ", ".join(parts)


def _sum(outcomes: Mapping[str, Outcome]) -> dict[str, int]:
    keys = [*TOTALS, "download_bytes", "download_unknown_size", "delete_bytes"]
    total = dict.fromkeys(keys, 0)
    for outcome in outcomes.values():
        if isinstance(outcome, SourcePreview):
            for key, value in outcome.totals().items():
                total[key] += value
    return total
