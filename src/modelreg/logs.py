"""Request ids, the access log and JSON log lines.

Every request gets an id: the client's ``X-Request-ID`` when it is a sane token (1 to 128
characters of ``A-Z a-z 0-9 - _ . : / + =``), else a new random one.  It is returned as
``X-Request-ID`` on every response the app makes, errors included, and every log record made
while the request runs carries it as ``record.request_id`` (``-`` outside requests), through a
log-record factory installed at start-up, so that any formatter can show it
(``%(request_id)s``).  Retries of a request (pyramid_retry) keep its id.

After each request the app writes one line to the ``modelreg.access`` logger (INFO): method,
path, status, duration, response bytes and principal.  The path is written as sent
(percent-encoded), even when it is not UTF-8.  A file download is logged once its body is
sent, with the status the client got: ``500`` when the blob failed (or shrank) mid-stream,
``499`` when the client went away before the end (:class:`LoggedBody`).  The records carry
these as attributes (``method``, ``path``, ``status``, ``duration_ms``, ``bytes``,
``principal``), which :class:`JSONFormatter` writes as fields.

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

from . import keys

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


#: Where :func:`log_when_sent` leaves the body whose close writes the access-log line.
BODY_KEY = "modelreg.access.body"
#: The status logged for a body the client stopped reading before its end (nginx's code for
#: "client closed request"): the client went away, the server did not fail.
CLIENT_CLOSED = 499


class BodyEndedEarly(OSError):
    """A response body's stream ended before the length its response announced: the blob
    shrank (was truncated) while it was being sent."""


class LoggedBody:
    """A response body's stream whose access-log line is written when it is closed.

    The status sent at the start of a streamed response (``200``, ``206``) is not what the
    client got when the stream then fails: the line says ``500`` when a read raised or the
    stream ended before ``length`` bytes (which raises :class:`BodyEndedEarly`, so that the
    server closes the connection rather than wait for bytes that never come), ``499`` when
    the server stopped sending before the end without an error (the client went away), else
    the response's status; ``bytes`` is how far the stream was read.

    Made by :func:`log_when_sent`; the WSGI server closes it after sending, in whatever
    thread, and the line carries the request's id all the same.
    """

    def __init__(self, stream: Any, length: int) -> None:
        self._stream = stream
        try:
            self._start = int(stream.tell())
        except (AttributeError, OSError, ValueError):
            self._start = 0
        self._position = self._furthest = self._start
        self._end = self._start + length
        self._failed = False
        self._closed = False
        self._line: Callable[[int, int], None] | None = None
        self._status = 0
        self.response: Response | None = None

    def read(self, size: int | None = -1) -> bytes:
        """Read as the wrapped stream does; raise :class:`BodyEndedEarly` at an early end."""
        try:
            data = self._stream.read(size)
        except BaseException:
            self._failed = True
            raise
        self._advance(len(data))
        if not data and size != 0 and self._position < self._end:
            self._failed = True
            raise BodyEndedEarly(f"the stream ended {self._end - self._position} bytes early")
        return data

    def _advance(self, n: int) -> None:
        self._position += n
        self._furthest = max(self._furthest, self._position)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek the wrapped stream."""
        self._position = int(self._stream.seek(offset, whence))
        return self._position

    def tell(self) -> int:
        """The wrapped stream's position."""
        return self._position

    def arm(self, status: int, line: Callable[[int, int], None]) -> None:
        """Write the line with ``line(status, bytes)`` once closed (see the class)."""
        self._status, self._line = status, line

    def close(self) -> None:
        """Close the wrapped stream; write the access-log line (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
        finally:
            if self._line is not None:
                status = (500 if self._failed else
                          CLIENT_CLOSED if self._furthest < self._end else self._status)
                self._line(status, self._furthest - self._start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def log_when_sent(request: Request, response: Response, stream: Any, length: int) -> Any:
    """``stream`` (``length`` bytes, the body of ``response``) as a :class:`LoggedBody`: the
    access-log line of the request is written when the server has sent it and closes it,
    with the status the client got, rather than when the view returns."""
    body = LoggedBody(stream, length)
    body.response = response
    request.environ[BODY_KEY] = body
    return body


def _principal(request: Request) -> str | None:
    """The caller's name if the request identified one (never authenticates by itself)."""
    policy = request.registry.get(keys.SECURITY_POLICY)
    if policy is None:  # no security policy in this registry
        return None
    return policy.known_identity_name(request)


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
            body = request.environ.pop(BODY_KEY, None)
            if body is not None and body.response is response:
                # A streamed body: the line is written once it is sent (see LoggedBody).
                principal = _principal(request)
                body.arm(response.status_int, lambda status, size: _log_access(
                    request, status, size, start, principal=principal, request_id=request_id))
            else:
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


_UNKNOWN: Any = object()


def _log_access(request: Request, status: int, size: int | None, start: float, *,
                principal: str | None = _UNKNOWN, request_id: str | None = None) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration_ms = round((time.perf_counter() - start) * 1000, 1)
    if principal is _UNKNOWN:
        principal = _principal(request)
    path = logged_path(request.environ)
    # A body closed in the server's own thread: the line still carries the request's id.
    token = _current.set(request_id) if request_id is not None else None
    try:
        method = request.method
        # The record is made here and handed to the logger's handlers as
        # ``access_log.info`` would, without its search of the stack for the caller
        # (``Logger.findCaller``, about a sixth of the line's instructions;
        # docs/performance.md, "Read path"): the caller is always this function.
        # Levels, filters, handlers and formatters of the ini's logging sections apply
        # as to any record.
        record = access_log.makeRecord(
            access_log.name, logging.INFO, _SOURCE_FILE, _SOURCE_LINE, _ACCESS_FORMAT,
            (method, path, status, duration_ms, "-" if size is None else size,
             principal or "-"),
            None, _SOURCE_FUNCTION,
            {"method": method, "path": path, "status": status, "duration_ms": duration_ms,
             "bytes": size, "principal": principal},
        )
        access_log.handle(record)
    finally:
        if token is not None:
            _current.reset(token)


#: The access-log line's message (its fields are also the record's attributes).
_ACCESS_FORMAT = "%s %s %s %.1fms %s bytes %s"
#: Where access-log records say they were made (``%(pathname)s``, ``%(lineno)d``,
#: ``%(funcName)s``).
_SOURCE_FILE = _log_access.__code__.co_filename
_SOURCE_LINE = _log_access.__code__.co_firstlineno
_SOURCE_FUNCTION = _log_access.__name__


def includeme(config: Configurator) -> None:
    """Install the record factory and the request-id and access-log tween."""
    install_record_factory()
    config.add_tween("modelreg.logs.request_log_tween_factory", under=INGRESS)
