"""The plugin's tables, on its own metadata (never the core's)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

#: Delivery states.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

subscriptions = sa.Table(
    "webhook_subscriptions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("secret", sa.String(500), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subscription_id", sa.Integer,
              sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),  # the exact JSON body that is signed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime, nullable=True),
    sa.Column("locked_until", sa.DateTime, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("delivered_at", sa.DateTime, nullable=True),
    sa.UniqueConstraint("subscription_id", "event_id",
                        name="uq_webhook_deliveries_subscription_event"),
    sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
)

attempts = sa.Table(
    "webhook_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("delivery_id", sa.Integer,
              sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("attempted_at", sa.DateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("retry_after", sa.Float, nullable=True),
)
