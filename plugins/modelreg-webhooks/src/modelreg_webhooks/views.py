"""The REST API of webhook subscriptions and their delivery log (global admins only).

``/api/v1/webhooks`` (GET list, POST create), ``/api/v1/webhooks/{id}`` (GET, PATCH,
DELETE), ``/api/v1/webhooks/{id}/deliveries`` (GET, paged: ``limit``, ``before``,
``status``), ``/api/v1/webhooks/{id}/deliveries/{delivery}`` (GET, with its attempts) and
``POST /api/v1/webhooks/{id}/deliveries/{delivery}/redeliver``.  Secrets are write-only.
"""

from __future__ import annotations

import json
import logging
import secrets as secrets_module
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from modelreg.api import (
    ADMIN,
    JSON_BODY_ERRORS,
    ApiOperation,
    ApiParam,
    BadRequest,
    NotFound,
    Unprocessable,
    add_api_view,
    mark_changed,
    read_json_body,
)

from . import delivery, targets
from .config import WebhookSettings
from .tables import DELIVERED, FAILED, PENDING, attempts, deliveries, subscriptions

log = logging.getLogger(__name__)

PERMISSION = ADMIN
MAX_PAGE = 500
MAX_PATTERNS = 50
FIELDS = {"url", "secret", "events", "active", "description"}


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def subscription_json(row: Any) -> dict[str, Any]:
    """A subscription as the API shows it: everything but the secret."""
    return {"id": row.id, "url": row.url, "events": list(row.events), "active": row.active,
            "description": row.description, "created_by": row.created_by,
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
            "has_secret": bool(row.secret)}


def delivery_json(row: Any) -> dict[str, Any]:
    """A delivery of the log."""
    return {"id": row.id, "subscription": row.subscription_id, "event_id": row.event_id,
            "event_type": row.event_type, "model": row.model, "status": row.status,
            "attempts": row.attempts, "next_attempt_at": _iso(row.next_attempt_at),
            "last_status_code": row.last_status_code, "last_error": row.last_error,
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
            "delivered_at": _iso(row.delivered_at), "payload": json.loads(row.payload)}


def _body(request: Request) -> dict[str, Any]:
    body = read_json_body(request)
    unknown = set(body) - FIELDS
    if unknown:
        raise Unprocessable(f"unknown fields: {', '.join(sorted(unknown))}",
                            details={"fields": sorted(unknown)})
    return body


