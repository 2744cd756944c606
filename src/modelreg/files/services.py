"""The files of versions: adding, replacing, listing and deleting them, upload sessions.

Bytes go to the blob store (:class:`~modelreg.interfaces.IBlobStore`), rows to the database.
The order is always the same, so that nothing half-written is ever visible:

1. the bytes are stored (under their digest; a failure leaves no blob);
2. the blob's row is touched in a transaction of its own (so that a stored blob always has a
   row that garbage collection can find, even if what follows fails);
3. one short write transaction locks the version's row, checks it is still a draft, touches
   the blob's row again, checks the blob is still in the store (garbage collection may have
   taken it between 1 and 3: see :mod:`modelreg.files.gc`), and adds the file's row.

Linking a blob the registry already holds (:meth:`FileService.link_file`, no bytes sent) is
step 3 alone, with the blob's row locked and the caller's right to it checked inside.

Views that stream a body (``PUT`` of a file, chunks of an upload) read through the request's
session, which on those routes never writes (:func:`modelreg.db.add_streaming_view`), and
write through :func:`modelreg.db.transaction` once the bytes are stored.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
from typing import Any

import sqlalchemy as sa
from pyramid.request import Request
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

from ..errors import ApiError, BadRequest, Conflict, NotFound
from ..interfaces import MIN_CHUNK_SIZE
from ..models import Blob, File, Model, UploadSession, Version, utcnow
from ..names import DIGEST_PREFIX
from ..policy import ARCHIVED, check_upload
from ..registry.services import RegistryService, isotime
from ..settings import (
    UPLOAD_CLAIM_TIMEOUT,
    UPLOAD_MAX_OPEN_SESSIONS,
    UPLOAD_MAX_PUT_SIZE,
    UPLOAD_MIN_CHUNK_SIZE,
    UPLOAD_SESSION_TTL,
)
from ..types import BlobInfo
from .paths import check_new_path, conflict

MiB = 1024 * 1024
#: Settings and their defaults.
MAX_PUT_SIZE_SETTING = UPLOAD_MAX_PUT_SIZE
DEFAULT_MAX_PUT_SIZE = 256 * MiB
MIN_CHUNK_SIZE_SETTING = UPLOAD_MIN_CHUNK_SIZE
SESSION_TTL_SETTING = UPLOAD_SESSION_TTL
DEFAULT_SESSION_TTL = 24 * 3600
DEFAULT_MEDIA_TYPE = "application/octet-stream"

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_HEX_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")
#: Upload session ids as made: 32 lower-case hex digits (``secrets.token_hex(16)``).
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def setting_int(settings: dict[str, Any], name: str, default: int) -> int:
    """An integer setting, or ``default`` when unset."""
    value = settings.get(name)
    return default if value in (None, "") else int(value)


def max_put_size(settings: dict[str, Any]) -> int:
    """The largest body of a single ``PUT`` (and of one upload chunk)."""
    return setting_int(settings, MAX_PUT_SIZE_SETTING, DEFAULT_MAX_PUT_SIZE)


def min_chunk_size(settings: dict[str, Any]) -> int:
    """The smallest chunk of an upload session other than the last."""
    return setting_int(settings, MIN_CHUNK_SIZE_SETTING, MIN_CHUNK_SIZE)


def session_ttl(settings: dict[str, Any]) -> int:
    """Seconds an upload session stays open after it was opened or last received a chunk."""
    return setting_int(settings, SESSION_TTL_SETTING, DEFAULT_SESSION_TTL)


def media_type(value: str | None) -> str:
    """The media type to store for a file: the client's ``type/subtype``, or octet-stream."""
    if value:
        value = value.split(";", 1)[0].strip().lower()
        if _MEDIA_TYPE.fullmatch(value):
            return value
    return DEFAULT_MEDIA_TYPE


def parse_hex_digest(value: str, field: str = "digest") -> str:
    """``sha256:<64 hex>`` → the lowercase hex; 400 ``invalid_digest`` otherwise."""
    match = _HEX_DIGEST.fullmatch(value.strip())
    if match is None:
        raise BadRequest(
            f"{field} must be 'sha256:' followed by 64 hexadecimal characters",
            code="invalid_digest",
            details={"field": field},
        )
    return match.group(1).lower()


