"""Exceptions of the client: every failure is a :class:`ModelregError`.

Errors the server answers carry its stable ``code``, its ``message``, its ``details`` and the
HTTP ``status``; :func:`error_for_status` picks the class from the status, so callers catch
what they can act on::

    try:
        client.get_model("fraud-detector")
    except NotFound:
        ...

Each class also names the exit status of the ``modelreg`` command (``exit_code``), so the
command line and the library agree on what a failure means.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "IntegrityError",
    "InvalidRequest",
    "ModelregError",
    "NetworkError",
    "NotCached",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Unauthorized",
    "UnwritablePath",
    "VersionRejected",
    "error_for_status",
]


class ModelregError(Exception):
    """Base of every client error.

    :param message: one human-readable sentence (the server's, when it answered).
    :param code: the server's machine-readable code (``model_not_found``), or the client's
        own for failures that never reached the server (``network_error``).
    :param status: the HTTP status, or ``None`` when there was no response.
    :param details: the server's structured details (the rule broken, the problems found).
    """

    #: Exit status of the ``modelreg`` command for this kind of failure.
    exit_code = 1
    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class NotFound(ModelregError):
    """404: no such model, version, alias, tag, file or upload session."""

    exit_code = 3
    default_code = "not_found"


class PermissionDenied(ModelregError):
    """403: the caller is known but may not do this."""

    exit_code = 4
    default_code = "forbidden"


class Unauthorized(PermissionDenied):
    """401: no credentials, or credentials the server refuses (a bad or expired token)."""

    default_code = "unauthorized"


class Conflict(ModelregError):
    """409: the request clashes with the current state (duplicates, immutable versions)."""

    exit_code = 5
    default_code = "conflict"


class InvalidRequest(ModelregError):
    """400, 413, 416, 422 and other 4xx: the request breaks a rule; sending it again fails
    again."""

    exit_code = 5
    default_code = "invalid"


class VersionRejected(InvalidRequest):
    """Finalizing a version rejected it: ``version`` holds it, with its ``problems``;
    ``findings`` are the scanners' findings."""

    default_code = "version_rejected"

    def __init__(self, message: str, *, version: Any, findings: list[Any] = ()) -> None:
        super().__init__(message, details={
            "problems": [p.as_dict() for p in version.problems],
            "findings": [f.as_dict() for f in findings]})
        self.version = version
        self.findings = list(findings)


class ServerError(ModelregError):
    """5xx (and 429 once retries are spent): the server failed or is busy; retry later."""

    exit_code = 6
    default_code = "server_error"


class NetworkError(ModelregError):
    """The server could not be reached, or the connection broke before it answered."""

    exit_code = 6
    default_code = "network_error"


class IntegrityError(ModelregError):
    """Bytes or digests differ from what they must be: a corrupted download, or a version
    whose digest is not the one computed locally.  Nothing was written under a final name."""

    exit_code = 6
    default_code = "integrity_error"


class UnwritablePath(ModelregError):
    """A file of a version cannot be written under the destination of a pull: its path is
    not a valid name on this system, or names the same file or folder as another path there
    (``x`` and ``x/y``; ``A`` and ``a`` on a case-insensitive filesystem).  Checked for every
    file before anything is written; ``details`` has ``path`` and ``reason``."""

    exit_code = 7
    default_code = "unwritable_path"


class NotCached(NotFound):
    """Offline (``--offline``, ``MODELREG_OFFLINE=1``, or the server unreachable), and the
    cache lacks what was asked: a ref it never resolved, or files it never downloaded."""

    default_code = "not_cached"


def error_for_status(
    status: int, code: str | None, message: str, details: dict[str, Any] | None = None
) -> ModelregError:
    """The exception for an error response of status ``status``."""
    cls: type[ModelregError]
    if status == 401:
        cls = Unauthorized
    elif status == 403:
        cls = PermissionDenied
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status == 429 or status >= 500:
        cls = ServerError
    elif 400 <= status < 500:
        cls = InvalidRequest
    else:
        cls = ModelregError
    return cls(message, code=code, status=status, details=details)
