"""The hook implementations of modelreg-webhooks (the ``webhooks`` entry point)."""

from __future__ import annotations

import logging
from typing import Any

from modelreg.api import Event, hookimpl

from . import delivery
from .config import WebhookSettings

log = logging.getLogger(__name__)


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
