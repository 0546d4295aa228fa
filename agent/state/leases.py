"""Pass leases: which replica lists and plans each source, taken and renewed in one statement.

One row per source (`pass_leases`). A replica takes the lease when nobody holds it, when it
holds it already, or when the holder's lease ran out (a replica that stopped renewing); it
renews it while listing, and lets it go when the pass has planned everything. Downloads are
not part of it: they are jobs, claimed by any replica (`agent.state.jobs`), except while
`verify --repair` holds the lease (`repair`): then no replica works the source at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, select, update

from agent.state.database import Database
from agent.state.dialects import insert_for
from agent.state.tables import PassLeaseRow

TABLE = cast(Table, PassLeaseRow.__table__)


@dataclass(frozen=True, slots=True)
class PassHolder:
    """Who holds a source's pass lease, since when and until when (epoch seconds)."""

    owner: str
    taken_at: float
    lease_until: float


class PassLeases:
    """The pass lease of every source."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def take(
        self, source: str, owner: str, seconds: float, *, repair: bool = False
    ) -> PassHolder | None:
        """Take (or renew) the lease of `source` for `owner` (for a repair: no replica claims
        the source's jobs while it holds it); None when it is taken, else the replica
        holding it."""
        now = self.db.clock()
        free = (
            TABLE.c.owner.is_(None)
            | (TABLE.c.owner == owner)
            | (func.coalesce(TABLE.c.lease_until, 0) < now)
        )
        async with self.db.begin() as conn:
            await conn.execute(self._row(conn.dialect.name, source))
            taken = await conn.execute(
                update(TABLE)
                .where((TABLE.c.source == source) & free)
                .values(owner=owner, lease_until=now + seconds, taken_at=now, repair=repair)
            )
            if taken.rowcount:
                return None
            row = (await conn.execute(select(TABLE).where(TABLE.c.source == source))).one()
        return PassHolder(row.owner, row.taken_at, row.lease_until)

    async def renew(self, source: str, owner: str, seconds: float) -> bool:
        """Extend a lease `owner` holds (fenced); False when it is not its own any more."""
        async with self.db.begin() as conn:
            renewed = await conn.execute(
                update(TABLE)
                .where((TABLE.c.source == source) & (TABLE.c.owner == owner))
                .values(lease_until=self.db.clock() + seconds)
            )
        return bool(renewed.rowcount)

    async def release(self, source: str, owner: str) -> None:
        """Let the lease go (fenced: a lease taken over meanwhile stays with its new holder)."""
        async with self.db.begin() as conn:
            await conn.execute(
                update(TABLE)
                .where((TABLE.c.source == source) & (TABLE.c.owner == owner))
                .values(owner=None, lease_until=None, repair=False)
            )

    async def repairing(self, source: str) -> bool:
        """Does `verify --repair` hold the source's pass lease now?"""
        held = (TABLE.c.source == source) & TABLE.c.repair
        query = select(TABLE.c.source).where(held & (TABLE.c.lease_until >= self.db.clock()))
        async with self.db.connect() as conn:
            return (await conn.scalar(query)) is not None

    async def release_all(self) -> None:
        """Let every pass lease go (SQLite at start-up: their holder was a previous process,
        gone for certain under the instance lock)."""
        async with self.db.begin() as conn:
            await conn.execute(update(TABLE).values(owner=None, lease_until=None, repair=False))

    @staticmethod
    def _row(dialect: str, source: str) -> Any:
        """INSERT the source's row unless it exists (each backend's own upsert)."""
        return insert_for(dialect, TABLE).values(source=source).on_conflict_do_nothing()
