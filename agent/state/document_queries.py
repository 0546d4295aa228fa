"""The statements the planner's reads send, built once: the known documents of a source
(with the version a failed job waits to retry) and the check of which listed ones changed."""

from __future__ import annotations

import functools
import itertools
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, select

from agent.models import DocState, KnownDocument
from agent.state.tables import DocumentRow, JobRow

TABLE = cast(Table, DocumentRow.__table__)
STATES = {state.value: state for state in DocState}  # a dict lookup costs less than DocState()


def known_query() -> Any:
    """Documents of a source (`:source`) with what the planner needs, and the version a
    failed job of theirs waits to retry until its time (`:now`). Built once: a statement
    built per window costs more than its rows."""
    waiting = and_(
        JobRow.source == TABLE.c.source,
        JobRow.remote_id == TABLE.c.remote_id,
        JobRow.next_retry_at > bindparam("now"),
    )
    return (
        select(
            TABLE.c.remote_id,
            TABLE.c.version,
            TABLE.c.rel_path,
            TABLE.c.state,
            TABLE.c.size,
            TABLE.c.metadata_hash,
            JobRow.version.label("waiting_version"),
            TABLE.c.prune,
            TABLE.c.mtime_ns,
            TABLE.c.reason,
        )
        .outerjoin(JobRow, waiting)
        .where(TABLE.c.source == bindparam("source"))
    )


KNOWN = known_query()
KNOWN_OF = KNOWN.where(TABLE.c.remote_id.in_(bindparam("ids", expanding=True)))


def known(row: Any) -> KnownDocument:
    rid, version, rel_path, state, size, metadata_hash, waiting, prune, mtime_ns, reason = row
    # by position: a Row's attribute lookup costs more than the rest of this function
    return KnownDocument(
        rid, version, rel_path, STATES[state], size, metadata_hash, waiting, prune, mtime_ns, reason
    )


@functools.cache
def unsettled_sql(paramstyle: str, rows: int, *, metadata: bool) -> str:
    """The statement `Documents.unsettled` sends for `rows` listed documents (SQLite's `?`
    or asyncpg's `$n` parameters; the listed values are typed text on PostgreSQL), with
    or without the metadata hash column."""
    numbered = itertools.count(1)

    def slot() -> str:
        return "?" if paramstyle == "qmark" else f"${next(numbered)}::text"

    columns = 4 if metadata else 3
    values = ", ".join(f"({', '.join(slot() for _ in range(columns))})" for _ in range(rows))
    sql = (
        f"WITH listed (rid, ver, path{', mhash' if metadata else ''}) "  # noqa: S608 - no input
        f"AS (VALUES {values}) "
        "SELECT listed.rid FROM listed LEFT OUTER JOIN documents AS d "
        f"ON d.source = {slot()} AND d.remote_id = listed.rid "
        f"WHERE d.id IS NULL OR d.state <> '{DocState.MIRRORED.value}' "
        "OR d.version <> listed.ver OR d.rel_path IS NULL OR d.rel_path <> listed.path"
    )
    if metadata:
        sql += (
            " OR (listed.mhash IS NOT NULL "
            "AND (d.metadata_hash IS NULL OR d.metadata_hash <> listed.mhash))"
        )
    return sql
