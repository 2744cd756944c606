"""Queueing, signing, sending and retrying webhook deliveries.

Every function here works on an engine of the plugin's own (the hooks hand plugins settings,
not sessions) and uses short transactions of its own, so nothing is held open while a
request to a subscriber is in flight.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import fnmatch
import hashlib
import hmac
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelreg.api import database_engine, database_writer

from . import targets
from .config import WebhookSettings
from .tables import DELIVERED, FAILED, PENDING, attempts, deliveries, subscriptions

log = logging.getLogger(__name__)

#: The longest error text kept in the log.
MAX_ERROR = 2000
USER_AGENT = "modelreg-webhooks/0.1"

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def utcnow() -> dt.datetime:
    """The current time in UTC, naive (how the tables store times)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def get_engine(settings: dict[str, Any]) -> sa.Engine:
    """The plugin's engine for the registry's database (``sqlalchemy.url``), one per URL.

    The core's engine setup (SQLite's busy timeout, MariaDB's isolation level, PostgreSQL's
    options), as the app's own engine has it, marked for writing: nearly every transaction
    here writes, and most read first (:func:`enqueue`).  On SQLite such a transaction must
    begin ``IMMEDIATE``, or a write of the app's committed after its first read fails it at
    once with ``database is locked``; the few that only read wait their turn as well.
    """
    url = settings["sqlalchemy.url"]
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = database_writer(database_engine(settings))
        return engine


def dispose_engines() -> None:
    """Close the plugin's database connections (tests, and processes that end)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _migrated.clear()


_migrated: set[str] = set()


def tables_exist(engine: sa.Engine) -> bool:
    """Whether the plugin's migrations ran on this database (remembered once true)."""
    key = str(engine.url)
    if key in _migrated:
        return True
    if sa.inspect(engine).has_table(subscriptions.name):
        _migrated.add(key)
        return True
    return False


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``Webhook-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of
    ``f"{id}.{timestamp}.{body}"`` under ``secret``."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def matches(patterns: list[str], event_type: str) -> bool:
    """Whether ``event_type`` matches any of the glob ``patterns`` (``*`` matches all)."""
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


def event_body(event: Any) -> str:
    """The JSON document sent for ``event``: ``id``, ``type``, ``occurred_at``, ``model``,
    ``data``."""
    created = event.created_at
    if created.tzinfo is not None:
        created = created.astimezone(dt.UTC).replace(tzinfo=None)
    return json.dumps({
        "id": event.id, "type": event.type,
        "occurred_at": created.isoformat(timespec="microseconds") + "Z",
        "model": event.model, "data": event.payload,
    }, sort_keys=True, separators=(",", ":"), default=str)


def enqueue(engine: sa.Engine, event: Any) -> list[int]:
    """Record a pending delivery of ``event`` for every active subscription it matches.

    Idempotent on the event id: a redelivered event adds nothing.

    :returns: the ids of this event's deliveries (new or already recorded).
    """
    body = event_body(event)
    now = utcnow()
    for _ in range(3):
        try:
            with engine.begin() as conn:
                subs = conn.execute(sa.select(subscriptions.c.id, subscriptions.c.events)
                                    .where(subscriptions.c.active.is_(True))).all()
                known = set(conn.scalars(sa.select(deliveries.c.subscription_id)
                                         .where(deliveries.c.event_id == event.id)))
                rows = [
                    {"subscription_id": sub.id, "event_id": event.id, "event_type": event.type,
                     "model": event.model, "payload": body, "status": PENDING, "attempts": 0,
                     "next_attempt_at": now, "created_at": now, "updated_at": now}
                    for sub in subs if sub.id not in known and matches(sub.events, event.type)
                ]
                if rows:
                    conn.execute(sa.insert(deliveries), rows)
            break
        except sa.exc.IntegrityError:  # another worker recorded it at the same moment
            continue
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(deliveries.c.id)
                                 .where(deliveries.c.event_id == event.id)))


def _due(conn: sa.Connection, now: dt.datetime, model: str | None, only_model: bool,
         limit: int) -> list[int]:
    """Due deliveries that are the oldest pending one of their subscription and model."""
    earlier = deliveries.alias("earlier")
    blocked = (
        sa.select(earlier.c.id)
        .where(earlier.c.subscription_id == deliveries.c.subscription_id,
               earlier.c.status == PENDING, earlier.c.id < deliveries.c.id,
               sa.or_(earlier.c.model == deliveries.c.model,
                      sa.and_(earlier.c.model.is_(None), deliveries.c.model.is_(None))))
        .exists()
    )
    query = (
        sa.select(deliveries.c.id)
        .where(deliveries.c.status == PENDING,
               sa.or_(deliveries.c.next_attempt_at.is_(None),
                      deliveries.c.next_attempt_at <= now),
               sa.or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < now),
               ~blocked)
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    if only_model:
        query = query.where(deliveries.c.model == model if model is not None
                            else deliveries.c.model.is_(None))
    return list(conn.scalars(query))


