"""Replicas: their registration, pass requests any replica acts on, the shared request budget.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

GRANT_TIMES = sa.Text().with_variant(ARRAY(sa.Float()), "postgresql")
GRANT_COUNTS = sa.Text().with_variant(ARRAY(sa.Integer()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    op.create_table(
        "pass_requests",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_pass_requests")),
    )
    op.create_table(
        "rate_budgets",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("grant_times", GRANT_TIMES, nullable=False),
        sa.Column("grant_counts", GRANT_COUNTS, nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.Float(), nullable=False),
        sa.Column("paused_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_rate_budgets")),
    )


def downgrade() -> None:
    op.drop_table("rate_budgets")
    op.drop_table("pass_requests")
    op.drop_table("replicas")