def client_digest(request: Request) -> str | None:
    """The sha256 (hex) the client promised for the body, or ``None``.

    From ``?digest=sha256:<hex>``, ``Digest: sha-256=<base64>`` (RFC 3230) or
    ``Content-Digest: sha-256=:<base64>:`` (RFC 9530); several must agree.
    """
    found: dict[str, str] = {}
    query = request.GET.get("digest")
    if query is not None:
        found["digest"] = parse_hex_digest(query)
    for header in ("Digest", "Content-Digest"):
        value = request.headers.get(header)
        if value is None:
            continue
        for item in value.split(","):
            algorithm, _, encoded = item.strip().partition("=")
            if algorithm.strip().lower() != "sha-256":
                continue
            encoded = encoded.strip().strip(":")
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise BadRequest(
                    f"{header}: sha-256 must be the base64 of 32 bytes",
                    code="invalid_digest",
                    details={"field": header},
                )
            found[header] = raw.hex()
    if len(set(found.values())) > 1:
        raise BadRequest("the digests sent disagree", code="invalid_digest",
                         details={"fields": sorted(found)})
    return next(iter(found.values()), None)


def touch_blob(db: Session, info: BlobInfo, now: dt.datetime | None = None) -> None:
    """Insert the blob's row, or set its ``last_referenced_at`` to now (an upsert).

    On PostgreSQL and MariaDB the row stays locked until the transaction ends, so garbage
    collection (which skips locked rows) cannot take the blob meanwhile.
    """
    now = now or utcnow()
    values = {"sha256": info.sha256, "size": info.size, "last_referenced_at": now}
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(Blob).values(values).on_conflict_do_update(
            index_elements=[Blob.sha256], set_={"last_referenced_at": now})
    elif dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(Blob).values(values).on_duplicate_key_update(
            last_referenced_at=now)
    else:
        stmt = sqlite.insert(Blob).values(values).on_conflict_do_update(
            index_elements=[Blob.sha256], set_={"last_referenced_at": now})
    db.execute(stmt)


def file_json(file: File) -> dict[str, Any]:
    """The API representation of a file."""
    return {
        "path": file.path,
        "size": file.size,
        "sha256": file.sha256,
        "media_type": file.media_type,
        "created_at": isotime(file.created_at),
        "created_by": file.created_by,
    }


def file_not_found(version: Version, path: str) -> NotFound:
    """The answer for a path a version does not hold."""
    return NotFound(
        f"version {version.number} of {version.model.name!r} has no file {path!r}",
        code="file_not_found",
        details={"model": version.model.name, "version": version.number},
    )


def blob_not_found(sha256: str) -> NotFound:
    """The answer for a digest the caller cannot link: unknown, or held only by versions it
    may not read (the same answer, so that existence does not leak)."""
    return NotFound(f"no content with digest {DIGEST_PREFIX}{sha256} is available to link; "
                    "upload it", code="blob_not_found",
                    details={"digest": DIGEST_PREFIX + sha256})


def upload_not_found() -> NotFound:
    """The answer for an upload session that does not exist, expired, or is someone else's."""
    return NotFound("no such upload session (it may have expired or been completed)",
                    code="upload_not_found")


def insufficient_storage(message: str) -> ApiError:
    """507: the blob store is full."""
    return ApiError(message, code="insufficient_storage", status=507)


