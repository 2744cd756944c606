"""Request ids, the access log and JSON log lines.

Every request gets an id: the client's ``X-Request-ID`` when it is a sane token (1 to 128
characters of ``A-Z a-z 0-9 - _ . : / + =``), else a new random one.  It is returned as
``X-Request-ID`` on every response the app makes, errors included, and every log record made
while the request runs carries it as ``record.request_id`` (``-`` outside requests), through a
log-record factory installed at start-up, so that any formatter can show it
(``%(request_id)s``).  Retries of a request (pyramid_retry) keep its id.

After each request the app writes one line to the ``modelreg.access`` logger (INFO): method,
path, status, duration, response bytes and principal.  The records carry these as attributes
(``method``, ``path``, ``status``, ``duration_ms``, ``bytes``, ``principal``), which
:class:`JSONFormatter` writes as fields.

Text formats show the id with ``%(request_id)s`` through :class:`TextFormatter` (``class =
modelreg.logs.TextFormatter`` in a ``[formatter_*]`` section).  JSON logs are a choice of the
ini file's logging sections::

    [formatters]
    keys = generic, json

    [formatter_json]
    class = modelreg.logs.JSONFormatter

    [handler_console]
    ...
    formatter = json
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.tweens import INGRESS
from pyramid_retry import is_error_retryable

access_log = logging.getLogger("modelreg.access")

HEADER = "X-Request-ID"
#: Where the id is kept in the WSGI environ (shared by every attempt of a retried request).
ENVIRON_KEY = "modelreg.request_id"
_SANE = re.compile(r"[A-Za-z0-9\-_.:/+=]{1,128}")

_current: ContextVar[str | None] = ContextVar("modelreg_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this thread, if any."""
    return _current.get()


def request_id_of(environ: dict[str, Any], header: str | None) -> str:
    """The request's id: the one already chosen, the client's if sane, or a new one."""
    chosen = environ.get(ENVIRON_KEY)
    if chosen is None:
        chosen = header if header is not None and _SANE.fullmatch(header) else (
            secrets.token_hex(16))
        environ[ENVIRON_KEY] = chosen
    return chosen


def install_record_factory() -> None:
    """Make every log record carry ``request_id`` (idempotent, keeps any other factory)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "modelreg_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _current.get() or "-"
        return record

    factory.modelreg_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class TextFormatter(logging.Formatter):
    """:class:`logging.Formatter` whose format may use ``%(request_id)s`` on any record, even
    one made before the app started (``-`` outside requests)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record through the format string."""
        if not hasattr(record, "request_id"):
            record.request_id = _current.get() or "-"
        return super().format(record)


#: Attributes every LogRecord has; anything else on a record is an ``extra`` field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "request_id"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``request_id``, any ``extra`` fields of the record, and ``exception`` with
    the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _current.get() or "-",
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _principal(request: Request) -> str | None:
    """The caller's name if the request identified one (never authenticates by itself)."""
    from .security.policy import get_policy

    try:
        return get_policy(request).known_identity_name(request)
    except KeyError:  # no security policy in this registry
        return None


def request_log_tween_factory(
    handler: Callable[[Request], Response], registry: Any
) -> Callable[[Request], Response]:
    """The outermost tween: sets the request id, echoes it, writes the access log line."""

    def tween(request: Request) -> Response:
        request_id = request_id_of(request.environ, request.headers.get(HEADER))
        token = _current.set(request_id)
        start = time.perf_counter()
        try:
            try:
                response = handler(request)
            except Exception as exc:
                if not is_error_retryable(request, exc):  # else the next attempt logs
                    _log_access(request, 500, None, start)
                raise
            response.headers[HEADER] = request_id
            _log_access(request, response.status_int, response.content_length, start)
            return response
        finally:
            _current.reset(token)

    return tween


def logged_path(environ: dict[str, Any]) -> str:
    """The request's path and query as the client sent them, percent-encoded, for logs.

    Built from the raw WSGI strings (bytes as latin-1), never decoded as UTF-8: a path that is
    not UTF-8 (``/%c0%af``, refused with 400) must still be logged, not crash the log line.
    """
    raw = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    path = quote(raw, safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _log_access(request: Request, status: int, size: int | None, start: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration_ms = round((time.perf_counter() - start) * 1000, 1)
    principal = _principal(request)
    path = logged_path(request.environ)
    access_log.info(
        "%s %s %s %.1fms %s bytes %s",
        request.method, path, status, duration_ms,
        "-" if size is None else size, principal or "-",
        extra={"method": request.method, "path": path, "status": status,
               "duration_ms": duration_ms, "bytes": size, "principal": principal},
    )


def includeme(config: Configurator) -> None:
    """Install the record factory and the request-id and access-log tween."""
    install_record_factory()
    config.add_tween("modelreg.logs.request_log_tween_factory", under=INGRESS)
