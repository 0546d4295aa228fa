"""The status read model: how each source's passes went and where its documents and jobs stand.

Plain data only (epoch seconds, state names as stored); the words a person reads are the
CLI's and web layer's (`agent.web.status_json`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent.models import DocState
from agent.state.database import Database
from agent.state.jobs import Jobs, JobView
from agent.state.tables import DocumentRow, SourceRow


@dataclass(frozen=True, slots=True)
class SkippedDocument:
    remote_id: str
    name: str
    reason: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source: document counts by state, its last pass, its jobs and skipped documents."""

    name: str
    type: str
    counts: Mapping[str, int]
    last_pass_started: float | None
    last_pass_finished: float | None
    last_pass_ok: bool | None
    last_error: str | None
    last_warning: str | None  # what the source had to tell, even when the pass went well
    jobs: tuple[JobView, ...]
    skipped: tuple[SkippedDocument, ...]

    def count(self, state: DocState) -> int:
        return self.counts.get(state, 0)

    @property
    def documents(self) -> int:
        return sum(self.counts.values())


class Status:
    """Pass records (written by the engine) and the per-source report (read by status)."""

    def __init__(self, db: Database, jobs: Jobs) -> None:
        self.db = db
        self.jobs = jobs

    async def pass_started(self, source: str, kind: str) -> None:
        async with self.db.transaction() as s:
            row = await s.scalar(select(SourceRow).where(SourceRow.name == source))
            if row is None:
                row = SourceRow(name=source, type=kind)
                s.add(row)
            row.type = kind
            row.last_pass_started = self.db.clock()

    async def pass_finished(
        self, source: str, ok: bool, error: str | None, warning: str | None = None
    ) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(SourceRow)
                .where(SourceRow.name == source)
                .values(
                    last_pass_finished=self.db.clock(),
                    last_pass_ok=ok,
                    last_error=error,
                    last_warning=warning,
                )
            )

    async def sources(self, names: Collection[str] | None = None) -> list[SourceStatus]:
        """Every source that ran a pass, by name; `names` limits it to the configured ones
        (a removed source's rows stay behind)."""
        query = select(SourceRow).order_by(SourceRow.name)
        if names is not None:
            query = query.where(SourceRow.name.in_(list(names)))
        async with self.db.session() as s:
            rows = list(await s.scalars(query))
            counts = await s.execute(
                select(DocumentRow.source, DocumentRow.state, func.count()).group_by(
                    DocumentRow.source, DocumentRow.state
                )
            )
            by_source: dict[str, dict[str, int]] = {}
            for src, state, n in counts:
                by_source.setdefault(src, {})[state] = n
            skipped = await _skipped(s)
        jobs = await self.jobs.views()
        return [
            SourceStatus(
                row.name,
                row.type,
                by_source.get(row.name, {}),
                row.last_pass_started,
                row.last_pass_finished,
                row.last_pass_ok,
                row.last_error,
                row.last_warning,
                tuple(j for j in jobs if j.source == row.name),
                tuple(skipped.get(row.name, ())),
            )
            for row in rows
        ]


async def _skipped(s: AsyncSession) -> dict[str, list[SkippedDocument]]:
    rows = await s.execute(
        select(
            DocumentRow.source,
            DocumentRow.remote_id,
            DocumentRow.name,
            DocumentRow.reason,
            DocumentRow.external_url,
        )
        .where(DocumentRow.state == DocState.SKIPPED)
        .order_by(DocumentRow.source, DocumentRow.name)
    )
    by_source: dict[str, list[SkippedDocument]] = {}
    for src, rid, name, reason, url in rows:
        by_source.setdefault(src, []).append(SkippedDocument(rid, name, reason, url))
    return by_source
