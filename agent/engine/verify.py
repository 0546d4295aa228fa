"""`sync-agent verify`: the mirror walked against the state, and what `--repair` does about it.

For each source, every file the state records as mirrored is looked for and found fine,
missing (no regular file at its path; a link there does not count) or changed (its size
differs from the record, or its mtime does and so does its digest, hashed with the
algorithm the recorded `<algorithm>:<hex>` names: BLAKE3 or sha256). Every other file under
the source's folder is unknown, unless a document claims its path (one waiting for a
download, removed from the remote, or let go under `on_local_delete = "forget"`) or it is
the agent's own by-product: a sidecar, a local copy or a link it set aside (`kept`). Temp
files in staging that no job owns are stale. Clean means nothing missing, changed, unknown
or stale; the exit status is 0 when clean, 1 otherwise, with or without `--repair`.

`--repair` runs only where no pass can run meanwhile (`repairing`): on SQLite its caller
holds the state folder's lock; on PostgreSQL, which replicas share, it is refused while any
replica is alive (their download workers claim jobs of any source), and it holds the pass
lease of every source it repairs, marked as a repair's, so a replica that starts meanwhile
neither lists, plans nor downloads them (a download committed under the repair could be
recorded, then pointed at the older file the repair adopts). Missing and changed files are
marked pending and the next pass downloads them (verify needs no network and no secret; a
changed file is then kept beside the new copy as a local copy, never overwritten); an
unknown file holding exactly a missing file's recorded bytes is adopted (its record points
at it and the next pass moves it where it belongs); stale staging files are deleted.

The walk reads each folder once (`scandir`, no link followed) and hashes a file only when
its size matches and its mtime does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.engine.commit import SIDECAR_SUFFIX
from agent.errors import AlreadyRunningError
from agent.models import DocState, RemoteDocument
from agent.state.replicas import shared
from agent.state.store import Store
from agent.transfer.digests import Algorithm, algorithm_of
from agent.transfer.files import holds, remove_stale_temps
from agent.transfer.mirrorfs import STAGING, Folder, MirrorFS, off_loop

REPAIR_LEASE = 60.0  # seconds a repair's pass leases last between renewals (every third)
BY_PRODUCT = re.compile(r" \((local copy|link set aside) \d{4}-\d\d-\d\d \d{6}( \d+)?\)(\.[^.]*)?$")
REPAIR_REASON = "verify --repair: fetch again"


class Tally(Protocol):
    """Where the walk reports how far it got (a progress bar on a terminal)."""

    def expect(self, files: int) -> None: ...

    def advance(self, files: int) -> None: ...


class Silent:
    def expect(self, files: int) -> None:
        return None

    def advance(self, files: int) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Expected:
    """A mirrored file as the state recorded it."""

    remote_id: str
    size: int | None
    mtime_ns: int | None
    digest: str | None  # "<algorithm>:<hex>"


@dataclass
class SourceReport:
    name: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # claimed, waiting for a download

    @property
    def clean(self) -> bool:
        return not (self.missing or self.changed or self.unknown)


@dataclass
class Repairs:
    scheduled: list[str] = field(default_factory=list)  # marked for the next pass
    adopted: list[str] = field(default_factory=list)
    removed_temps: list[str] = field(default_factory=list)


@dataclass
class Report:
    sources: list[SourceReport]
    stale_staging: list[str]
    repairs: Repairs | None = None

    @property
    def clean(self) -> bool:
        return not self.stale_staging and all(s.clean for s in self.sources)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clean": self.clean,
            "sources": [{**vars(s), "clean": s.clean} for s in self.sources],
            "stale_staging": self.stale_staging,
        }
        if self.repairs is not None:
            out["repairs"] = vars(self.repairs)
        return out


# ---------------------------------------------------------------- decisions (pure)


def is_by_product(name: str) -> bool:
    """A local copy or a link the agent set aside (`name (local copy <date>).ext`)."""
    return BY_PRODUCT.search(name) is not None


def verdict(expected: Expected, size: int, mtime_ns: int) -> str:
    """ "fine", "changed", or "hash" when only the bytes can tell."""
    if expected.size is not None and size != expected.size:
        return "changed"
    if mtime_ns == expected.mtime_ns:
        return "fine"
    return "hash"


# ---------------------------------------------------------------- the walk (in a thread)


@dataclass
class _Walk:
    expected: Mapping[str, Expected]
    claimed: Collection[str]
    report: SourceReport
    tally: Tally
    sizes: dict[str, int] = field(default_factory=dict)  # unknown files' sizes
    seen: set[str] = field(default_factory=set)


def walk_source(
    fs: MirrorFS,
    name: str,
    expected: Mapping[str, Expected],
    claimed: Collection[str],
    tally: Tally,
) -> tuple[SourceReport, dict[str, int]]:
    """The source's report, and the size of each unknown file (read-only, no link followed)."""
    walk = _Walk(expected, claimed, SourceReport(name), tally)
    root = fs.folder(name, repair=False)
    if root is not None:
        with root:
            _walk_folder(walk, root)
    walk.report.missing = sorted(set(expected) - walk.seen)
    walk.tally.advance(len(walk.report.missing))
    walk.report.checked = len(expected)
    for field_ in ("changed", "unknown", "kept"):
        getattr(walk.report, field_).sort()
    return walk.report, walk.sizes


