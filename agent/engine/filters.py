"""Which listed documents a source's filters leave out, and by which rule (pure functions).

A source's `include`, `exclude`, `min_size` and `max_size` are checked against each listed
document, its path being the one it wants inside the source's mirror folder (sanitised,
before any suffix that tells two documents apart: `Design/Drawings/plan.dwg`). The first
rule that leaves it out is its reason, in this order: an `exclude` pattern it matches (they
win over `include`), `include` when it matches none of those patterns, then the sizes.

A document whose listing gives no size (Standard Metrics lists none) is checked when its
download starts: the size the storage answer announces (`Content-Length`, or the total of a
`Content-Range`) is held against the size rules before a byte is written
(`size_refusal`), and a body that announces none is checked once received, before it is
placed. Either way the job ends as skipped by the rule, not failed, and nothing reaches the
mirror. Later passes remember it (`recall_size_exclusions`): a document recorded skipped by
a size rule that still reads the same, at the same version, stays skipped without another
request; a new version or a changed rule is checked again.

A document left out is given that rule as its skip reason, so the planner skips it like any
document the source cannot offer, and `status` lists it with the rule. Its file, when the
agent had mirrored one, stays (`on_filter_exclude = "keep"`, no longer updated) or goes
(`"remove"`, see `files_to_remove`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from msgspec.structs import replace

from agent.config import SourceConfig
from agent.config.globs import compile_glob
from agent.engine.paths import mirror_path
from agent.errors import SkipDocument
from agent.models import DocState, KnownDocument, RemoteDocument

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
    return None if size is None else size_rule(filters, size)


def size_rule(filters: Filters, size: int) -> str | None:
    """The size rule that leaves out a document of `size` bytes, or None."""
    if filters.min_size is not None and size < filters.min_size:
        return f"min_size {amount(filters.min_size)}"
    if filters.max_size is not None and size > filters.max_size:
        return f"max_size {amount(filters.max_size)}"
    return None


def sized(filters: Filters) -> bool:
    """Whether the filters have a size rule (a document of unknown size must be measured)."""
    return filters.min_size is not None or filters.max_size is not None


def size_refusal(filters: Filters) -> Callable[[int], SkipDocument | None] | None:
    """For a download whose listing gave no size: what refuses the size it turns out to
    have (the error to end its job with), or None when the filters have no size rule."""
    if not sized(filters):
        return None

    def refuse(size: int) -> SkipDocument | None:
        rule = size_rule(filters, size)
        return None if rule is None else SkipDocument(FILTER_PREFIX + rule)

    return refuse


def recall_size_exclusions(
    filters: Filters,
    docs: Sequence[RemoteDocument],
    known: Mapping[str, KnownDocument],
    excluded: dict[str, str],
) -> list[RemoteDocument]:
    """`docs`, with those listed without a size that a download found too small or too
    large, at this version and under a rule that still reads the same, marked skipped by it
    again (and added to `excluded`, remote id -> rule): no pass asks for them again."""
    if not sized(filters):
        return list(docs)
    rules = {FILTER_PREFIX + rule for rule in size_rules(filters)}
    out = []
    for doc in docs:
        reason = _recorded_reason(known.get(doc.remote_id), doc, rules)
        if reason is not None:
            excluded[doc.remote_id] = reason.removeprefix(FILTER_PREFIX)
        out.append(doc if reason is None else replace(doc, skip_reason=reason))
    return out


def _recorded_reason(
    known: KnownDocument | None, doc: RemoteDocument, rules: set[str]
) -> str | None:
    """The size rule `known` records skipping this unsized version of `doc` by, if current."""
    if doc.size is not None or doc.skip_reason is not None or known is None:
        return None
    if known.state != DocState.SKIPPED or known.version != doc.version:
        return None
    return known.reason if known.reason in rules else None


def size_rules(filters: Filters) -> list[str]:
    """The size rules as skip reasons word them (`max_size 500 MiB`), none when unset."""
    rules = []
    if filters.min_size is not None:
        rules.append(f"min_size {amount(filters.min_size)}")
    if filters.max_size is not None:
        rules.append(f"max_size {amount(filters.max_size)}")
    return rules


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
