"""Content digests name their algorithm: `sha256` becomes `digest`, holding "<algorithm>:<hex>".

In the documents, the jobs and the change journal (whose entries carry it as `digest`).

The agent records BLAKE3 by default now (sha256 on request, `agent.hash_algorithm`), so the
column says which one each value is: existing values, all sha256, become "sha256:<hex>" and
stay readable (a local-edit check hashes the file with the algorithm its row names). The
column widens to 80 characters for the prefix. A downgrade keeps the sha256 values and
forgets the others (the old code could not check a file against them).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("documents", "jobs", "events")
SHA256 = "sha256:"


def upgrade() -> None:
    for table in TABLES:
        _rename(table, "sha256", "digest", sa.String(80), sa.String(64))
        rows = sa.table(table, sa.column("digest", sa.String))
        op.execute(
            sa.update(rows)
            .where(rows.c.digest.is_not(None))
            .values(digest=sa.literal(SHA256) + rows.c.digest)
        )


def downgrade() -> None:
    for table in TABLES:
        rows = sa.table(table, sa.column("digest", sa.String))
        op.execute(sa.update(rows).where(~rows.c.digest.startswith(SHA256)).values(digest=None))
        op.execute(
            sa.update(rows)
            .where(rows.c.digest.is_not(None))
            .values(digest=sa.func.substr(rows.c.digest, len(SHA256) + 1))
        )
        _rename(table, "digest", "sha256", sa.String(64), sa.String(80))


def _rename(table: str, old: str, new: str, type_: sa.String, existing: sa.String) -> None:
    """Rename and retype a column. SQLite copies the table for that: a table declared with
    AUTOINCREMENT (the journal, whose `seq` is never used twice; the jobs, whose ids fence
    their leases) keeps it, and keeps its last number."""
    bind = op.get_bind()
    keep = bind.dialect.name == "sqlite" and _autoincrement(bind, table)
    last = _last_id(bind, table) if keep else None
    kwargs = {"sqlite_autoincrement": True} if keep else {}
    with op.batch_alter_table(table, table_kwargs=kwargs) as batch:
        batch.alter_column(
            old, new_column_name=new, type_=type_, existing_type=existing, existing_nullable=True
        )
    if last is not None:
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :seq)"),
            {"t": table, "seq": last},
        )


def _autoincrement(bind: sa.Connection, table: str) -> bool:
    found = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    )
    return "AUTOINCREMENT" in (found.scalar() or "").upper()


def _last_id(bind: sa.Connection, table: str) -> int | None:
    found = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
    value = found.scalar()
    return None if value is None else int(value)
