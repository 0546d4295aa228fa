"""The request budget every replica of an account shares, kept in PostgreSQL: one row per source.

A replica asks for permits with one short statement (`SharedBudget.grant`). The row holds
the grants of the last `span` seconds as two parallel arrays, grant times (by the database's
clock, so the replicas' clocks never have to agree) and counts; the statement locks the
row (`SELECT ... FOR UPDATE` in its first CTE, which waits for a concurrent grant and then
reads the row as that grant left it), drops the grants older than `span`, grants at most
what keeps the sum within the capacity, records the grant, and answers how many permits it
gave and, when none, how long until one frees. So the sum never exceeds the capacity,
whatever the number of replicas. (An UPDATE that computed its SET from the row without the
lock is not enough: re-checking a concurrently updated row does not recompute such a
subquery, and replicas then overwrite each other's grants; the tests hammer this.)

The budget holds over the whole window and over every sixth of it (`burst` in
`burst_span`), as the in-memory `RateLimiter` does: APIs state limits over short windows
too. Grant times are rounded up to `resolution` seconds, so a grant is never recorded
earlier than it happened and the arrays hold at most `span / resolution` entries, whatever
the request rate. A 429 pauses the source for every replica (`pause`): the statement
grants nothing until `paused_until`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import text

from agent.state.database import Database
from agent.state.dialects import insert_for
from agent.state.tables import RateBudgetRow

_GRANT = text(
    """
WITH locked AS (
    SELECT grant_times, grant_counts, paused_until,
           CAST(extract(epoch FROM clock_timestamp()) AS float8) AS now
    FROM rate_budgets WHERE source = :source FOR UPDATE
), live AS (
    SELECT u.t, u.n FROM locked, unnest(locked.grant_times, locked.grant_counts) AS u(t, n)
    WHERE u.t > locked.now - CAST(:span AS float8)
), decision AS (
    SELECT locked.now,
           ceil(locked.now / CAST(:resolution AS float8)) * CAST(:resolution AS float8) AS at,
           CASE WHEN locked.now < locked.paused_until THEN 0
                ELSE greatest(0, least(
                    CAST(:want AS int),
                    CAST(:capacity AS int) - (SELECT coalesce(sum(n), 0) FROM live),
                    CAST(:burst AS int) - (SELECT coalesce(sum(n), 0) FROM live
                                           WHERE t > locked.now - CAST(:burst_span AS float8))))
           END AS granted
    FROM locked
), kept AS (
    SELECT t, CAST(sum(n) AS int) AS n FROM (
        SELECT t, n FROM live
        UNION ALL SELECT at, granted FROM decision WHERE granted > 0
    ) AS entries GROUP BY t
)
UPDATE rate_budgets AS b
SET grant_times = coalesce((SELECT array_agg(t ORDER BY t) FROM kept), '{}'),
    grant_counts = coalesce((SELECT array_agg(n ORDER BY t) FROM kept), '{}'),
    granted = CAST(d.granted AS int),
    checked_at = d.now
FROM decision AS d
WHERE b.source = :source
RETURNING b.granted, b.checked_at, b.paused_until,
    (SELECT coalesce(sum(u.n), 0) FROM unnest(b.grant_times, b.grant_counts) AS u(t, n))
        AS used,
    b.grant_times[1] AS oldest,
    (SELECT coalesce(sum(u.n), 0) FROM unnest(b.grant_times, b.grant_counts) AS u(t, n)
     WHERE u.t > b.checked_at - CAST(:burst_span AS float8)) AS used_burst,
    (SELECT min(u.t) FROM unnest(b.grant_times) AS u(t)
     WHERE u.t > b.checked_at - CAST(:burst_span AS float8)) AS oldest_burst
"""
)

_PAUSE = text(
    """
UPDATE rate_budgets
SET paused_until = greatest(
    paused_until, CAST(extract(epoch FROM clock_timestamp()) AS float8) + CAST(:seconds AS float8))
WHERE source = :source
"""
)


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to one request for permits."""

    permits: int
    retry_in: float  # when permits == 0: seconds until asking again can succeed


@dataclass(frozen=True, slots=True)
class BudgetShape:
    """How a source's budget is counted: `capacity` permits in any `span` seconds, and at
    most `burst` of them in any `burst_span`.

    `hold` (how long a replica may keep a permit) and `batch` (how many it asks for at
    once) are the replicas' side of the bargain (`agent.transfer.pacing.shared_shape`).
    """

    capacity: int
    span: float
    burst: int
    burst_span: float
    resolution: float
    hold: float
    batch: int