class FileService:
    """Files and upload sessions of versions, for one transaction.

    :param registry: the registry service of the same session (versions, audit records).
    :param store: the blob store.
    """

    def __init__(self, registry: RegistryService, store: Any) -> None:
        self.registry = registry
        self.db = registry.db
        self.store = store
        self.settings = registry.settings

    # ------------------------------------------------------------------------ reading

    def list_files(self, model_name: str, ref: str) -> tuple[Version, list[File]]:
        """A version (by any ref) and its files, sorted by path."""
        version = self.registry.get_version(model_name, ref)
        files = self.db.scalars(
            sa.select(File).where(File.version_id == version.id).order_by(File.path)
        ).all()
        return version, list(files)

    def get_file(self, model_name: str, ref: str, path: str) -> tuple[Version, File]:
        """A file of a version (by any ref), or 404 (410 for a file of an archived version)."""
        version = self.registry.get_version(model_name, ref)
        file = self._file(version.id, path)
        if file is None:
            if version.status == ARCHIVED and any(
                    f["path"] == path for f in version.archived_files or ()):
                raise ApiError(
                    f"version {version.number} of {version.model.name!r} is archived: its "
                    "files are no longer kept", code="version_archived", status=410,
                    details={"model": version.model.name, "version": version.number})
            raise file_not_found(version, path)
        return version, file

    def _file(self, version_id: int, path: str) -> File | None:
        return self.db.scalar(
            sa.select(File).where(File.version_id == version_id, File.path == path)
        )

    def draft(self, model_name: str, ref: str, *, lock: bool = False) -> Version:
        """The draft a write request names by number; 409 if it is not a draft.

        :param lock: lock the version's row until the transaction ends and check its status
            under the lock (:meth:`RegistryService.lock_version`, which finalize takes too,
            so that no file is added to a version being finalized); without it, the check
            before a body is read, which a write repeats under the lock.
        """
        refusal = ("version_immutable", "its files cannot change")
        if lock:
            return self.registry.lock_version(model_name, ref, draft=refusal)
        version = self.registry.get_version_for_write(model_name, ref)
        if version.status != "draft":
            code, message = refusal
            raise Conflict(f"version {version.number} is {version.status}: {message}",
                           code=code, details={"status": version.status})
        return version

    # ------------------------------------------------------------------------ writing

    def add_file(
        self, version: Version, path: str, info: BlobInfo, media: str, *,
        verify_stored: bool = True,
    ) -> tuple[File, str]:
        """Give a locked draft the file ``path`` with the stored blob ``info``.

        :returns: the file and what happened: ``created``, ``unchanged`` (same bytes, the
            idempotent re-upload) or ``replaced``.
        :param verify_stored: check that the store still holds the blob (``False`` when the
            caller just did, in the same transaction).
        :raises ApiError: 503 if the blob vanished from the store meanwhile (collected as
            garbage between its upload and this transaction): the client uploads again.
        """
        touch_blob(self.db, info)
        if verify_stored and not self.store.exists(info.sha256):
            raise ApiError("the uploaded content was removed before it could be recorded; "
                           "upload it again", code="blob_missing", status=503,
                           headers={"Retry-After": "1"})
        file = self._file(version.id, path)
        target = f"{version.model.name}/{version.number}:{path}"
        if file is not None and file.sha256 == info.sha256:
            return file, "unchanged"
        if file is None:  # a new path: checked against the others under the version's lock
            self.check_new_file(version, path)
        after = {"sha256": info.sha256, "size": info.size}
        if file is None:
            file = File(version_id=version.id, path=path, size=info.size, sha256=info.sha256,
                        media_type=media, created_at=utcnow(), created_by=self.registry.actor)
            self.db.add(file)
            outcome, before = "created", None
        else:
            before = {"sha256": file.sha256, "size": file.size}
            file.sha256, file.size, file.media_type = info.sha256, info.size, media
            file.created_at, file.created_by = utcnow(), self.registry.actor
            outcome = "replaced"
        version.updated_at = utcnow()
        version.updated_by = self.registry.actor
        self.db.flush()
        self.registry.record(f"file.{'added' if outcome == 'created' else 'replaced'}", "file",
                             target, version.model.name, before=before, after=after)
        return file, outcome

    def check_new_file(self, version: Version, path: str) -> None:
        """422 (``invalid_path``) unless a new file of ``version`` may be called ``path``:
        :func:`.paths.check_new_path`, and no clash with the version's other files
        (:func:`.paths.conflict`: ``x`` and ``x/y``, ``A`` and ``a``).

        :meth:`add_file` runs it under the version's lock, so that two requests adding ``x``
        and ``x/y`` at once cannot both succeed; callers may run it earlier too, to refuse
        before any byte is sent.
        """
        check_new_path(path)
        others = self.db.scalars(sa.select(File.path).where(File.version_id == version.id))
        error = conflict(path, others)
        if error is not None:
            raise error

    def link_file(
        self, model_name: str, ref: str, path: str, sha256: str, *, media: str,
        size: int | None = None, readable: Any | None = None,
    ) -> tuple[File, str]:
        """Give a draft the file ``path`` with content the registry already holds, by digest.

        The content addressed registry's "cross-mount": no bytes are sent.  It succeeds only
        when the blob is stored *and* some version the caller may read holds a file with that
        content; otherwise the answer is :func:`blob_not_found`, the same whether the content
        is unknown or only in models hidden from the caller, so that nobody learns what others
        stored by guessing digests.

        Garbage collection cannot take the blob between the check and the new file: the
        blob's row is locked (``FOR UPDATE``; SQLite serializes writers instead) before the
        check and touched before the file is added, so a collection that has not locked the
        row yet skips it (it is locked, then fresh and referenced), and one that did has
        deleted it by the time the lock is granted (the row is gone: 404).

        :param readable: SQL restricting :class:`Model` rows to those the caller may read
            (:func:`modelreg.security.policy.readable_models`), ``None`` for all.
        :param size: the size the client expects; ``400 size_mismatch`` when the blob's
            differs.  The file's size is always the blob's own.
        :returns: the file and ``created``, ``unchanged`` or ``replaced`` (as :meth:`add_file`).
        """
        check_new_path(path)
        version = self.draft(model_name, ref, lock=True)
        blob = self.db.execute(
            sa.select(Blob.sha256, Blob.size).where(Blob.sha256 == sha256).with_for_update()
        ).first()
        holders = (
            sa.select(File.id)
            .join(Version, Version.id == File.version_id)
            .join(Model, Model.id == Version.model_id)
            .where(File.sha256 == sha256)
        )
        if readable is not None:
            holders = holders.where(readable)
        if (blob is None or self.db.scalar(holders.limit(1)) is None
                or not self.store.exists(sha256)):
            raise blob_not_found(sha256)
        if size is not None and size != blob.size:
            raise BadRequest(
                f"the content sha256:{sha256} has {blob.size} bytes, not {size}",
                code="size_mismatch", details={"size": blob.size})
        # The size policy as for an upload of the same bytes (under the version's lock).
        check_upload(self.db, self.settings, version, path, blob.size)
        return self.add_file(version, path, BlobInfo(blob.sha256, blob.size), media,
                             verify_stored=False)

    def delete_file(self, model_name: str, ref: str, path: str) -> None:
        """Delete a file of a draft (its blob stays until garbage collection)."""
        version = self.draft(model_name, ref, lock=True)
        file = self._file(version.id, path)
        if file is None:
            raise file_not_found(version, path)
        self.db.delete(file)
        version.updated_at = utcnow()
        version.updated_by = self.registry.actor
        self.registry.record("file.deleted", "file",
                             f"{version.model.name}/{version.number}:{path}",
                             version.model.name,
                             before={"sha256": file.sha256, "size": file.size})

    # ---------------------------------------------------------------- upload sessions
    # Opening, receiving and completing them: :class:`.uploads.UploadService`.

    def find_upload(self, public_id: str) -> tuple[UploadSession, str, int] | None:
        """An open, unexpired upload session with its model's name and version number.

        An id that is not of the form the registry makes names no session and is never
        looked up (a NUL in it would fail the query on PostgreSQL).
        """
        if not _UPLOAD_ID.fullmatch(public_id):
            return None
        row = self.db.execute(
            sa.select(UploadSession, Model.name, Version.number)
            .join(Version, Version.id == UploadSession.version_id)
            .join(Model, Model.id == Version.model_id)
            .where(UploadSession.public_id == public_id)
        ).first()
        if row is None or row[0].expires_at <= utcnow():
            return None
        return row[0], row[1], row[2]


