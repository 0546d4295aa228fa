"""Pass warnings: what a pass that went well had to tell, apart from its errors.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SOURCES = sa.table(
    "sources",
    sa.column("last_pass_ok", sa.Boolean()),
    sa.column("last_error", sa.Text()),
    sa.column("last_warning", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("last_warning", sa.Text(), nullable=True))
    # a pass that went well recorded only its warnings, each "warning: ...", as its error
    op.execute(
        SOURCES.update()
        .where(SOURCES.c.last_pass_ok.is_(True) & SOURCES.c.last_error.is_not(None))
        .values(
            last_warning=sa.func.replace(SOURCES.c.last_error, "warning: ", ""),
            last_error=None,
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("last_warning")
