"""webhook subscriptions, deliveries and attempts

Revision ID: webhooks_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "webhooks_0001"
down_revision = None
branch_labels = ("modelreg_webhooks",)
depends_on = "0001"


def upgrade() -> None:
    """Create the three tables."""
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(500), nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_subscriptions"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("subscription_id", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=True),
        sa.Column("locked_until", sa.DateTime, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["webhook_subscriptions.id"], ondelete="CASCADE",
            name="fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
        sa.UniqueConstraint("subscription_id", "event_id",
                            name="uq_webhook_deliveries_subscription_event"),
    )
    op.create_index("ix_webhook_deliveries_status_next", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("delivery_id", sa.Integer, nullable=False),
        sa.Column("attempted_at", sa.DateTime, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("retry_after", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["webhook_deliveries.id"], ondelete="CASCADE",
            name="fk_webhook_attempts_delivery_id_webhook_deliveries"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