@dataclass(frozen=True, slots=True)
class Usage:
    """What a refused grant saw: permits in each window, the oldest grant in each, a pause."""

    now: float
    used: int
    oldest: float | None
    used_burst: int
    oldest_burst: float | None
    paused_until: float


def retry_in(usage: Usage, shape: BudgetShape) -> float:
    """Seconds until a permit may be granted: the pause ends, and the oldest grant of each
    full window leaves it (pure)."""
    frees_at = usage.paused_until
    if usage.used >= shape.capacity and usage.oldest is not None:
        frees_at = max(frees_at, usage.oldest + shape.span)
    if usage.used_burst >= shape.burst and usage.oldest_burst is not None:
        frees_at = max(frees_at, usage.oldest_burst + shape.burst_span)
    return max(frees_at - usage.now, shape.resolution)


class Budget(Protocol):
    """Where a source's permits come from: the shared row, or `MemoryBudget` in tests."""

    async def grant(self, want: int) -> Grant:
        """Up to `want` permits now; zero, with when to ask again, when none fit."""
        ...

    async def pause(self, seconds: float) -> None:
        """Grant nothing for `seconds` (the API answered 429)."""
        ...


class SharedBudget:
    """One source's budget in the `rate_budgets` table (PostgreSQL only)."""

    def __init__(self, db: Database, source: str, shape: BudgetShape) -> None:
        self.db = db
        self.source = source
        self.shape = shape
        self._row_exists = False

    async def grant(self, want: int) -> Grant:
        """Up to `want` permits, in one statement; zero (and when to ask again) when none fit."""
        await self._ensure_row()
        shape = self.shape
        params = {
            "source": self.source,
            "want": want,
            "capacity": shape.capacity,
            "span": shape.span,
            "burst": shape.burst,
            "burst_span": shape.burst_span,
            "resolution": shape.resolution,
        }
        async with self.db.begin() as conn:
            row: Any = (await conn.execute(_GRANT, params)).one()
        if row.granted > 0:
            return Grant(row.granted, 0.0)
        usage = Usage(
            row.checked_at,
            row.used,
            row.oldest,
            row.used_burst,
            row.oldest_burst,
            row.paused_until,
        )
        return Grant(0, retry_in(usage, shape))

    async def pause(self, seconds: float) -> None:
        """Grant nothing to any replica for `seconds` (the API answered 429)."""
        await self._ensure_row()
        async with self.db.begin() as conn:
            await conn.execute(_PAUSE, {"source": self.source, "seconds": seconds})

    async def _ensure_row(self) -> None:
        if self._row_exists:
            return
        row = {
            "source": self.source,
            "grant_times": [],
            "grant_counts": [],
            "granted": 0,
            "checked_at": 0.0,
            "paused_until": 0.0,
        }
        async with self.db.begin() as conn:
            statement = insert_for("postgresql", RateBudgetRow).values(row)
            await conn.execute(statement.on_conflict_do_nothing())
        self._row_exists = True


@dataclass
class MemoryBudget:
    """The same budget in memory (one process): the fake beside `SharedBudget` for tests."""

    shape: BudgetShape
    clock: Callable[[], float]
    grants: deque[tuple[float, int]] = field(default_factory=deque)
    paused_until: float = 0.0
    statements: int = 0  # how many grants were asked for (each a statement on PostgreSQL)

    async def grant(self, want: int) -> Grant:
        self.statements += 1
        now, shape = self.clock(), self.shape
        while self.grants and self.grants[0][0] <= now - shape.span:
            self.grants.popleft()
        recent = [(t, n) for t, n in self.grants if t > now - shape.burst_span]
        used, used_burst = sum(n for _, n in self.grants), sum(n for _, n in recent)
        permits = max(0, min(want, shape.capacity - used, shape.burst - used_burst))
        if now >= self.paused_until and permits:
            self.grants.append((now, permits))
            return Grant(permits, 0.0)
        oldest = self.grants[0][0] if self.grants else None
        oldest_burst = recent[0][0] if recent else None
        usage = Usage(now, used, oldest, used_burst, oldest_burst, self.paused_until)
        return Grant(0, retry_in(usage, shape))

    async def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)
