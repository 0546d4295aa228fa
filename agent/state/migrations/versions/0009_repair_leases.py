"""Repair leases: a pass lease `verify --repair` holds keeps every replica off its source.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pass_leases") as batch:
        batch.add_column(sa.Column("repair", sa.Boolean(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("pass_leases") as batch:
        batch.drop_column("repair")
