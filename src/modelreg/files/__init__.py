"""Model files: the file API, upload sessions and garbage collection of blobs
(docs/architecture.md, "Files and blobs").

Settings:

``modelreg.upload.max_put_size`` (default 256 MiB)
    the largest body of a single ``PUT`` of a file, and of one chunk or part of an upload
    session; Waitress's ``max_request_body_size`` is one more than the largest body
    (:mod:`modelreg.limits`).
``modelreg.upload.min_chunk_size`` (default 8 MiB)
    the smallest chunk or part of an upload session other than the last (S3 needs 5 MiB).
``modelreg.upload.session_ttl`` (seconds, default a day)
    how long an upload session stays open after its last chunk; ``modelreg gc`` aborts
    expired ones.
``modelreg.upload.max_open_sessions`` (default 32)
    the most upload sessions one principal holds open at once (:mod:`.uploads`).
``modelreg.upload.claim_timeout`` (seconds, default 900)
    how long a part stays claimed by a sender that may have died.
"""

from __future__ import annotations

import logging

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from ..errors import ApiError, BadRequest, PayloadTooLarge, error_response
from ..storage.errors import (
    BlobTooLarge,
    DigestMismatch,
    StorageError,
    StorageFull,
    UploadNotFound,
)
from .services import insufficient_storage, upload_not_found

log = logging.getLogger(__name__)


def storage_error(exc: StorageError) -> ApiError:
    """The API error that answers a blob-store failure (one mapping for every view)."""
    if isinstance(exc, DigestMismatch):
        return BadRequest(
            "the content does not match the digest sent with it; nothing was stored",
            code="digest_mismatch",
            details={"expected": f"sha256:{exc.expected}", "actual": f"sha256:{exc.actual}"},
        )
    if isinstance(exc, BlobTooLarge):
        return PayloadTooLarge(f"request body too large: at most {exc.max_size} bytes",
                               details={"max_bytes": exc.max_size})
    if isinstance(exc, StorageFull):
        return insufficient_storage("the blob store is full; nothing was stored")
    if isinstance(exc, UploadNotFound):
        return upload_not_found()
    return ApiError("the blob store is unavailable; retry later", code="storage_unavailable",
                    status=503, headers={"Retry-After": "5"})


def _storage_error_view(exc: StorageError, request: Request) -> Response:
    error = storage_error(exc)
    if error.status >= 500:
        log.error("blob store failure on %s %s: %s", request.method,
                                          request.path, exc, exc_info=exc)
    return error_response(request, error)


def includeme(config: Configurator) -> None:
    """The file API's routes and views, and the rendering of blob-store errors."""
    config.add_exception_view(_storage_error_view, context=StorageError)
    config.include(".views")
    config.include(".verify")  # the job that verifies direct uploads

