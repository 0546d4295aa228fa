"""The state store: the open database and its parts, one per job, as the layers above see it.

store.db            lifecycle and error boundary    (agent.state.database)
store.documents     documents and mirrored files    (agent.state.documents)
store.jobs          the download job queue          (agent.state.jobs)
store.credentials   tokens and cursors              (agent.state.credentials)
store.status        pass records, the status model  (agent.state.status)
store.journal       the change journal              (agent.state.journal)
store.outbox        webhook endpoints' cursors      (agent.state.outbox)
store.leases        who lists and plans each source (agent.state.leases)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

from agent.state.credentials import Credentials
from agent.state.database import Database, OpenOptions
from agent.state.documents import Documents
from agent.state.jobs import Jobs
from agent.state.journal import Journal
from agent.state.leases import PassLeases
from agent.state.outbox import Outbox
from agent.state.source_state import SourceState
from agent.state.status import Status


@dataclass(frozen=True, slots=True)
class Store:
    """Async access to the state database, split by job."""

    db: Database
    documents: Documents
    jobs: Jobs
    credentials: Credentials
    status: Status
    journal: Journal
    outbox: Outbox
    leases: PassLeases

    @classmethod
    def over(cls, db: Database) -> Store:
        jobs, journal = Jobs(db), Journal(db)
        documents = Documents(db, journal)
        return cls(
            db,
            documents,
            jobs,
            Credentials(db),
            Status(db, jobs),
            journal,
            Outbox(db, journal),
            PassLeases(db),
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, state_dir: Path, **options: Unpack[OpenOptions]
    ) -> AsyncIterator[Store]:
        """Open the database (see `Database.open`) and close it on exit."""
        async with Database.open(url, state_dir, **options) as db:
            yield cls.over(db)

    def for_source(self, source: str) -> SourceState:
        """What one source may keep in the state: its tokens and cursors."""
        return self.credentials.for_source(source)
