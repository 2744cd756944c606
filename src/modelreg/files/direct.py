"""Direct uploads: the parts of an upload session go straight to the blob store.

A blob store that provides :class:`~modelreg.interfaces.IDirectUploads` (the S3 backend with
``modelreg.storage.s3.presigned_uploads = true``) lets a session in numbered parts bypass
the application, which then only signs, checks and records:

1. **Opening** (:meth:`.uploads.UploadService.open`) with ``"direct": true`` (the client
   can send parts to presigned URLs; a client that does not ask keeps the path through the
   app) asks the store for a direct upload; the session says ``"direct": true``.  The
   declared ``size`` counts towards the size rules at once, as for any session, so a file
   the rules refuse is refused here.
2. **Each part**: ``POST /api/v1/uploads/{id}/parts/{n}/url`` with the part's digest
   answers a presigned request (:func:`presign_part`) signed for the part's exact length
   (``Content-Length``; the store refuses a body of another length) and, where the store
   checks checksums, its SHA-256.  The client sends the bytes there, without its modelreg
   credentials.
3. **Completing** (:func:`complete`, the usual ``PUT …?digest=``): the parts the store
   holds (``ListParts``) must be exactly the session's, each of its exact size (``422
   upload_incomplete`` / ``part_size_mismatch`` otherwise, and the session stays open so
   that the client sends those parts again); they are assembled, and the session becomes
   ``verifying``: ``202``, and a ``verify_upload`` job is queued in the same transaction.
   A store's checksums of a multipart upload are per part, not the whole file's, so the
   content is not a blob yet: no file names it, nothing can be read under its digest.
4. **The worker** (:func:`.verify.verify_upload`) reads the content once and checks its sha256.
   If it matches, the content becomes its blob and the file is added to the draft under
   the version's lock, with the size rules checked again (audited ``file.added``), and the
   session is gone.  If not — or the rules, or the version (no longer a draft), refuse it
   — its bytes are deleted, the session becomes ``refused`` with ``error`` (``code``,
   ``message``, ``details``: what ``GET /api/v1/uploads/{id}`` shows until the session
   expires), and the refusal is audited (``upload.refused``).

Everything else of a session (ownership, expiry, the open-sessions limit, abort, garbage
collection) is as in :mod:`.uploads`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .. import jobs as queue
from ..errors import ApiError, BadRequest, Conflict, Unprocessable
from ..interfaces import IDirectUploads
from ..models import UploadSession, utcnow
from ..names import DIGEST_PREFIX
from ..policy import check_upload
from ..storage.errors import UploadNotFound
from .services import claim_timeout, parts_count, same_digest

if TYPE_CHECKING:
    from .uploads import UploadService, UploadSnapshot

#: The kind of the job that verifies a completed direct upload.
VERIFY_JOB = "verify_upload"


def begin(store: Any) -> dict[str, Any] | None:
    """A direct upload's state, if the store offers them and they are enabled; else ``None``."""
    if not IDirectUploads.providedBy(store):
        return None
    return store.begin_direct_upload()