def upload_json(
    request: Request, upload: UploadSession, model: str, number: int
) -> dict[str, Any]:
    """The API representation of an upload session."""
    settings = request.registry.settings
    return {
        "id": upload.public_id,
        "model": model,
        "version": number,
        "path": upload.path,
        "offset": upload.offset,
        "size": upload.size,
        "digest": None if upload.sha256 is None else DIGEST_PREFIX + upload.sha256,
        "expires_at": isotime(upload.expires_at),
        "min_chunk_size": min_chunk_size(settings),
        "max_chunk_size": max_put_size(settings),
        "location": request.route_path("api.upload", upload=upload.public_id),
        "part_size": upload.part_size,
        "parts_count": (None if upload.part_size is None or upload.size is None
                        else -(-upload.size // upload.part_size)),
        "parts": [],
        "direct": bool(upload.direct),
        "status": upload.status or "open",
        "error": upload.error,
    }


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a, b)


MAX_OPEN_SESSIONS_SETTING = UPLOAD_MAX_OPEN_SESSIONS
DEFAULT_MAX_OPEN_SESSIONS = 32
CLAIM_TIMEOUT_SETTING = UPLOAD_CLAIM_TIMEOUT
DEFAULT_CLAIM_TIMEOUT = 900


def max_open_sessions(settings: dict[str, Any]) -> int:
    """The most upload sessions one principal may hold open at once."""
    return setting_int(settings, MAX_OPEN_SESSIONS_SETTING, DEFAULT_MAX_OPEN_SESSIONS)


def claim_timeout(settings: dict[str, Any]) -> int:
    """Seconds a part (or a completion) stays claimed by a sender that may have died."""
    return setting_int(settings, CLAIM_TIMEOUT_SETTING, DEFAULT_CLAIM_TIMEOUT)


def parts_count(size: int, part_size: int) -> int:
    """How many parts a file of ``size`` bytes has in parts of ``part_size``."""
    return -(-size // part_size)
