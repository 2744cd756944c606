"""scan allowances

Revision ID: scan_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "scan_0001"
down_revision = None
branch_labels = ("modelreg_scan",)
depends_on = "0001"


def upgrade() -> None:
    """Create ``scan_allowances``."""
    op.create_table(
        "scan_allowances",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("models", sa.String(200), nullable=False),
        sa.Column("globals", sa.JSON, nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scan_allowances"),
        sa.UniqueConstraint("name", name="uq_scan_allowances_name"),
    )


def downgrade() -> None:
    """Drop ``scan_allowances``."""
    op.drop_table("scan_allowances")
