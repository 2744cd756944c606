"""Throttling of failed authentication, per client address, across processes.

Every refused credential (an unknown, wrong, malformed, revoked or expired token, a disabled
principal, an unsupported ``Authorization`` header) is a failure of the client that sent it.
When a client has ``modelreg.auth.max_failures`` failures within
``modelreg.auth.failure_window`` seconds, every request of that client that carries
credentials is answered ``429 too_many_failures`` with ``Retry-After`` for
``modelreg.auth.block_seconds`` — a valid token included, so that guessing cannot go on
between successes.  A success resets nothing: neither the client's own count nor anyone
else's.

The counts live in the ``auth_failures`` table (:class:`~modelreg.models.AuthFailure`), so
that a client is throttled the same whichever process its requests reach.  A failure is
written in a transaction of its own after the request (whose own transaction is rolled back
on 401, and which on SQLite may hold the write lock a second transaction would wait for).

The client is the peer address (``REMOTE_ADDR``): never ``X-Forwarded-For``, which any client
can write.  Behind a reverse proxy, Waitress's ``trusted_proxy`` settings put the proxy's
view of the client there.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pyramid.request import Request

from .. import keys
from ..errors import TooManyRequests
from ..models import AuthFailure, utcnow
from ..settings import AUTH_BLOCK_SECONDS, AUTH_FAILURE_WINDOW, AUTH_MAX_FAILURES
from .http import client_address
from .tokens import BLOCK_NOT_READ

log = logging.getLogger(__name__)

MAX_FAILURES_SETTING = AUTH_MAX_FAILURES
FAILURE_WINDOW_SETTING = AUTH_FAILURE_WINDOW
BLOCK_SECONDS_SETTING = AUTH_BLOCK_SECONDS
DEFAULT_MAX_FAILURES = 10
DEFAULT_FAILURE_WINDOW = 60
DEFAULT_BLOCK_SECONDS = 60
#: Attempts at recording one failure when concurrent writers collide.
_RECORD_ATTEMPTS = 3


#: :meth:`Throttle.check` reads the client's block itself.
_NOT_READ: Any = BLOCK_NOT_READ

#: The client of requests without ``REMOTE_ADDR`` (which WSGI servers normally set).
UNKNOWN_CLIENT = "unknown"


def _client(request: Request) -> str:
    return client_address(request) or UNKNOWN_CLIENT


def _setting(settings: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = settings.get(key)
    if value is None or str(value).strip() == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise RuntimeError(f"{key} = {value!r} must be a whole number of at least {minimum}")
    return number


@dataclass(frozen=True)
class Throttle:
    """The throttling rule: ``max_failures`` (0 switches throttling off) within
    ``window`` block a client for ``block``."""

    max_failures: int
    window: dt.timedelta
    block: dt.timedelta

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Throttle:
        """The rule of the ``modelreg.auth.*`` settings; ``RuntimeError`` for bad values."""
        return cls(
            max_failures=_setting(settings, MAX_FAILURES_SETTING, DEFAULT_MAX_FAILURES, 0),
            window=dt.timedelta(
                seconds=_setting(settings, FAILURE_WINDOW_SETTING, DEFAULT_FAILURE_WINDOW, 1)
            ),
            block=dt.timedelta(
                seconds=_setting(settings, BLOCK_SECONDS_SETTING, DEFAULT_BLOCK_SECONDS, 1)
            ),
        )

    @property
    def enabled(self) -> bool:
        """Whether failures are counted at all."""
        return self.max_failures > 0

    def client(self, request: Request) -> str | None:
        """The client whose block a request's credentials are checked against (``None``
        when throttling is off): for :func:`~modelreg.security.tokens.authenticate_token`,
        which reads the block in its own statement."""
        return _client(request) if self.enabled else None

    def check(self, request: Request, blocked_until: Any = _NOT_READ) -> None:
        """Raise 429 when the request's client is blocked (call only when it sends
        credentials).

        :param blocked_until: the client's ``auth_failures.blocked_until`` when the caller
            read it already (``None``: not blocked); read here otherwise.
        """
        if not self.enabled:
            return
        client = _client(request)
        if blocked_until is _NOT_READ:
            blocked_until = request.dbsession.scalar(
                sa.select(AuthFailure.blocked_until).where(AuthFailure.client == client)
            )
        now = utcnow()
        if blocked_until is None or blocked_until <= now:
            return
        seconds = max(1, math.ceil((blocked_until - now).total_seconds()))
        raise TooManyRequests(
            f"too many failed authentications from this client: retry in {seconds} seconds",
            code="too_many_failures",
            details={"client": client, "retry_after": seconds},
            headers={"Retry-After": str(seconds)},
        )

    def failed(self, request: Request) -> None:
        """Count a failed authentication of the request's client, after the request."""
        if not self.enabled:
            return
        client = _client(request)
        at = utcnow()

        def record(request: Request) -> None:
            self.record_failure(request.registry[keys.DB_WRITER_ENGINE], client, at)

        request.add_finished_callback(record)

    def record_failure(self, engine: sa.Engine, client: str, at: dt.datetime) -> None:
        """Count one failure of ``client`` at ``at`` in a transaction of its own, blocking
        the client when it reaches the limit.  Never raises: a database that cannot count
        must not turn a 401 into a 500 (the failure is logged)."""
        for attempt in range(_RECORD_ATTEMPTS):
            try:
                with engine.begin() as conn:
                    self._count(conn, client, at)
                return
            except (sa.exc.IntegrityError, sa.exc.OperationalError):
                # Two first failures of one client inserted at once, or a deadlock: again.
                if attempt + 1 == _RECORD_ATTEMPTS:
                    log.warning("could not count a failed authentication of %s", client,
                                exc_info=True)
            except sa.exc.SQLAlchemyError:
                log.warning("could not count a failed authentication of %s", client,
                            exc_info=True)
                return

    def _count(self, conn: sa.Connection, client: str, at: dt.datetime) -> None:
        table = AuthFailure.__table__
        row = conn.execute(
            sa.select(table.c.failures, table.c.window_started_at, table.c.blocked_until)
            .where(table.c.client == client)
            .with_for_update()
        ).one_or_none()
        if row is None:
            failures, started, blocked_until = 1, at, None
        elif at - row.window_started_at > self.window:
            failures, started, blocked_until = 1, at, row.blocked_until
        else:
            failures, started, blocked_until = row.failures + 1, row.window_started_at, \
                row.blocked_until
        if failures >= self.max_failures:
            # Blocked: the count starts again when the block ends.
            log.warning("blocking %s for %s after %d failed authentications", client,
                        self.block, failures)
            failures, started, blocked_until = 0, at, at + self.block
        values = {"failures": failures, "window_started_at": started,
                  "blocked_until": blocked_until}
        if row is None:
            conn.execute(sa.insert(table).values(client=client, **values))
        else:
            conn.execute(sa.update(table).where(table.c.client == client).values(**values))