def deliver_due(engine: sa.Engine, config: WebhookSettings, model: str | None = None,
                only_model: bool = False) -> int:
    """Send every due delivery (of ``model`` only, when ``only_model``), in event order per
    subscription and model, until none is due or ``config.batch`` were sent.

    :returns: how many were attempted.
    """
    sent = 0
    while sent < config.batch:
        with engine.connect() as conn:
            due = _due(conn, utcnow(), model, only_model, config.batch - sent)
        if not due:
            break
        progress = 0
        for delivery_id in due:
            if attempt(engine, config, delivery_id):
                progress += 1
        sent += progress
        if not progress:
            break
    return sent


@dataclass
class Outcome:
    """What one attempt gave."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(config: WebhookSettings, failures: int, retry_after: float | None) -> float:
    """Seconds before the next attempt after ``failures`` failed ones: exponential with
    full jitter over the upper half, at least ``Retry-After``, at most ``max_backoff``."""
    delay = config.backoff_base * 2 ** max(0, failures - 1)
    delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 (jitter, not security)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, config.max_backoff)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a checked address, whatever the host name resolves to now."""

    def __init__(self, target: targets.Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        """Connect to the checked address."""
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address, verifying the certificate of the host."""

    def __init__(self, target: targets.Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        """Connect to the checked address and start TLS for the host name."""
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def send(url: str, headers: dict[str, str], body: bytes, config: WebhookSettings) -> Outcome:
    """POST ``body`` to ``url``, checking its address first; never raises."""
    try:
        target = targets.resolve(url, config.allow_private)
    except targets.TargetRefused as exc:
        return Outcome(error=f"refused: {exc}")
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = cls(target, config.timeout)
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        return Outcome(status_code=response.status,
                       retry_after=parse_retry_after(response.getheader("Retry-After")))
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
    finally:
        conn.close()


def _claim(engine: sa.Engine, delivery_id: int, lease: float) -> Any | None:
    now = utcnow()
    with engine.begin() as conn:
        # Due again, not only unlocked: the list of due deliveries may be older than another
        # worker's failed attempt, which released the lock and set the next attempt (backoff,
        # Retry-After) in the future.
        claimed = conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.status == PENDING,
                   sa.or_(deliveries.c.next_attempt_at.is_(None),
                          deliveries.c.next_attempt_at <= now),
                   sa.or_(deliveries.c.locked_until.is_(None),
                          deliveries.c.locked_until < now))
            .values(locked_until=now + dt.timedelta(seconds=lease))
        ).rowcount
        if claimed != 1:
            return None
        return conn.execute(
            sa.select(deliveries, subscriptions.c.url, subscriptions.c.secret,
                      subscriptions.c.active)
            .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
            .where(deliveries.c.id == delivery_id)
        ).one()


def attempt(engine: sa.Engine, config: WebhookSettings, delivery_id: int) -> bool:
    """Claim one pending delivery, send it, and record the attempt and the new state.

    :returns: ``False`` when another worker holds it, it is no longer pending, or its next
        attempt is not due yet.
    """
    row = _claim(engine, delivery_id, config.lease)
    if row is None:
        return False
    started = time.monotonic()
    if not row.active:
        outcome = Outcome(error="the subscription is not active")
    else:
        timestamp = int(time.time())
        body = row.payload.encode()
        headers = {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "Webhook-Id": row.event_id, "Webhook-Timestamp": str(timestamp),
            "Webhook-Signature": sign(row.secret, row.event_id, timestamp, body),
            "Webhook-Event": row.event_type,
        }
        outcome = send(row.url, headers, body, config)
    now = utcnow()
    tries = row.attempts + 1
    values: dict[str, Any] = {"attempts": tries, "locked_until": None, "updated_at": now,
                              "last_status_code": outcome.status_code}
    if outcome.ok:
        values.update(status=DELIVERED, delivered_at=now, last_error=None,
                      next_attempt_at=None)
    else:
        error = outcome.error or f"HTTP {outcome.status_code}"
        values["last_error"] = error[:MAX_ERROR]
        if not row.active or tries >= config.max_attempts:
            values.update(status=FAILED, next_attempt_at=None)
        else:
            wait = backoff(config, tries, outcome.retry_after)
            values["next_attempt_at"] = now + dt.timedelta(seconds=wait)
    with engine.begin() as conn:
        conn.execute(sa.insert(attempts).values(
            delivery_id=delivery_id, attempted_at=now, status_code=outcome.status_code,
            error=None if outcome.ok else values["last_error"],
            duration_ms=int((time.monotonic() - started) * 1000),
            retry_after=outcome.retry_after))
        conn.execute(sa.update(deliveries).where(deliveries.c.id == delivery_id)
                     .values(**values))
    log.info("webhook delivery %s of event %s: %s", delivery_id, row.event_id,
             values.get("status", PENDING) if outcome.ok or "status" in values
             else f"retry ({values['last_error']})")
    return True


def pending_of(engine: sa.Engine, ids: list[int]) -> list[Any]:
    """The deliveries among ``ids`` that are still pending: id and next attempt."""
    if not ids:
        return []
    with engine.connect() as conn:
        return conn.execute(
            sa.select(deliveries.c.id, deliveries.c.next_attempt_at)
            .where(deliveries.c.id.in_(ids), deliveries.c.status == PENDING)
        ).all()
