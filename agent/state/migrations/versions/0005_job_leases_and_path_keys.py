"""Download jobs leased to replicas, pass leases, and casefolded path keys.

Jobs gain their lease (`owner`, `lease_until`, `attempt`), the listed document (`doc_json`,
so any replica can download it) and `path_key`; documents gain `path_key`, so a streaming
pass finds who holds a path without reading every row. On SQLite the jobs table is rebuilt
with AUTOINCREMENT: a fence (`id`, `owner`, `attempt`) must never match a later job that
reused a deleted job's id. Jobs a stopped process left active are queued again (no lease
holds them), and the path keys are filled in by Python's casefold, which SQL cannot do.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 2000


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    table_kwargs = {"sqlite_autoincrement": True} if sqlite else {}
    with op.batch_alter_table(
        "jobs", recreate="always" if sqlite else "auto", table_kwargs=table_kwargs
    ) as batch:
        batch.add_column(sa.Column("doc_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("path_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.Float(), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_jobs_claim", ["state", "id"])
        batch.create_index("ix_jobs_path", ["source", "path_key"])
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("path_key", sa.Text(), nullable=True))
        batch.create_index("ix_documents_path", ["source", "path_key"])
    op.create_table(
        "pass_leases",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("taken_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_pass_leases")),
    )
    op.execute("UPDATE jobs SET state = 'queued' WHERE state = 'active'")
    for table in ("documents", "jobs"):
        _fill_path_keys(table)


def _fill_path_keys(name: str) -> None:
    bind = op.get_bind()
    table = sa.table(
        name, sa.column("id", sa.Integer()), sa.column("rel_path"), sa.column("path_key")
    )
    rows = bind.execute(
        sa.select(table.c.id, table.c.rel_path).where(table.c.rel_path.is_not(None))
    ).all()
    statement = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("row_id"))
        .values(path_key=sa.bindparam("key"))
    )
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        bind.execute(statement, [{"row_id": i, "key": path.casefold()} for i, path in chunk])


def downgrade() -> None:
    op.drop_table("pass_leases")
    with op.batch_alter_table("documents") as batch:
        batch.drop_index("ix_documents_path")
        batch.drop_column("path_key")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_path")
        batch.drop_index("ix_jobs_claim")
        for column in ("attempt", "lease_until", "owner", "path_key", "doc_json"):
            batch.drop_column(column)