def _walk_folder(walk: _Walk, folder: Folder) -> None:
    for entry in list(folder.scandir()):
        rel = folder.child_rel(entry.name)
        if entry.is_dir(follow_symlinks=False):
            sub = folder.child(entry.name, create=False, repair=False)
            if sub is not None:
                with sub:
                    _walk_folder(walk, sub)
        elif entry.is_file(follow_symlinks=False):
            _file(walk, folder, entry, rel)
        elif rel not in walk.expected:  # a link or a special file: never ours
            _stray(walk, rel, entry.name)


def _file(walk: _Walk, folder: Folder, entry: Any, rel: str) -> None:
    expected = walk.expected.get(rel)
    if expected is None:
        _stray(walk, rel, entry.name, entry.stat(follow_symlinks=False).st_size)
        return
    walk.seen.add(rel)
    walk.tally.advance(1)
    found = entry.stat(follow_symlinks=False)
    outcome = verdict(expected, found.st_size, found.st_mtime_ns)
    if outcome == "hash":
        fine = expected.digest is not None and holds(folder, entry.name, expected.digest)
        outcome = "fine" if fine else "changed"
    if outcome == "changed":
        walk.report.changed.append(rel)


def _stray(walk: _Walk, rel: str, name: str, size: int | None = None) -> None:
    if rel in walk.claimed:
        return
    if rel.endswith(SIDECAR_SUFFIX) and rel[: -len(SIDECAR_SUFFIX)] in walk.claimed:
        return
    if is_by_product(name):
        walk.report.kept.append(rel)
        return
    walk.report.unknown.append(rel)
    if size is not None:
        walk.sizes[rel] = size


# ---------------------------------------------------------------- excluding the replicas


@asynccontextmanager
async def repairing(store: Store, sources: Collection[str], owner: str) -> AsyncIterator[None]:
    """No replica may list, plan or download `sources` while the block runs (see the
    module docstring); AlreadyRunningError, naming who runs, when that cannot be had."""
    if not shared(store.db):
        yield  # SQLite: the caller holds the state folder's lock
        return
    alive = [r for r in await store.replicas.views() if not r.stale]
    if alive:
        running = ", ".join(f"{r.host} pid {r.pid}" for r in alive)
        raise AlreadyRunningError(
            f"verify --repair changes the state the running replicas work from ({running}): "
            "stop them first (verify without --repair is safe meanwhile)"
        )
    taken: list[str] = []
    try:
        for name in sources:
            holder = await store.leases.take(name, owner, REPAIR_LEASE, repair=True)
            if holder is not None:
                raise AlreadyRunningError(
                    f"verify --repair: a pass of {name} is being listed by replica "
                    f"{holder.owner}: try again once it ends"
                )
            taken.append(name)
        async with _renewing(store, taken, owner):
            yield
    finally:
        for name in taken:
            await store.leases.release(name, owner)


