"""Value types handed between the core and plugins.  Re-exported by :mod:`modelreg.api`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """A rule that a model or version breaks, as reported by a validation hook.

    :ivar code: machine-readable code, e.g. ``missing_metadata``.
    :ivar message: one sentence a person can act on.
    :ivar field: the field concerned (``metadata.framework``, ``tags.team``), if any.
    """

    code: str
    message: str
    field: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON shape used in API responses and stored on rejected versions."""
        return {"code": self.code, "message": self.message, "field": self.field}


@dataclass(frozen=True)
class Finding:
    """What a scanner found in one file.

    :ivar code: machine-readable code, e.g. ``pickle_unsafe_import``.
    :ivar message: one sentence describing the finding.
    :ivar severity: ``info``, ``warning`` or ``error``; policy decides what rejects.
    :ivar path: the file's path in the version.
    :ivar details: structured details (offset, import name, ...).
    """

    code: str
    message: str
    severity: str = "error"
    path: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """Something that happened to the registry, delivered after commit.

    :ivar id: stable unique id (a UUID string): the same on every redelivery.
    :ivar type: e.g. ``model.created``, ``version.finalized``, ``alias.moved``.
    :ivar model: the name of the model concerned, if any.
    :ivar payload: the event's data, JSON-serialisable.
    :ivar created_at: when the change was made (UTC).
    """

    id: str
    type: str
    model: str | None
    payload: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class BackendDescription:
    """A storage backend offered by a plugin through ``modelreg_storage_backends``.

    :ivar name: the value of ``modelreg.storage`` that selects it.
    :ivar factory: called with the settings, returns an object providing the blob-store
        interface.
    :ivar description: one line shown by ``modelreg plugins``.
    """

    name: str
    factory: Callable[[dict[str, Any]], Any]
    description: str = ""


@dataclass(frozen=True)
class BlobInfo:
    """A blob in the blob store: its content address and its length.

    :ivar sha256: the lowercase hex sha256 of the content (64 characters).
    :ivar size: the content's length in bytes.
    """

    sha256: str
    size: int


@dataclass(frozen=True)
class WebPage:
    """A page a plugin adds to the web UI (see the ``modelreg_web_pages`` hook).

    :ivar name: a stable id, e.g. ``webhooks``; the UI links it as ``/ui/<name>`` unless
        ``route_name`` is given.
    :ivar title: the link's text.
    :ivar route_name: the plugin's own route serving the page, if the plugin serves it.
    :ivar permission: the permission (``read``, ``write``, ``admin``) the caller needs on
        the registry to see the link; ``None`` for everyone.
    :ivar order: where the link sorts among the others (smaller first).
    """

    name: str
    title: str
    route_name: str | None = None
    permission: str | None = None
    order: int = 100


@dataclass(frozen=True)
class WebSection:
    """A section a plugin adds to a page of the web UI (``modelreg_web_sections``).

    :ivar title: the section's heading.
    :ivar html: its body, HTML the plugin escaped (the UI inserts it as is).
    :ivar order: where it sorts among the page's sections (smaller first).
    """

    title: str
    html: str
    order: int = 100


@dataclass(frozen=True)
class TokenCredentials:
    """An API token a ``modelreg_authenticate`` implementation found somewhere else than
    the ``Authorization`` header (a web UI's server-side session, say).

    Returned instead of a principal's name, it makes the caller that token's identity
    exactly as a bearer token would: the token's scopes cap the principal's grants, and a
    revoked or expired token is refused with 401.

    :ivar token: the whole token, ``mr_<id>_<secret>``.
    """

    token: str

    def __repr__(self) -> str:
        return "TokenCredentials(<hidden>)"
