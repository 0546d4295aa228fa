"""Each backend's own INSERT construct (for ON CONFLICT), imported when first asked for.

SQLAlchemy's PostgreSQL dialect package imports all of its drivers' modules, 0.07 s of
every start here; an agent on SQLite never needs it, so it is not imported up front (its
`Insert` is named for the type checker only).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, overload

from sqlalchemy import Table

from agent.state.tables import Base

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

Into = Table | type[Base]


@overload
def insert_for(dialect: Literal["postgresql"], table: Into) -> PostgresInsert: ...
@overload
def insert_for(dialect: str, table: Into) -> PostgresInsert | SqliteInsert: ...
def insert_for(dialect: str, table: Into) -> PostgresInsert | SqliteInsert:
    """`sqlalchemy.dialects.<postgresql|sqlite>.insert(table)` for the connection's dialect."""
    name = "postgresql" if dialect == "postgresql" else "sqlite"
    insert: Callable[[Into], PostgresInsert | SqliteInsert]
    insert = importlib.import_module(f"sqlalchemy.dialects.{name}").insert
    return insert(table)