@asynccontextmanager
async def _renewing(store: Store, sources: Sequence[str], owner: str) -> AsyncIterator[None]:
    """Keep the repair's pass leases while the block runs."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(REPAIR_LEASE / 3)
            for name in sources:
                await store.leases.renew(name, owner, REPAIR_LEASE)

    task = asyncio.create_task(renew(), name="verify:leases")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------- the whole command


async def verify(
    store: Store,
    fs: MirrorFS,
    sources: Collection[str],
    *,
    repair: bool,
    tally: Tally | None = None,
) -> Report:
    """Check every named source (see the module docstring); repair when asked."""
    report = Report([], [], Repairs() if repair else None)
    for name in sources:
        source_report = await _verify_source(store, fs, name, report.repairs, tally or Silent())
        report.sources.append(source_report)
    staging = await off_loop(fs.folder, "/".join(STAGING), repair=False)
    if staging is not None:
        with staging:
            report.stale_staging = await _stale_temps(store, staging, report.repairs)
    return report


async def _verify_source(
    store: Store,
    fs: MirrorFS,
    name: str,
    repairs: Repairs | None,
    tally: Tally,
) -> SourceReport:
    known = await store.documents.known(name)
    mirrored = {
        k.rel_path: k for k in known.values() if k.state == DocState.MIRRORED and k.rel_path
    }
    hashes = await store.documents.recorded_digests(name, [k.remote_id for k in mirrored.values()])
    expected = {
        rel: Expected(k.remote_id, k.size, k.mtime_ns, hashes.get(k.remote_id))
        for rel, k in mirrored.items()
    }
    claimed = {k.rel_path for k in known.values() if k.rel_path}
    tally.expect(len(expected))
    report, sizes = await off_loop(walk_source, fs, name, expected, claimed, tally)
    report.pending = sorted(
        k.rel_path
        for k in known.values()
        if k.rel_path and k.state in (DocState.PENDING, DocState.FAILED)
    )
    if repairs is not None:
        copies = await off_loop(_find_copies, fs, report.missing, expected, sizes)
        await _repair_source(store, report, expected, copies, repairs)
    return report


async def _repair_source(
    store: Store,
    report: SourceReport,
    expected: Mapping[str, Expected],
    adopted: Mapping[str, str],
    repairs: Repairs,
) -> None:
    name = report.name
    moves = []
    for missing_rel, found_rel in adopted.items():
        row = await store.documents.get(name, expected[missing_rel].remote_id)
        if row is not None:
            moves.append((row.remote_id, row.name, found_rel))
            repairs.adopted.append(found_rel)
    await store.documents.record_moves(name, moves)
    again = [rel for rel in [*report.missing, *report.changed] if rel not in adopted]
    states = []
    for rel in again:
        row = await store.documents.get(name, expected[rel].remote_id)
        if row is not None:
            doc = RemoteDocument(remote_id=row.remote_id, version=row.version, name=row.name)
            states.append((doc, DocState.PENDING, REPAIR_REASON, rel))
            repairs.scheduled.append(rel)
    await store.documents.record_states(name, states)


def _find_copies(
    fs: MirrorFS,
    missing: Collection[str],
    expected: Mapping[str, Expected],
    sizes: Mapping[str, int],
) -> dict[str, str]:
    """Missing path -> an unknown file holding exactly its recorded bytes (sizes first)."""
    wanted = {expected[rel].digest: rel for rel in missing if expected[rel].digest}
    algorithms = {algorithm_of(digest) for digest in wanted if digest}
    wanted_sizes = {expected[rel].size for rel in missing}
    found: dict[str, str] = {}
    for rel, size in sizes.items():
        if size not in wanted_sizes or not wanted:
            continue
        for algorithm in sorted(algorithms):  # recorded over the years with either one
            digest = _digest(fs, rel, algorithm)
            if digest in wanted:
                found[wanted.pop(digest)] = rel
                break
    return found


def _digest(fs: MirrorFS, rel: str, algorithm: Algorithm) -> str | None:
    folder = fs.parent(rel, repair=False)
    if folder is None:
        return None
    with folder:
        digest = folder.digest(rel.rpartition("/")[2], algorithm)
    return digest[0] if digest else None


async def _stale_temps(store: Store, staging: Folder, repairs: Repairs | None) -> list[str]:
    active = await store.jobs.temp_names()
    stale = sorted(
        e.name
        for e in await off_loop(lambda: list(staging.scandir()))
        if e.name not in active and e.is_file(follow_symlinks=False)
    )
    if repairs is not None and stale:
        repairs.removed_temps = await off_loop(remove_stale_temps, staging, active)
    return stale


def iter_lines(report: Report) -> Iterator[str]:
    """The human summary, one line each."""
    for s in report.sources:
        problems = f"{len(s.missing)} missing, {len(s.changed)} changed, {len(s.unknown)} unknown"
        yield f"{s.name}: {s.checked} files checked: {problems}"
        for label in ("missing", "changed", "unknown"):
            yield from (f"  {label}: {p}" for p in getattr(s, label))
        if s.kept:
            yield f"  {len(s.kept)} local copies or links set aside (kept, not a problem)"
        if s.pending:
            yield f"  {len(s.pending)} waiting for a download on the next pass"
    if report.stale_staging:
        yield f"staging: {len(report.stale_staging)} stale temp files"
    if report.repairs is not None:
        r = report.repairs
        yield (
            f"repair: {len(r.scheduled)} to download on the next pass, "
            f"{len(r.adopted)} adopted, {len(r.removed_temps)} stale temp files removed"
        )
    yield "mirror is clean" if report.clean else "mirror is not clean"
