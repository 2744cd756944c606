"""Prometheus metrics at ``/metrics``: off unless ``modelreg.metrics.enabled = true``.

Metrics:

``modelreg_http_requests_total{route, method, status}``
    requests answered, by route name (``unmatched`` when no route matched).
``modelreg_http_request_duration_seconds{route, method}``
    a histogram of the time from the request's arrival in the app to its response.
``modelreg_transfer_bytes_total{direction, backend}``
    file bytes received (``upload``: bodies of file uploads and of upload chunks) and sent
    (``download``: file bodies, not redirects to the store), by storage backend (the
    ``modelreg.storage`` setting).  The file API counts them as the bytes stream through
    :func:`metered`; other code can add some with :func:`count_bytes`.
``modelreg_blob_store_errors_total{error}``
    failures of the blob store itself (unreachable, unwritable, full), by exception class:
    counted when such an error ends a request, or through :func:`count_storage_error`.
``modelreg_outbox_pending``
    events in the outbox not yet delivered (webhook queue depth), read from the database
    at each scrape.

Settings:

``modelreg.metrics.enabled`` (default ``false``)
    serve ``/metrics``; when off, the route does not exist (404) and nothing is measured.
``modelreg.metrics.token``
    a secret (at least 16 characters, best ``env:MODELREG_METRICS_TOKEN``) that scrapers
    send as ``Authorization: Bearer <token>``.  Without it, or besides it, the API token of a
    global admin is accepted; anyone else gets 401 or 403.
``modelreg.metrics.public`` (default ``false``)
    anyone who can reach the server may scrape, without credentials: for development.ini,
    which listens on localhost only.

Several processes: under gunicorn (or uvicorn with ``--workers``) each worker has its own
counters.  Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory writable by every worker
before they start, and every process writes its values there and ``/metrics`` reports their
sum (prometheus_client's multiprocess mode); gunicorn must tell it when a worker dies
(``docs/gunicorn.conf.py`` does both).  The outbox gauge is read from the database, which
every process shares.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.settings import asbool
from pyramid.threadlocal import get_current_registry

from . import keys
from .errors import ApiError
from .models import OutboxEvent
from .settings import METRICS_ENABLED, METRICS_PUBLIC, METRICS_TOKEN
from .storage import DEFAULT_BACKEND, STORAGE_SETTING
from .storage.errors import (
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    StorageError,
    UploadNotFound,
)

log = logging.getLogger(__name__)

ENABLED_SETTING = METRICS_ENABLED
TOKEN_SETTING = METRICS_TOKEN
PUBLIC_SETTING = METRICS_PUBLIC
MIN_TOKEN_LENGTH = 16
#: Where the app's :class:`Metrics` live in the Pyramid registry.
REGISTRY_KEY = keys.METRICS
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
DIRECTIONS = ("upload", "download")
#: Errors of the client's making (a wrong digest, a missing blob): not the store failing.
_NOT_STORE_FAILURES = (BlobNotFound, UploadNotFound, DigestMismatch, BlobTooLarge)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """The metrics of one app.

    :param engine: the database, for the outbox gauge.
    :param multiprocess_dir: prometheus_client's multiprocess directory, or ``None``.
    :param backend: the name of the storage backend, for the transfer counter's label.
    """

    def __init__(self, engine: sa.Engine, multiprocess_dir: str | None = None,
                 backend: str = DEFAULT_BACKEND) -> None:
        self.engine = engine
        self.multiprocess_dir = multiprocess_dir
        self.backend = backend
        # In multiprocess mode the values live in files and are collected from there at each
        # scrape; otherwise in this app's own registry (never the global one, so that
        # several apps in one process do not clash).
        self.registry = CollectorRegistry()
        own = None if multiprocess_dir else self.registry
        self.requests = Counter(
            "modelreg_http_requests", "Requests answered, by route, method and status.",
            ["route", "method", "status"], registry=own)
        self.duration = Histogram(
            "modelreg_http_request_duration_seconds", "Time to answer a request, by route.",
            ["route", "method"], buckets=_BUCKETS, registry=own)
        self.transfer = Counter(
            "modelreg_transfer_bytes",
            "File bytes received (upload) and sent (download), by storage backend.",
            ["direction", "backend"], registry=own)
        self.storage_errors = Counter(
            "modelreg_blob_store_errors", "Failures of the blob store, by exception class.",
            ["error"], registry=own)
        for direction in DIRECTIONS:
            self.transfer.labels(direction, backend)
        self.registry.register(_OutboxCollector(engine))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = method if method in _METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            registry.register(_OutboxCollector(self.engine))
            return generate_latest(registry)
        return generate_latest(self.registry)


class _OutboxCollector:
    """``modelreg_outbox_pending``, counted in the database at each scrape."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Any]:
        return []  # nothing is collected at registration (no query then)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.engine.connect() as conn:
                pending = conn.scalar(
                    sa.select(sa.func.count()).select_from(OutboxEvent)
                    .where(OutboxEvent.delivered_at.is_(None)))
        except sa.exc.SQLAlchemyError:
            log.warning("could not count the outbox for /metrics", exc_info=True)
            return
        yield GaugeMetricFamily("modelreg_outbox_pending",
                                "Outbox events not yet delivered.", value=pending or 0)


