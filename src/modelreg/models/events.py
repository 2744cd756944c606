"""Tables of what happened: the audit log and the event outbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .meta import TABLE_ARGS, Base, JSONDoc, Timestamp, utcnow
from .registry import ACTOR_LENGTH
from .security import TOKEN_PUBLIC_ID_LENGTH


class AuditEvent(Base):
    """One mutation: who did what to which target, with a summary of before and after."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    actor: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))
    action: Mapped[str] = mapped_column(sa.String(64))
    #: e.g. ``model``, ``version``, ``alias``; and the target's name (``fraud/3``).
    target_type: Mapped[str] = mapped_column(sa.String(32))
    target: Mapped[str] = mapped_column(sa.String(512))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    client_addr: Mapped[str | None] = mapped_column(sa.String(64))
    #: The public id of the API token the actor used, if any (not a foreign key: the audit
    #: log outlives tokens and principals).
    token_id: Mapped[str | None] = mapped_column(sa.String(TOKEN_PUBLIC_ID_LENGTH))

    __table_args__ = (
        sa.Index("ix_audit_events_at", "at"),
        sa.Index("ix_audit_events_actor_id", "actor", "id"),
        sa.Index("ix_audit_events_target", "target_type", "target"),
        TABLE_ARGS,
    )


class OutboxEvent(Base):
    """An event waiting for delivery to ``modelreg_on_event``.

    Written in the same transaction as the change it describes, so that a crash neither loses
    nor invents an event; the worker delivers it after commit and stamps ``delivered_at``.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Stable, unique event id handed to receivers (for deduplication).
    event_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    model: Mapped[str | None] = mapped_column(sa.String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Deliveries tried so far, when the next may start, and why the last one failed.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    #: A worker delivering the event holds it until then (a lease, as jobs have).
    locked_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (sa.Index("ix_outbox_delivered_at_id", "delivered_at", "id"), TABLE_ARGS)