def _checked(request: Request, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """Validate the writable fields present in ``body``; every problem is reported."""
    config = WebhookSettings.from_settings(request.registry.settings)
    problems: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    if "url" in body or creating:
        try:
            targets.resolve(body.get("url"), config.allow_private)  # type: ignore[arg-type]
            values["url"] = body["url"].strip()
        except targets.TargetRefused as exc:
            problems.append({"field": "url", "code": "invalid_url", "message": str(exc)})
    if "secret" in body:
        secret = body["secret"]
        if not isinstance(secret, str) or not 16 <= len(secret) <= 500:
            problems.append({"field": "secret", "code": "invalid_secret",
                             "message": "the secret must be 16 to 500 characters"})
        else:
            values["secret"] = secret
    elif creating:
        values["secret"] = secrets_module.token_urlsafe(32)
    if "events" in body or creating:
        events = body.get("events", ["*"])
        if (not isinstance(events, list) or not 1 <= len(events) <= MAX_PATTERNS
                or not all(isinstance(e, str) and 0 < len(e) <= 100 for e in events)):
            problems.append({"field": "events", "code": "invalid_events",
                             "message": "events must be a list of 1 to 50 event-type globs "
                                        "(e.g. \"version.*\")"})
        else:
            values["events"] = events
    if "active" in body or creating:
        active = body.get("active", True)
        if not isinstance(active, bool):
            problems.append({"field": "active", "code": "invalid_active",
                             "message": "active must be true or false"})
        else:
            values["active"] = active
    if "description" in body or creating:
        text = body.get("description", "")
        if not isinstance(text, str) or len(text) > 500:
            problems.append({"field": "description", "code": "invalid_description",
                             "message": "the description must be text of at most 500 "
                                        "characters"})
        else:
            values["description"] = text
    if problems:
        raise Unprocessable("the webhook subscription is invalid",
                            code="validation_failed", details={"problems": problems})
    return values


def _changed(request: Request) -> Any:
    """The request's session, marked as written (Core statements do not mark it)."""
    mark_changed(request.dbsession)
    return request.dbsession


def _subscription(request: Request) -> Any:
    try:
        sub_id = int(request.matchdict["id"])
    except ValueError:
        raise NotFound("no such webhook subscription", code="webhook_not_found") from None
    row = request.dbsession.execute(
        sa.select(subscriptions).where(subscriptions.c.id == sub_id)).first()
    if row is None:
        raise NotFound("no such webhook subscription", code="webhook_not_found")
    return row


def _delivery(request: Request, sub: Any) -> Any:
    try:
        delivery_id = int(request.matchdict["delivery"])
    except ValueError:
        raise NotFound("no such delivery", code="delivery_not_found") from None
    row = request.dbsession.execute(
        sa.select(deliveries).where(deliveries.c.id == delivery_id,
                                    deliveries.c.subscription_id == sub.id)).first()
    if row is None:
        raise NotFound("no such delivery", code="delivery_not_found")
    return row


def list_subscriptions(request: Request) -> dict[str, Any]:
    """GET /api/v1/webhooks: every subscription, oldest first."""
    rows = request.dbsession.execute(sa.select(subscriptions).order_by(subscriptions.c.id))
    return {"webhooks": [subscription_json(row) for row in rows]}


def create_subscription(request: Request) -> dict[str, Any]:
    """POST /api/v1/webhooks: ``url`` (required), ``secret`` (generated if absent, and then
    returned this once), ``events`` (globs, default ``["*"]``), ``active``,
    ``description``."""
    body = _body(request)
    values = _checked(request, body, creating=True)
    now = delivery.utcnow()
    sub_id = _changed(request).execute(
        sa.insert(subscriptions).values(**values, created_by=request.authenticated_userid,
                                        created_at=now, updated_at=now)
        .returning(subscriptions.c.id)).scalar_one()
    row = request.dbsession.execute(
        sa.select(subscriptions).where(subscriptions.c.id == sub_id)).one()
    request.response.status = 201
    answer = subscription_json(row)
    if "secret" not in body:
        answer["secret"] = values["secret"]  # generated: shown once, never again
    return answer


def get_subscription(request: Request) -> dict[str, Any]:
    """GET /api/v1/webhooks/{id}."""
    return subscription_json(_subscription(request))


def update_subscription(request: Request) -> dict[str, Any]:
    """PATCH /api/v1/webhooks/{id}: any of the writable fields."""
    sub = _subscription(request)
    values = _checked(request, _body(request), creating=False)
    if values:
        _changed(request).execute(sa.update(subscriptions)
                                  .where(subscriptions.c.id == sub.id)
                                  .values(**values, updated_at=delivery.utcnow()))
    return subscription_json(_subscription(request))


def delete_subscription(request: Request) -> Any:
    """DELETE /api/v1/webhooks/{id}: the subscription and its delivery log."""
    sub = _subscription(request)
    db = _changed(request)
    owned = sa.select(deliveries.c.id).where(deliveries.c.subscription_id == sub.id)
    db.execute(sa.delete(attempts).where(attempts.c.delivery_id.in_(owned)))
    db.execute(sa.delete(deliveries).where(deliveries.c.subscription_id == sub.id))
    db.execute(sa.delete(subscriptions).where(subscriptions.c.id == sub.id))
    response = Response(status=204)
    del response.content_type
    return response


def list_deliveries(request: Request) -> dict[str, Any]:
    """GET /api/v1/webhooks/{id}/deliveries: newest first; ``limit`` (default 50),
    ``before`` (a delivery id: the next page), ``status``."""
    sub = _subscription(request)
    try:
        limit = int(request.params.get("limit", 50))
        before = int(request.params["before"]) if "before" in request.params else None
    except ValueError:
        raise BadRequest("limit and before must be integers") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    status = request.params.get("status")
    if status is not None and status not in (PENDING, DELIVERED, FAILED):
        raise BadRequest("status must be pending, delivered or failed")
    query = sa.select(deliveries).where(deliveries.c.subscription_id == sub.id)
    if before is not None:
        query = query.where(deliveries.c.id < before)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    rows = request.dbsession.execute(
        query.order_by(deliveries.c.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    return {"deliveries": [delivery_json(row) for row in page],
            "next": page[-1].id if len(rows) > limit else None}


def get_delivery(request: Request) -> dict[str, Any]:
    """GET /api/v1/webhooks/{id}/deliveries/{delivery}: with every attempt, oldest first."""
    row = _delivery(request, _subscription(request))
    tries = request.dbsession.execute(
        sa.select(attempts).where(attempts.c.delivery_id == row.id)
        .order_by(attempts.c.id)).all()
    return {**delivery_json(row), "attempt_log": [
        {"at": _iso(t.attempted_at), "status_code": t.status_code, "error": t.error,
         "duration_ms": t.duration_ms, "retry_after": t.retry_after} for t in tries]}


def redeliver(request: Request) -> dict[str, Any]:
    """POST …/deliveries/{delivery}/redeliver: queue the delivery again (``pending``, a
    fresh set of attempts) and send it once right after this request commits; if that
    fails it is retried like any other, by the worker's next event delivery."""
    sub = _subscription(request)
    row = _delivery(request, sub)
    now = delivery.utcnow()
    _changed(request).execute(
        sa.update(deliveries).where(deliveries.c.id == row.id)
        .values(status=PENDING, attempts=0, next_attempt_at=now, locked_until=None,
                updated_at=now, delivered_at=None))
    settings = dict(request.registry.settings)

    def send_after_commit(success: bool) -> None:
        if not success:
            return
        try:
            config = WebhookSettings.from_settings(settings)
            delivery.attempt(delivery.get_engine(settings), config, row.id)
        except Exception:  # the worker's next sweep retries it
            log.exception("redelivery of webhook delivery %s failed", row.id)

    request.tm.get().addAfterCommitHook(send_after_commit)
    request.response.status = 202
    return {**delivery_json(row), "status": PENDING, "attempts": 0}


def includeme(config: Configurator) -> None:
    """Routes and views, each with its OpenAPI operation; every one needs the global
    ``admin`` permission."""
    base = "/api/v1/webhooks"
    config.add_route("webhooks", base)
    config.add_route("webhooks.one", base + "/{id}")
    config.add_route("webhooks.deliveries", base + "/{id}/deliveries")
    config.add_route("webhooks.delivery", base + "/{id}/deliveries/{delivery}")
    config.add_route("webhooks.redeliver", base + "/{id}/deliveries/{delivery}/redeliver")
    paging = (ApiParam("limit", "page size (1-500, default 50)", {"type": "integer"}),
              ApiParam("before", "the next page: the previous page's next",
                       {"type": "integer"}),
              ApiParam("status", "pending, delivered or failed"))
    views: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("webhooks", "GET", list_subscriptions, {}),
        ("webhooks", "POST", create_subscription,
         {"status": 201, "errors": (422, *JSON_BODY_ERRORS)}),
        ("webhooks.one", "GET", get_subscription, {}),
        ("webhooks.one", "PATCH", update_subscription,
         {"errors": (422, *JSON_BODY_ERRORS)}),
        ("webhooks.one", "DELETE", delete_subscription, {"status": 204}),
        ("webhooks.deliveries", "GET", list_deliveries, {"params": paging}),
        ("webhooks.delivery", "GET", get_delivery, {}),
        ("webhooks.redeliver", "POST", redeliver, {"status": 202}),
    ]
    for route, method, view, extra in views:
        summary = (view.__doc__ or "").strip().splitlines()[0]
        add_api_view(config, view,
                     ApiOperation(route_name=route, method=method, summary=summary,
                                  permission=PERMISSION, tags=("webhooks",), **extra),
                     renderer="json")