def _metrics_of(registry: Any | None) -> Metrics | None:
    registry = registry if registry is not None else get_current_registry()
    getter = getattr(registry, "get", None)
    return getter(REGISTRY_KEY) if getter is not None else None


def count_bytes(direction: str, n: int, registry: Any | None = None) -> None:
    """Count ``n`` file bytes received (``"upload"``) or sent (``"download"``).

    For the file API; a no-op when metrics are off.  ``registry`` is the Pyramid registry
    (``request.registry``); by default the current request's.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    metrics = _metrics_of(registry)
    if metrics is not None and n > 0:
        metrics.transfer.labels(direction, metrics.backend).inc(n)


class MeteredStream:
    """A readable stream that counts the bytes read from it into a transfer counter.

    A byte is counted once, however often it is read: Waitress's ``wsgi.file_wrapper`` reads
    a block, seeks back, and seeks forward past what the socket took, so the part of a block
    that was not sent is read again; only reads past the furthest position reached so far
    count.  Everything but ``read``,
    ``readinto``, ``mapped`` and ``seek`` goes to the wrapped stream unchanged.
    """

    def __init__(self, stream: Any, counter: Any) -> None:
        self._stream = stream
        self._counter = counter
        try:
            self._position = int(stream.tell())
        except (AttributeError, OSError, ValueError):
            self._position = 0
        self._counted = self._position

    def _advance(self, n: int) -> None:
        self._position += n
        if self._position > self._counted:
            self._counter.inc(self._position - self._counted)
            self._counted = self._position

    def read(self, size: int | None = -1) -> bytes:
        """Read as the wrapped stream does; count what was new."""
        data = self._stream.read(size)
        self._advance(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer`` as the wrapped stream does; count what was new."""
        n = self._stream.readinto(buffer) or 0
        self._advance(n)
        return n

    def mapped(self, length: int) -> Any:
        """The wrapped stream's ``mapped(length)`` (see
        :meth:`modelreg.files.body.BodyReader.mapped`), counted as read; ``None`` if it has
        none."""
        mapped = getattr(self._stream, "mapped", None)
        view = mapped(length) if callable(mapped) else None
        if view is not None:
            self._advance(len(view))
        return view

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek the wrapped stream (nothing is counted)."""
        self._position = int(self._stream.seek(offset, whence))
        return self._position

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def metered(stream: Any, direction: str, registry: Any | None = None) -> Any:
    """``stream`` counting the bytes read from it as ``direction`` (``"upload"`` or
    ``"download"``) transfer bytes: a :class:`MeteredStream`, or ``stream`` itself when
    metrics are off.  ``registry`` as for :func:`count_bytes`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    metrics = _metrics_of(registry)
    if metrics is None:
        return stream
    return MeteredStream(stream, metrics.transfer.labels(direction, metrics.backend))