def _part_bounds(upload: UploadSession, number: int) -> tuple[int, int]:
    count = -(-int(upload.size or 0) // int(upload.part_size or 1))
    if not 1 <= number <= count:
        raise ApiError(f"this upload has parts 1 to {count}", code="part_out_of_range",
                       status=416, details={"parts_count": count})
    start = (number - 1) * upload.part_size
    return start, min(upload.part_size, upload.size - start)


def check_open(upload: UploadSession) -> None:
    """409 unless the session is a direct one still receiving parts."""
    if not upload.direct:
        raise Conflict("this session receives its parts through the registry (PUT "
                       "…/parts/{n}), not at presigned URLs", code="upload_mode")
    if upload.status == "verifying":
        raise Conflict("the upload is complete and its digest is being verified",
                       code="upload_verifying", headers={"Retry-After": "2"})
    if upload.status == "refused":
        raise refused(upload)


def refused(upload: UploadSession) -> ApiError:
    """``422 upload_refused``: the verification refused the session (``details.error``)."""
    return Unprocessable(f"the upload was refused: {(upload.error or {}).get('message')}",
                         code="upload_refused", details={"error": upload.error})


def presign_part(service: UploadService, upload: UploadSession, number: int, sha256: str
                 ) -> dict[str, Any]:
    """A presigned request that stores part ``number`` (``sha256``) of a direct session."""
    check_open(upload)
    if upload.completing_until is not None and upload.completing_until > utcnow():
        raise Conflict("the upload is being completed: its parts cannot change",
                       code="upload_completing", headers={"Retry-After": "5"})
    start, length = _part_bounds(upload, number)
    signed = service.store.presign_part(upload.state, number=number, length=length,
                                        sha256=sha256)
    return {"number": number, "start": start, "size": length,
            "digest": DIGEST_PREFIX + sha256, "url": signed["url"],
            "method": signed.get("method", "PUT"), "headers": dict(signed.get("headers", {}))}


def held_parts(store: Any, upload: UploadSession) -> list[dict[str, Any]]:
    """The parts the store holds for an open direct session, as the API lists parts (their
    digests are unknown until verification: ``null``)."""
    if upload.status != "open":
        return []
    try:
        sizes = store.list_direct_parts(upload.state)
    except UploadNotFound:
        return []
    return [{"number": n, "start": (n - 1) * upload.part_size, "size": size, "digest": None}
            for n, size in sorted(sizes.items())]


def complete(service: UploadService, public_id: str, sha256: str) -> UploadSnapshot:
    """Check the parts the store holds, assemble them, and queue their verification.

    :returns: the session, now ``verifying`` (also when it was already, with this digest:
        a retry after a lost answer).
    :raises ApiError: 422 ``upload_incomplete`` or ``part_size_mismatch`` (the session stays
        open), 422 ``validation_failed`` (size rules; the session and its bytes are deleted),
        409 ``upload_completing``/``upload_verifying``/``version_immutable``, 422
        ``upload_refused``.
    """
    now = utcnow()
    refusal: ApiError | None = None
    with service._transaction() as files:
        db = files.db
        upload, version = service._lock(db, public_id)
        if (upload.direct and upload.status == "verifying" and upload.sha256 is not None
                and same_digest(upload.sha256, sha256)):
            return service._snapshot(db, upload, version)  # completed already: a retry
        check_open(upload)
        service._check_not_completing(upload, now)
        if upload.sha256 is not None and not same_digest(upload.sha256, sha256):
            raise BadRequest("the digest differs from the one announced when the upload "
                             "was opened", code="digest_mismatch",
                             details={"expected": DIGEST_PREFIX + upload.sha256})
        service._check_draft(version)
        try:
            check_upload(db, service.settings, version, upload.path, upload.size,
                         upload_id=upload.id)
        except Unprocessable as exc:
            refusal = exc
        else:
            upload.completing_until = now + dt.timedelta(
                seconds=claim_timeout(service.settings))
        state, size, part_size = upload.state, int(upload.size), int(upload.part_size)
    if refusal is not None:  # what the size rules refuse is deleted at once
        service._drop(public_id, state)
        raise refusal
    count = parts_count(size, part_size)
    try:
        held = service.store.list_direct_parts(state)
        missing = [n for n in range(1, count + 1) if n not in held]
        if missing:
            raise Unprocessable(f"the store holds {count - len(missing)} of the upload's "
                                f"{count} parts", code="upload_incomplete",
                                details={"size": size, "missing": missing[:100]})
        for number in range(1, count + 1):
            wanted = min(part_size, size - (number - 1) * part_size)
            if held[number] != wanted:
                raise Unprocessable(
                    f"part {number} holds {held[number]} bytes, not {wanted}: send it again",
                    code="part_size_mismatch",
                    details={"number": number, "size": held[number], "expected_size": wanted})
        service.store.complete_direct(state, count)
    except BaseException:
        service._release(public_id)
        raise
    with service._transaction() as files:
        upload, version = service._lock(files.db, public_id)
        upload.status, upload.sha256, upload.offset = "verifying", sha256, size
        upload.completing_until = None
        service._extend(upload, now)
        queue.enqueue(files.db, VERIFY_JOB, {"upload": public_id})
        return service._snapshot(files.db, upload, version)
