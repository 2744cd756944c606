"""The hook implementations of modelreg-webhooks (the ``webhooks`` entry point)."""

from __future__ import annotations

import logging
from html import escape
from typing import Any

import sqlalchemy as sa

from modelreg.api import ADMIN, Event, WebSection, hookimpl, registry_of

from . import delivery
from .config import WebhookSettings
from .tables import deliveries, subscriptions

log = logging.getLogger(__name__)
#: Deliveries the web UI's admin page shows.
LATEST_DELIVERIES = 20


class DeliveriesPending(RuntimeError):
    """Raised by ``modelreg_on_event`` while some delivery of the event still waits for a
    retry: the worker then hands the event back later and holds back the model's later
    events, which keeps deliveries in event order per model."""


@hookimpl
def modelreg_migration_locations() -> str:
    """The Alembic branch ``modelreg_webhooks``: subscriptions, deliveries, attempts."""
    return "modelreg_webhooks:migrations"


@hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """The REST API under ``/api/v1/webhooks`` (global admins only)."""
    WebhookSettings.from_settings(config.get_settings())  # a wrong setting stops start-up
    config.include("modelreg_webhooks.views")


@hookimpl
def modelreg_on_event(event: Event, settings: dict[str, Any]) -> None:
    """Queue ``event`` for every active subscription it matches, then send what is due.

    Idempotent on ``event.id``.  Sends this model's due deliveries first (in event order),
    then any other due retries and requested redeliveries.  Raises
    :class:`DeliveriesPending` while a delivery of this event waits for a retry, so that the
    worker calls again later (its backoff) and holds back the model's later events.
    """
    config = WebhookSettings.from_settings(settings)
    engine = delivery.get_engine(settings)
    if not delivery.tables_exist(engine):
        log.warning("modelreg-webhooks: tables missing (run modelreg db upgrade); "
                    "event %s not sent to any subscription", event.id)
        return
    ids = delivery.enqueue(engine, event)
    delivery.deliver_due(engine, config, event.model, only_model=True)
    delivery.deliver_due(engine, config)
    waiting = delivery.pending_of(engine, ids)
    if waiting:
        first = min((row.next_attempt_at for row in waiting if row.next_attempt_at),
                    default=None)
        raise DeliveriesPending(
            f"{len(waiting)} webhook deliveries of event {event.id} wait for a retry"
            + (f" (next at {first.isoformat()}Z)" if first else ""))


@hookimpl
def modelreg_web_sections(page: str, subject: dict[str, Any], request: Any
                          ) -> list[WebSection] | None:
    """On the web UI's admin page (global admins only): the latest webhook deliveries."""
    if page != "admin" or not registry_of(request).allows(ADMIN, None):
        return None
    rows = request.dbsession.execute(
        sa.select(deliveries.c.id, deliveries.c.event_type, deliveries.c.model,
                  deliveries.c.status, deliveries.c.attempts, deliveries.c.last_status_code,
                  deliveries.c.updated_at, subscriptions.c.url)
        .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
        .order_by(deliveries.c.id.desc()).limit(LATEST_DELIVERIES)).all()
    if not rows:
        return [WebSection(title="Webhook deliveries", html="<p>No deliveries yet.</p>",
                           order=60)]
    cells = "".join(
        f"<tr><td>{r.id}</td><td>{escape(r.event_type)}</td><td>{escape(r.model or '')}</td>"
        f"<td>{escape(r.url)}</td><td>{escape(r.status)}</td><td>{r.attempts}</td>"
        f"<td>{r.last_status_code or ''}</td><td>{r.updated_at:%Y-%m-%d %H:%M:%S}</td></tr>"
        for r in rows)
    html = ('<div class="scroll"><table><thead><tr><th scope="col">Id</th>'
            '<th scope="col">Event</th><th scope="col">Model</th><th scope="col">URL</th>'
            '<th scope="col">Status</th><th scope="col">Attempts</th>'
            '<th scope="col">Last answer</th><th scope="col">Updated</th></tr></thead>'
            f'<tbody>{cells}</tbody></table></div>')
    return [WebSection(title=f"Webhook deliveries (latest {LATEST_DELIVERIES})", html=html,
                       order=60)]