def count_storage_error(error: BaseException, registry: Any | None = None) -> None:
    """Count a failure of the blob store (for code that handles one without failing the
    request; errors that end a request are counted already).  A no-op when metrics are off."""
    metrics = _metrics_of(registry)
    if metrics is not None:
        metrics.storage_errors.labels(type(error).__name__).inc()


def _store_failure(exc: BaseException | None) -> BaseException | None:
    """The blob-store failure behind ``exc`` (itself or a cause), if there is one."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, StorageError):
            return None if isinstance(exc, _NOT_STORE_FAILURES) else exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def metrics_tween_factory(
    handler: Callable[[Request], Response], registry: Any
) -> Callable[[Request], Response]:
    """Times and counts each request by route and status."""
    metrics: Metrics = registry[REGISTRY_KEY]

    def tween(request: Request) -> Response:
        start = time.perf_counter()
        response = handler(request)
        route = request.matched_route.name if request.matched_route is not None else (
            "unmatched")
        metrics.observe(route, request.method, response.status_int,
                        time.perf_counter() - start)
        failure = _store_failure(getattr(request, "exception", None))
        if failure is not None:
            metrics.storage_errors.labels(type(failure).__name__).inc()
        return response

    return tween


def metrics_view(request: Request) -> Response:
    """The metrics in Prometheus's text format."""
    response = Response(body=request.registry[REGISTRY_KEY].exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response


def _not_allowed(request: Request) -> Response:
    raise ApiError(f"method {request.method} is not allowed here; allowed: GET, HEAD",
                   code="method_not_allowed", status=405, headers={"Allow": "GET, HEAD"})


class MetricsTokenPredicate:
    """View predicate: the request carries ``Authorization: Bearer <modelreg.metrics.token>``.

    Compared in constant time.  A request without it falls through to the view that needs
    a global admin's API token.
    """

    def __init__(self, token: str, config: Configurator) -> None:
        self.token = token.encode()

    def text(self) -> str:
        return "metrics_token = <secret>"

    phash = text

    def __call__(self, context: Any, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.token)


def includeme(config: Configurator) -> None:
    """Add ``/metrics`` and the measuring tween when ``modelreg.metrics.enabled`` is true.

    :raises RuntimeError: if ``modelreg.metrics.token`` is shorter than 16 characters.
    """
    settings = config.get_settings()
    if not asbool(settings.get(ENABLED_SETTING, False)):
        return
    token = (settings.get(TOKEN_SETTING) or "").strip()
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise RuntimeError(f"{TOKEN_SETTING} is too short: use at least "
                           f"{MIN_TOKEN_LENGTH} random characters")
    multiprocess_dir = os.environ.get(MULTIPROCESS_VARIABLE) or None
    backend = (settings.get(STORAGE_SETTING) or DEFAULT_BACKEND).strip()
    config.registry[REGISTRY_KEY] = Metrics(config.registry[keys.DB_ENGINE], multiprocess_dir,
                                            backend)
    config.add_tween("modelreg.metrics.metrics_tween_factory",
                     under="modelreg.logs.request_log_tween_factory")
    config.add_route("metrics", "/metrics")
    config.add_view(_not_allowed, route_name="metrics", permission=NO_PERMISSION_REQUIRED,
                    request_method=("POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
    if asbool(settings.get(PUBLIC_SETTING, False)):
        config.add_view(metrics_view, route_name="metrics", request_method="GET",
                        permission=NO_PERMISSION_REQUIRED)
        return
    # Global admins (through the security policy), and the scrape token if there is one.
    config.add_view(metrics_view, route_name="metrics", request_method="GET",
                    permission="admin")
    if token:
        config.add_view_predicate("metrics_token", MetricsTokenPredicate)
        config.add_view(metrics_view, route_name="metrics", request_method="GET",
                        permission=NO_PERMISSION_REQUIRED, metrics_token=token)
