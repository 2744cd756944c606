"""The worker's ``verify_upload`` job: a completed direct upload (:mod:`.direct`) read once
and its sha256 checked, before the content becomes a blob and the draft's file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pyramid.config import Configurator

from ..db import database_parts
from ..errors import ApiError
from ..models import UploadSession, Version
from ..names import DIGEST_PREFIX
from ..policy import check_upload
from ..storage.errors import DigestMismatch, UploadNotFound
from ..types import BlobInfo
from .direct import VERIFY_JOB
from .services import touch_blob
from .uploads import UploadService

if TYPE_CHECKING:
    from ..worker.runner import Worker



class _Parts(dict):
    """What :func:`modelreg.db.transaction` and :class:`.uploads.UploadService` need of a
    registry, built from a worker (its engine, session factory and settings)."""

    settings: dict[str, Any]


def _service(worker: Worker, actor: str | None) -> UploadService:
    parts = _Parts(database_parts(worker.engine, worker.session_factory))
    parts.settings = worker.settings
    return UploadService(parts, worker.store, worker.hook, actor=actor)


def verify_upload(worker: Worker, payload: dict[str, Any], heartbeat: Callable[[], None]
                  ) -> None:
    """Read a completed direct upload once, check its sha256, and give the draft the file;
    or refuse the session (see the module's documentation).  A blob-store failure
    propagates, so that the job is tried again later."""
    public_id = payload["upload"]
    with worker.transaction() as db:
        upload = db.scalar(sa.select(UploadSession).where(
            UploadSession.public_id == public_id))
        if upload is None or upload.status != "verifying":
            return  # aborted, expired, or concluded by an earlier run
        state, sha256, owner = upload.state, upload.sha256, upload.owner
    service = _service(worker, owner)
    try:
        info = worker.store.verify_direct(state, sha256)
    except DigestMismatch as exc:
        _refuse(service, public_id, state, {
            "code": "digest_mismatch",
            "message": "the uploaded content does not match the digest sent at completion; "
                       "it was deleted",
            "details": {"expected": DIGEST_PREFIX + exc.expected,
                        "actual": DIGEST_PREFIX + exc.actual}})
        return
    except UploadNotFound:
        _refuse(service, public_id, state, {
            "code": "upload_lost", "message": "the uploaded content is gone from the store",
            "details": {}})
        return
    heartbeat()
    _conclude(service, public_id, state, info)


def _conclude(service: UploadService, public_id: str, state: dict[str, Any], info: BlobInfo
              ) -> None:
    with service._transaction() as files:
        touch_blob(files.db, info)
    try:
        with service._transaction() as files:
            db = files.db
            upload, version = service._lock(db, public_id)
            if upload.status != "verifying":
                return
            model = version.model.name
            version = files.draft(model, str(version.number), lock=True)
            check_upload(db, service.settings, version, upload.path, info.size,
                         upload_id=upload.id)
            files.add_file(version, upload.path, info, upload.media_type)
            db.delete(upload)
    except ApiError as exc:
        _refuse(service, public_id, None, {"code": exc.code, "message": exc.message,
                                          "details": dict(exc.details or {})})
        service.discard_blob(info)


def _refuse(service: UploadService, public_id: str, state: dict[str, Any] | None,
            error: dict[str, Any]) -> None:
    """Mark the session refused (what ``GET`` shows), audit it, and free its bytes."""
    with service._transaction() as files:
        db = files.db
        upload = db.scalar(sa.select(UploadSession).where(
            UploadSession.public_id == public_id).with_for_update())
        if upload is None:
            return
        upload.status, upload.error, upload.completing_until = "refused", error, None
        version = db.get(Version, upload.version_id) if upload.version_id else None
        if version is not None:
            model = version.model.name
            files.registry.record("upload.refused", "file",
                                  f"{model}/{version.number}:{upload.path}", model,
                                  after={"upload": public_id, **error})
    if state is not None:
        service.store.abort_upload(state)


def give_up_verify(worker: Worker, payload: dict[str, Any], error: str) -> None:
    """The verification failed too often (the store unreachable): refuse the session."""
    public_id = payload["upload"]
    with worker.transaction() as db:
        upload = db.scalar(sa.select(UploadSession).where(
            UploadSession.public_id == public_id))
        if upload is None or upload.status != "verifying":
            return
        state = upload.state
    _refuse(_service(worker, None), public_id, state, {
        "code": "verification_failed",
        "message": "the uploaded content could not be verified; upload it again",
        "details": {"error": error[:500]}})


def includeme(config: Configurator) -> None:
    """Teach the worker the ``verify_upload`` job."""
    config.add_job_kind(VERIFY_JOB, verify_upload, give_up_verify)
