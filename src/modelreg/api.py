"""The public plugin API of modelreg.

Plugins import from this module (and, in their tests, :mod:`modelreg.testing`) only;
everything else in the ``modelreg`` package is internal and may change without notice.
Names listed in ``__all__`` follow semantic versioning: they are removed or changed
incompatibly only in a new major version, after a release in which they warn.
"""

from __future__ import annotations

import pluggy

from .auditing import audit_request, record_audit
from .errors import ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable
from .hookspecs import PROJECT_NAME
from .interfaces import MAX_PARTS, MIN_CHUNK_SIZE, IBlobStore, validate_sha256
from .openapi import BODY_ERRORS as JSON_BODY_ERRORS
from .openapi import Operation as ApiOperation
from .openapi import Param as ApiParam
from .openapi import add_api_view
from .openapi import read_json_object as read_json_body
from .storage.errors import (
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    StorageError,
    StorageFull,
    UploadNotFound,
)
from .types import BackendDescription, BlobInfo, Event, Finding, Problem

#: Marks a function as an implementation of a ``modelreg_*`` hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "JSON_BODY_ERRORS",
    "MAX_PARTS",
    "MIN_CHUNK_SIZE",
    "PROJECT_NAME",
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
    "IBlobStore",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "StorageError",
    "StorageFull",
    "Unprocessable",
    "UploadNotFound",
    "add_api_view",
    "audit_request",
    "hookimpl",
    "read_json_body",
    "record_audit",
    "validate_sha256",
]
