"""Remote ids and versions are vendor strings of any length: TEXT on PostgreSQL.

SQLite never enforced the VARCHAR(512) length; PostgreSQL does, so a longer id or version
would fail a pass there only. Changing VARCHAR to TEXT rewrites no table on PostgreSQL.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = [
    (table, column) for table in ("documents", "jobs") for column in ("remote_id", "version")
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite keeps the declared type; it never limited the length
    for table, column in COLUMNS:
        op.alter_column(
            table, column, type_=sa.Text(), existing_type=sa.String(512), existing_nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(
            table, column, type_=sa.String(512), existing_type=sa.Text(), existing_nullable=False
        )
