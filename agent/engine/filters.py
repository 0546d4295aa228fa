"""Which listed documents a source's filters leave out, and by which rule (pure functions).

A source's `include`, `exclude`, `min_size` and `max_size` are checked against each listed
document, its path being the one it wants inside the source's mirror folder (sanitised,
before any suffix that tells two documents apart: `Design/Drawings/plan.dwg`). The first
rule that leaves it out is its reason, in this order: an `exclude` pattern it matches (they
win over `include`), `include` when it matches none of those patterns, then the sizes. A
document whose listing gives no size passes the size rules: only its download would tell.

A document left out is given that rule as its skip reason, so the planner skips it like any
document the source cannot offer, and `status` lists it with the rule. Its file, when the
agent had mirrored one, stays (`on_filter_exclude = "keep"`, no longer updated) or goes
(`"remove"`, see `files_to_remove`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from agent.config import SourceConfig
from agent.config.globs import compile_glob
from agent.engine.paths import mirror_path
from agent.models import KnownDocument, RemoteDocument

FILTER_PREFIX = "filter: "  # how a skip reason says a filter left the document out
UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True, slots=True)
class Filters:
    """A source's filter rules, as configured."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    ignore_case: bool = False
    min_size: int | None = None
    max_size: int | None = None

    @classmethod
    def of(cls, config: SourceConfig) -> Filters:
        return cls(
            config.include, config.exclude, config.ignore_case, config.min_size, config.max_size
        )

    @property
    def active(self) -> bool:
        sizes = (self.min_size, self.max_size)
        return bool(self.include or self.exclude) or sizes != (None, None)


@dataclass
class Filtered:
    """A listing with the documents the filters leave out marked skipped (`listing`), and
    the rule that left out each of them (`excluded`: remote id -> rule)."""

    listing: list[RemoteDocument]
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExcludedFile:
    """A mirrored file of a document the filters now leave out, to delete."""

    remote_id: str
    rel_path: str
    size: int | None
    mtime_ns: int | None
    rule: str


def excluded_by(filters: Filters, path: str, size: int | None) -> str | None:
    """The rule that leaves out a document at `path` (inside its source's folder) with
    `size` bytes (None: unknown), or None when it passes (see the module docstring)."""
    fold = filters.ignore_case
    for pattern in filters.exclude:
        if _matches(pattern, path, fold):
            return f"exclude {_quoted(pattern)}"
    if filters.include and not any(_matches(p, path, fold) for p in filters.include):
        return "include: matches none of " + ", ".join(_quoted(p) for p in filters.include)
    if size is not None and filters.min_size is not None and size < filters.min_size:
        return f"min_size {amount(filters.min_size)}"
    if size is not None and filters.max_size is not None and size > filters.max_size:
        return f"max_size {amount(filters.max_size)}"
    return None


def path_in_source(source: str, doc: RemoteDocument) -> str:
    """The path a document wants inside its source's mirror folder: what patterns match."""
    return mirror_path(source, doc.folder, doc.name).partition("/")[2]


def apply_filters(filters: Filters, source: str, listing: Iterable[RemoteDocument]) -> Filtered:
    """The listing with every document the filters leave out marked skipped by its rule.

    Documents the source already skips keep the source's reason."""
    if not filters.active:
        return Filtered(list(listing))
    out = Filtered([])
    for doc in listing:
        rule = None
        if doc.skip_reason is None:
            rule = excluded_by(filters, path_in_source(source, doc), doc.size)
        if rule is None:
            out.listing.append(doc)
        else:
            out.excluded[doc.remote_id] = rule
            out.listing.append(replace(doc, skip_reason=FILTER_PREFIX + rule))
    return out


def files_to_remove(
    excluded: Mapping[str, str],
    known: Mapping[str, KnownDocument],
    on_filter_exclude: str,
) -> list[ExcludedFile]:
    """Under `on_filter_exclude = "remove"`: the files the agent placed for documents the
    filters leave out (whatever their state says now: a pass cut short retries them)."""
    if on_filter_exclude != "remove":
        return []
    removals = []
    for remote_id, rule in excluded.items():
        k = known.get(remote_id)
        if k is not None and k.rel_path and k.size is not None:
            removals.append(ExcludedFile(remote_id, k.rel_path, k.size, k.mtime_ns, rule))
    return removals


def amount(size: int) -> str:
    """A size as people read it: `10 MiB`, `1.5 GiB`, `512 bytes`."""
    value, unit = float(size), UNITS[0]
    for larger in UNITS[1:]:
        if value < 1024:
            break
        value, unit = value / 1024, larger
    if unit == UNITS[0]:
        return f"{size} bytes"
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _matches(pattern: str, path: str, ignore_case: bool) -> bool:
    return bool(compile_glob(pattern, ignore_case=ignore_case).match(path))


def _quoted(pattern: str) -> str:
    return '"' + pattern.replace("\\", "\\\\").replace('"', '\\"') + '"'
