"""Errors that become JSON responses: ``{"error": {"code", "message", "details"}}``.

Raise :class:`ApiError` (or one of its subclasses) anywhere below a view; the exception views
in :func:`includeme` turn it, and Pyramid's own HTTP exceptions, into that shape with the
matching status.  Tracebacks and internal paths never reach the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPException
from pyramid.request import Request
from pyramid.response import Response
from pyramid_retry import is_error_retryable, mark_error_retryable

from .db import is_lost_connection, is_transient, is_unavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client can act on: an HTTP status, a stable code, a message and details.

    :param code: machine-readable code, e.g. ``model_not_found``.
    :param message: one human-readable sentence.
    :param details: anything structured that helps (the rule that failed, the problems found).
    """

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or {}
        self.headers = headers or {}

    def as_json(self) -> dict[str, Any]:
        """The response body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    """400: the request cannot be parsed (bad JSON, bad headers, filter syntax)."""

    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    """401: no valid credentials; the ``WWW-Authenticate`` header names the Bearer scheme.

    :param error: the RFC 6750 error code for the challenge (``invalid_token`` when a token
        was sent but refused), or ``None`` when no credentials were sent.
    """

    status = 401
    code = "unauthorized"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        challenge = 'Bearer realm="modelreg"' + (f', error="{error}"' if error else "")
        super().__init__(
            message, code=code, details=details, headers={"WWW-Authenticate": challenge}
        )


class Forbidden(ApiError):
    """403: the caller is known but may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """404: the resource does not exist (or the caller may not know that it does)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """409: the request clashes with the current state (duplicates, immutable versions)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server accepts."""

    status = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    """422: well-formed, but a value breaks a rule (names, paths, sizes, validation)."""

    status = 422
    code = "invalid"


class TooManyRequests(ApiError):
    """429: the client must wait (say how long in a ``Retry-After`` header)."""

    status = 429
    code = "too_many_requests"


#: Where the error shapes of :func:`add_error_shape` are kept in the registry.
ERROR_SHAPES_KEY = "modelreg.error_shapes"


def add_error_shape(config: Configurator, path_prefix: str,
                    render: Callable[[Request, ApiError], Response]) -> None:
    """Answer errors of requests under ``path_prefix`` with ``render(request, error)``.

    For plugins that speak another protocol (MLflow's ``{"error_code", "message"}``, the
    Hugging Face Hub's ``{"error"}`` with ``X-Error-Code``): every refusal under the prefix
    (a view's :class:`ApiError`, the security policy's 401/403/404, an unknown route's 404,
    an internal error's 500) goes through ``render``.  The longest matching prefix wins.
    """
    if not path_prefix.startswith("/"):
        raise ValueError(f"an error shape's path prefix starts with '/': {path_prefix!r}")
    shapes = config.registry.setdefault(ERROR_SHAPES_KEY, [])
    shapes.append((path_prefix.rstrip("/"), render))
    shapes.sort(key=lambda shape: len(shape[0]), reverse=True)


#: Where the error shapes of :func:`add_route_error_shape` are kept in the registry.
ROUTE_ERROR_SHAPES_KEY = "modelreg.route_error_shapes"


def add_route_error_shape(config: Configurator, route_name: str,
                          render: Callable[[Request, ApiError], Response]) -> None:
    """Answer errors of requests that matched the route ``route_name`` with
    ``render(request, error)``, as :func:`add_error_shape` does for a path prefix.

    For protocols whose paths have no prefix of their own (the Hugging Face Hub's
    ``/{repo}/resolve/{revision}/{path}``).  A route's shape wins over a prefix's.
    """
    config.registry.setdefault(ROUTE_ERROR_SHAPES_KEY, {})[route_name] = render


def _error_shape(request: Request) -> Callable[[Request, ApiError], Response] | None:
    routes = request.registry.get(ROUTE_ERROR_SHAPES_KEY) if request.registry else None
    route = getattr(request, "matched_route", None)
    if routes and route is not None and route.name in routes:
        return routes[route.name]
    shapes = request.registry.get(ERROR_SHAPES_KEY) if request.registry else None
    if not shapes:
        return None
    path = shown_path(request)
    for prefix, render in shapes:
        if path == prefix or path.startswith(prefix + "/"):
            return render
    return None


def error_response(request: Request, error: ApiError) -> Response:
    """Render ``error`` as the JSON error response (or in the shape a plugin declared for
    the request's path: :func:`add_error_shape`)."""
    render = _error_shape(request)
    if render is not None:
        response = render(request, error)
        response.headers.update(error.headers)
        return response
    response = Response(json_body=error.as_json(), status=error.status, charset="utf-8")
    response.content_type = "application/json"
    response.headers.update(error.headers)
    return response


def _api_error_view(exc: ApiError, request: Request) -> Response:
    return error_response(request, exc)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def shown_path(request: Request) -> str:
    """The request's path for messages and logs, even when it is not valid UTF-8."""
    try:
        return request.path
    except UnicodeDecodeError:
        raw = request.environ.get("PATH_INFO", "")
        return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _http_exception_view(exc: HTTPException, request: Request) -> Response:
    if exc.code < 400:  # redirects and 304s pass through untouched
        return exc
    code = _HTTP_CODES.get(exc.code, "error")
    if exc.code == 404:
        message = f"no such resource: {shown_path(request)}"
    elif exc.code == 405:
        message = f"method {request.method} is not allowed on {shown_path(request)}"
    else:
        message = exc.explanation or exc.title
    error = ApiError(message, code=code, status=exc.code)
    response = error_response(request, error)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _internal_error_view(exc: Exception, request: Request) -> Response:
    if is_transient(exc):
        # A lost race with another transaction (deadlock, serialization failure, a locked
        # SQLite database): let pyramid_retry run the request again, unless this was the last
        # attempt, in which case the client gets a 503 it may retry itself.
        mark_error_retryable(exc)
        if is_error_retryable(request, exc):
            raise exc
        return error_response(
            request,
            ApiError(
                "the database is busy; retry the request",
                code="unavailable",
                status=503,
                headers={"Retry-After": "1"},
            ),
        )
    if is_lost_connection(exc):
        # The database restarted under a pooled connection: the pool was invalidated, and
        # another attempt gets a new connection (no pre-ping of recently used connections,
        # modelreg.db._ping_idle_connections).
        mark_error_retryable(exc)
        if is_error_retryable(request, exc):
            raise exc
    if is_unavailable(exc):
        log.warning("database unavailable on %s %s: %s", request.method, shown_path(request), exc)
        return error_response(
            request,
            ApiError(
                "the database is unavailable; retry the request",
                code="database_unavailable",
                status=503,
                headers={"Retry-After": "1"},
            ),
        )
    log.exception("unhandled error on %s %s", request.method, shown_path(request), exc_info=exc)
    return error_response(
        request, ApiError("internal server error", code="internal_error", status=500)
    )


def includeme(config: Configurator) -> None:
    """Register the exception views that render every error as JSON."""
    config.add_exception_view(_api_error_view, context=ApiError)
    config.add_exception_view(_http_exception_view, context=HTTPException)
    config.add_exception_view(_internal_error_view, context=Exception)
