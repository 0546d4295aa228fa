"""Content digests name their algorithm: `sha256` becomes `digest`, holding "<algorithm>:<hex>".

In the documents, the jobs and the change journal (whose entries carry it as `digest`).

The agent records BLAKE3 by default now (sha256 on request, `agent.hash_algorithm`), so the
column says which one each value is: existing values, all sha256, become "sha256:<hex>" and
stay readable (a local-edit check hashes the file with the algorithm its row names). The
column widens to 80 characters for the prefix. A downgrade keeps the sha256 values and
forgets the others (the old code could not check a file against them).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("documents", "jobs", "events")
SHA256 = "sha256:"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "sha256",
                new_column_name="digest",
                type_=sa.String(80),
                existing_type=sa.String(64),
                existing_nullable=True,
            )
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
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "digest",
                new_column_name="sha256",
                type_=sa.String(64),
                existing_type=sa.String(80),
                existing_nullable=True,
            )
