"""Each backend's own INSERT construct (for ON CONFLICT), imported when first asked for.

SQLAlchemy's PostgreSQL dialect package imports all of its drivers' modules, 0.07 s of
every start here; an agent on SQLite never needs it, so it is not imported up front.
"""

from __future__ import annotations

import importlib
from typing import Any


def insert_for(dialect: str) -> Any:
    """`sqlalchemy.dialects.<postgresql|sqlite>.insert` for the connection's dialect name."""
    name = "postgresql" if dialect == "postgresql" else "sqlite"
    return importlib.import_module(f"sqlalchemy.dialects.{name}").insert
