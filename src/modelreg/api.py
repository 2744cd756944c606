"""The public plugin API of modelreg.

Plugins import from this module (and, in their tests, :mod:`modelreg.testing`) only;
everything else in the ``modelreg`` package is internal and may change without notice.
Names listed in ``__all__`` follow semantic versioning: they are removed or changed
incompatibly only in a new major version, after a release in which they warn.
"""

from __future__ import annotations

import pluggy

from .auditing import audit_request, record_audit
from .db import add_read_only_view, add_streaming_view, mark_changed, transaction
from .db import get_engine as database_engine
from .db import writer_engine as database_writer
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
    add_error_shape,
    add_route_error_shape,
)
from .files.download import send_blob
from .hookspecs import PROJECT_NAME
from .interfaces import MAX_PARTS, MIN_CHUNK_SIZE, IBlobStore, IDirectUploads, validate_sha256
from .openapi import BODY_ERRORS as JSON_BODY_ERRORS
from .openapi import Operation as ApiOperation
from .openapi import Param as ApiParam
from .openapi import add_api_view, api_view, parse_body
from .openapi import read_json_object as read_json_body
from .permissions import ADMIN, PERMISSIONS, READ, WRITE
from .plugin_api import Registry, plugin_hooks, registry_of, token_of
from .storage.errors import (
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    StorageError,
    StorageFull,
    UploadNotFound,
)
from .types import (
    BackendDescription,
    BlobInfo,
    Event,
    Finding,
    Problem,
    TokenCredentials,
    WebPage,
    WebSection,
)

#: Marks a function as an implementation of a ``modelreg_*`` hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "ADMIN",
    "JSON_BODY_ERRORS",
    "MAX_PARTS",
    "MIN_CHUNK_SIZE",
    "PERMISSIONS",
    "PROJECT_NAME",
    "READ",
    "WRITE",
    "ApiError",
    "ApiOperation",
    "ApiParam",
    "BackendDescription",
    "BadRequest",
    "BlobInfo",
    "BlobNotFound",
    "BlobTooLarge",
    "Conflict",
    "DigestMismatch",
    "Event",
    "Finding",
    "Forbidden",
    "IBlobStore",
    "IDirectUploads",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "Registry",
    "StorageError",
    "StorageFull",
    "TokenCredentials",
    "Unauthorized",
    "Unprocessable",
    "UploadNotFound",
    "WebPage",
    "WebSection",
    "add_api_view",
    "add_error_shape",
    "add_read_only_view",
    "add_route_error_shape",
    "add_streaming_view",
    "api_view",
    "audit_request",
    "database_engine",
    "database_writer",
    "hookimpl",
    "mark_changed",
    "parse_body",
    "plugin_hooks",
    "read_json_body",
    "record_audit",
    "registry_of",
    "send_blob",
    "token_of",
    "transaction",
    "validate_sha256",
]
