"""The upload protocol: sessions that receive a file in parts, callable from Python.

Every front-end builds on :class:`UploadService` (the REST views of :mod:`.views`, and the
MLflow and Hugging Face front-ends): open a session, send its parts, complete it with the
whole file's digest, or abort it.  Two ways to send the bytes:

* **numbered parts** (:meth:`UploadService.put_part`): the session is opened with the file's
  ``size`` and a ``part_size``; part ``n`` (1-based) covers the bytes ``[(n-1) * part_size,
  min(n * part_size, size))``, so every part but the last has exactly ``part_size`` bytes.
  Parts may arrive in any order, in parallel, through different processes;
* **sequential chunks** (:meth:`UploadService.append`, the ``PATCH`` of API v1): each chunk
  starts where the previous one ended; a chunk shorter than the minimum is the last.

Either way a part's number is *claimed* before a byte of it is written: a row in
``upload_parts``, inserted in a short transaction that holds the session's row lock (an
``UPDATE`` of the session's row, which on SQLite takes the database's write lock).  A
second sender of the same number, or of a chunk at the same offset, finds the row and is
refused (409, or 416 for chunks) before its body is read, so it never writes over the
bytes of the part that holds the claim.  The bytes are then stored (outside any
transaction) by the blob store's :meth:`~modelreg.interfaces.IBlobStore.upload_part`, which
keeps each part under its number and digest, and a second short transaction records the
part as received.  A sender that dies leaves a claim that expires after
``modelreg.upload.claim_timeout`` seconds; then the number may be claimed again.

Completion (:meth:`UploadService.complete`) marks the session as completing (no part may
change meanwhile), checks the size rules on the parts' total and assembles the parts through
the blob store, which verifies the whole file's digest.  A wrong digest keeps the session
and every part (:class:`DigestRefused` says what the server holds, so that the client
resends only the parts that differ); content the size rules refuse is deleted at once.

Bytes held by open sessions count towards the size rules (:mod:`modelreg.policy`), and a
principal may hold at most ``modelreg.upload.max_open_sessions`` open sessions.

Authorization is the caller's: the views check the principal's right to write the model and
that the session is the principal's own before they call the service.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db import transaction
from ..errors import ApiError, BadRequest, Conflict, Unprocessable
from ..interfaces import MAX_PARTS
from ..models import Blob, File, Model, UploadPart, UploadSession, Version, utcnow
from ..names import DIGEST_PREFIX
from ..policy import check_upload
from ..registry.services import RegistryService
from ..storage.errors import DigestMismatch
from ..types import BlobInfo
from . import direct as direct_uploads
from .paths import check_new_path
from .services import (
    MAX_OPEN_SESSIONS_SETTING,
    FileService,
    claim_timeout,
    file_json,
    max_open_sessions,
    max_put_size,
    min_chunk_size,
    parts_count,
    same_digest,
    session_ttl,
    touch_blob,
    upload_not_found,
)


def part_json(part: UploadPart) -> dict[str, Any]:
    """The API representation of a received part."""
    return {"number": part.number, "start": part.start, "size": part.size,
            "digest": None if part.sha256 is None else DIGEST_PREFIX + part.sha256}


@dataclass
class UploadSnapshot:
    """An upload session as it stood when a call returned (detached from any session).

    :ivar upload: the session's row (read its attributes; it is not attached).
    :ivar parts: its received parts, in order.
    """

    upload: UploadSession
    model: str
    number: int
    parts: list[dict[str, Any]] = field(default_factory=list)


class DigestRefused(ApiError):
    """400 ``digest_mismatch`` at completion: the session and its parts are kept, and the
    details say what the server holds (``parts``: number, start, size and digest of each)."""

    status = 400
    code = "digest_mismatch"


def _out_of_order(offset: int, message: str) -> ApiError:
    return ApiError(message, code="chunk_out_of_order", status=416,
                    details={"offset": offset},
                    headers={"Upload-Offset": str(offset), "Range": f"0-{max(offset - 1, 0)}"})


class UploadService:
    """Upload sessions over short transactions of their own (see the module's doc).

    :param registry: the Pyramid registry (database engines and session factory, settings).
    :param store: the blob store.
    :param hook: the plugin manager's hook relay (audit records of the files it adds).
    :param actor: the principal, for the files' ``created_by`` and the audit log.
    """

    def __init__(self, registry: Any, store: Any, hook: Any, *, actor: str | None = None,
                 client_addr: str | None = None, token_id: str | None = None) -> None:
        self.registry = registry
        self.store = store
        self.hook = hook
        self.settings: dict[str, Any] = registry.settings
        self.actor = actor
        self.client_addr = client_addr
        self.token_id = token_id

    # ----------------------------------------------------------------------- plumbing

    @contextmanager
    def _transaction(self) -> Iterator[FileService]:
        with transaction(self.registry) as db:
            registry = RegistryService(db, self.hook, self.settings, actor=self.actor,
                                       client_addr=self.client_addr, token_id=self.token_id)
            yield FileService(registry, self.store)

    def put_file(
        self, model: str, ref: str, path: str, stream: BinaryIO, *,
        expected_sha256: str | None, max_size: int, media_type: str | None,
    ) -> tuple[dict[str, Any], str]:
        """Store one request's body as the file ``path`` of a draft (``PUT`` of a file).

        The bytes go to the blob store first and the blob's row is touched in a transaction
        of its own (see :mod:`.services`); then, under the version's lock, the size policy is
        checked on the stored size (a refusal records no file) and the file is added.

        :returns: the file's API representation and ``"created"`` or what
            :meth:`.services.FileService.add_file` says.
        """
        info = self.store.put(stream, expected_sha256=expected_sha256, max_size=max_size)
        with transaction(self.registry) as db:
            touch_blob(db, info)
        with self._transaction() as service:
            version = service.draft(model, ref, lock=True)
            check_upload(service.registry.db, self.settings, version, path, info.size)
            file, outcome = service.add_file(version, path, info, media_type)
            return file_json(file), outcome

    def _lock(self, db: Session, public_id: str) -> tuple[UploadSession, Version]:
        """The open session, its row locked until the transaction ends (an ``UPDATE``, so
        that SQLite takes its write lock too); 404 when gone, expired or orphaned."""
        now = utcnow()
        touched = db.execute(
            sa.update(UploadSession)
            .where(UploadSession.public_id == public_id, UploadSession.expires_at > now,
                   UploadSession.version_id.is_not(None))
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if touched.rowcount != 1:
            raise upload_not_found()
        upload = db.scalar(sa.select(UploadSession).where(UploadSession.public_id == public_id))
        version = db.get(Version, upload.version_id)
        return upload, version

    @staticmethod
    def _check_draft(version: Version) -> None:
        if version.status != "draft":
            raise Conflict(
                f"version {version.number} is {version.status}: its files cannot change",
                code="version_immutable", details={"status": version.status})

    def _check_not_completing(self, upload: UploadSession, now: dt.datetime) -> None:
        if upload.completing_until is not None and upload.completing_until > now:
            raise Conflict("the upload is being completed: its parts cannot change",
                           code="upload_completing", headers={"Retry-After": "5"})

    def _parts(self, db: Session, upload: UploadSession) -> list[UploadPart]:
        return list(db.scalars(sa.select(UploadPart).where(UploadPart.upload_id == upload.id)
                               .order_by(UploadPart.number)).all())

    def _snapshot(self, db: Session, upload: UploadSession, version: Version
                  ) -> UploadSnapshot:
        parts = [part_json(p) for p in self._parts(db, upload) if p.claimed_until is None]
        model = db.scalar(sa.select(Model.name).where(Model.id == version.model_id))
        db.flush()
        db.expunge(upload)
        return UploadSnapshot(upload, model, version.number, parts)

    def _extend(self, upload: UploadSession, now: dt.datetime) -> None:
        upload.updated_at = now
        upload.expires_at = now + dt.timedelta(seconds=session_ttl(self.settings))

    # ------------------------------------------------------------------------- opening

    def open(self, model_name: str, ref: str, *, path: str, owner: str | None,
             size: int | None = None, sha256: str | None = None,
             media: str = "application/octet-stream", part_size: int | None = None,
             direct: bool = False) -> UploadSnapshot:
        """Open a session for ``path`` of a draft.

        :param size: the whole file's size, if known (required with ``part_size``).
        :param sha256: the whole file's digest, if known (completion must then match it).
        :param part_size: send numbered parts of this size (every part but the last);
            ``None`` for sequential chunks.
        :param direct: the sender can send parts to presigned URLs: the session is a
            direct one (:mod:`.direct`) if the store offers it and ``part_size`` is given.
        :raises ApiError: 409 ``too_many_uploads`` past ``max_open_sessions``, 422 when the
            size rules refuse ``size``, 400 ``invalid_part_size``.
        """
        check_new_path(path)
        if part_size is not None:
            self._check_part_size(size, part_size)
        # Parts straight to the store where it offers that (:mod:`.direct`).
        state = (direct_uploads.begin(self.store)
                 if direct and part_size is not None and size else None)
        is_direct = state is not None
        if state is None:
            state = self.store.begin_upload()
        try:
            with self._transaction() as files:
                db = files.db
                version = files.draft(model_name, ref, lock=True)
                # Early, before any byte is sent; completing checks again (add_file).
                files.check_new_file(version, path)
                self._check_open_sessions(db, owner)
                check_upload(db, self.settings, version, path, size)
                now = utcnow()
                upload = UploadSession(
                    public_id=secrets.token_hex(16), version_id=version.id, path=path,
                    media_type=media, owner=owner, state=state, offset=0, size=size,
                    sha256=sha256, part_size=part_size, created_at=now, updated_at=now,
                    direct=is_direct, status="open",
                    expires_at=now + dt.timedelta(seconds=session_ttl(self.settings)))
                db.add(upload)
                db.flush()
                return self._snapshot(db, upload, version)
        except BaseException:
            self.store.abort_upload(state)
            raise

    def _check_part_size(self, size: int | None, part_size: int) -> None:
        smallest, largest = min_chunk_size(self.settings), max_put_size(self.settings)
        problem = None
        if size is None:
            problem = "numbered parts need the file's size"
        elif not smallest <= part_size <= largest:
            problem = f"part_size must be {smallest} to {largest} bytes"
        elif parts_count(size, part_size) > MAX_PARTS:
            problem = (f"a file of {size} bytes in parts of {part_size} has more than "
                       f"{MAX_PARTS} parts: choose larger parts")
        if problem is not None:
            raise BadRequest(problem, code="invalid_part_size",
                             details={"min_part_size": smallest, "max_part_size": largest,
                                      "max_parts": MAX_PARTS})

    def _check_open_sessions(self, db: Session, owner: str | None) -> None:
        limit = max_open_sessions(self.settings)
        mine = (UploadSession.owner.is_(None) if owner is None
                else UploadSession.owner == owner)
        count = db.scalar(sa.select(sa.func.count()).select_from(UploadSession).where(
            mine, UploadSession.expires_at > utcnow(), UploadSession.version_id.is_not(None),
            UploadSession.status != "refused"))  # refused: kept to say why (.direct)
        if count >= limit:
            raise Conflict(
                f"{count} upload sessions are open for this principal, the most allowed "
                f"({MAX_OPEN_SESSIONS_SETTING}) is {limit}: complete or abort some",
                code="too_many_uploads",
                details={"max_open_sessions": limit, "open_sessions": count})

    def status(self, public_id: str) -> UploadSnapshot:
        """The session and the parts it holds (404 ``upload_not_found`` when gone)."""
        with self._transaction() as files:
            db = files.db
            upload = db.scalar(sa.select(UploadSession).where(
                UploadSession.public_id == public_id, UploadSession.expires_at > utcnow(),
                UploadSession.version_id.is_not(None)))
            if upload is None:
                raise upload_not_found()
            return self._snapshot(db, upload, db.get(Version, upload.version_id))

    # ---------------------------------------------------------------------- receiving

    def put_part(self, public_id: str, number: int, stream: BinaryIO, length: int, *,
                 sha256: str | None) -> tuple[dict[str, Any], bool]:
        """Receive part ``number`` of a session in numbered parts.

        :param sha256: the part's digest as the client promised it.
        :returns: the part (:func:`part_json`) and whether it was stored now (``False``:
            the same bytes were already held, and ``stream`` was not read).
        :raises ApiError: 409 ``part_exists`` (other bytes hold the number: delete that
            part first), 409 ``part_in_progress`` (another request is sending it), 416
            ``part_out_of_range``, 422 ``part_size_mismatch``, 400 ``digest_mismatch``.
        """
        now = utcnow()
        token = secrets.token_hex(16)
        with self._transaction() as files:
            db = files.db
            upload, version = self._lock(db, public_id)
            self._check_draft(version)
            self._check_not_completing(upload, now)
            if upload.part_size is None:
                raise Conflict("this session receives sequential chunks (PATCH), not "
                               "numbered parts", code="upload_mode")
            count = parts_count(upload.size, upload.part_size)
            if not 1 <= number <= count:
                raise ApiError(f"the file has parts 1 to {count}, not {number}",
                               code="part_out_of_range", status=416,
                               details={"parts": count})
            start = (number - 1) * upload.part_size
            expected = min(upload.part_size, upload.size - start)
            if length != expected:
                raise Unprocessable(
                    f"part {number} has {expected} bytes, not {length} (only the last "
                    "part may be shorter than part_size)", code="part_size_mismatch",
                    details={"number": number, "size": expected})
            existing = db.scalar(sa.select(UploadPart).where(
                UploadPart.upload_id == upload.id, UploadPart.number == number))
            if existing is not None and existing.claimed_until is None:
                if sha256 is not None and same_digest(existing.sha256, sha256):
                    return part_json(existing), False
                raise Conflict(f"part {number} was already received with other bytes; "
                               "delete it first to send it again", code="part_exists",
                               details=part_json(existing))
            if existing is not None and existing.claimed_until > now:
                raise Conflict(f"part {number} is being received by another request",
                               code="part_in_progress", details={"number": number},
                               headers={"Retry-After": "5"})
            until = now + dt.timedelta(seconds=claim_timeout(self.settings))
            if existing is not None:  # its sender died: take the claim over
                existing.claim, existing.claimed_until, existing.sha256 = token, until, None
            else:
                db.add(UploadPart(upload_id=upload.id, number=number, start=start,
                                  size=length, claim=token, claimed_until=until,
                                  created_at=now))
            self._flush_claim(db, number, upload.offset, chunk=False)
            state = upload.state
        info = self._store_part(state, number, stream, length, sha256, token, start)
        return self._record_part(public_id, number, token, info, state), True

    def append(self, public_id: str, start: int | None, stream: BinaryIO, length: int
               ) -> UploadSnapshot:
        """Receive the next sequential chunk of a session (``PATCH``).

        :param start: where the chunk starts (``None``: at the session's offset).
        :raises ApiError: 416 ``chunk_out_of_order`` (another chunk is at this offset, or
            it is not the offset), 422 ``chunk_too_small``, 422 when the size rules refuse.
        """
        now = utcnow()
        token = secrets.token_hex(16)
        minimum = min_chunk_size(self.settings)
        with self._transaction() as files:
            db = files.db
            upload, version = self._lock(db, public_id)
            self._check_draft(version)
            self._check_not_completing(upload, now)
            if upload.part_size is not None:
                raise Conflict("this session receives numbered parts (PUT …/parts/{n}), "
                               "not sequential chunks", code="upload_mode")
            parts = self._parts(db, upload)
            pending = [p for p in parts if p.claimed_until is not None]
            if any(p.claimed_until > now for p in pending):
                raise _out_of_order(upload.offset, "another chunk is being received at byte "
                                    f"{upload.offset}")
            for part in pending:  # left by a sender that died
                db.delete(part)
            offset = upload.offset
            start = offset if start is None else start
            if start != offset:
                raise _out_of_order(offset, f"the next chunk must start at byte {offset}, "
                                    f"not {start}")
            if length == 0:
                return self._snapshot(db, upload, version)
            end = start + length
            if upload.size is not None and end > upload.size:
                raise _out_of_order(offset, "the chunk ends past the file's announced size "
                                    f"({upload.size})")
            if upload.size is not None and length < minimum and end != upload.size:
                raise Unprocessable(
                    f"chunks other than the last must have at least {minimum} bytes",
                    code="chunk_too_small", details={"min_chunk_size": minimum})
            number = max((p.number for p in parts if p.claimed_until is None), default=0) + 1
            if number > MAX_PARTS:
                raise Unprocessable(f"an upload has at most {MAX_PARTS} chunks",
                                    code="too_many_chunks", details={"max_parts": MAX_PARTS})
            db.flush()
            check_upload(db, self.settings, version, upload.path, end, upload_id=upload.id)
            db.add(UploadPart(upload_id=upload.id, number=number, start=start, size=length,
                              claim=token, created_at=now,
                              claimed_until=now + dt.timedelta(
                                  seconds=claim_timeout(self.settings))))
            self._flush_claim(db, number, offset, chunk=True)
            state = upload.state
        info = self._store_part(state, number, stream, length, None, token, start)
        self._record_part(public_id, number, token, info, state,
                          last=upload.size is None and length < minimum)
        return self.status(public_id)

    @staticmethod
    def _flush_claim(db: Session, number: int, offset: int, *, chunk: bool) -> None:
        """Insert the claim; a concurrent claim of the number (SQLite, where the session's
        lock is the database's) loses on the unique constraint."""
        try:
            db.flush()
        except IntegrityError:
            if chunk:
                raise _out_of_order(offset, "another chunk is being received at byte "
                                    f"{offset}") from None
            raise Conflict(f"part {number} is being received by another request",
                           code="part_in_progress", details={"number": number},
                           headers={"Retry-After": "5"}) from None

    def _store_part(self, state: dict[str, Any], number: int, stream: BinaryIO, length: int,
                    sha256: str | None, token: str, offset: int) -> dict[str, Any]:
        """Write the claimed part's bytes (at ``offset`` of the file); on any failure, give
        the claim back."""
        try:
            return self.store.upload_part(state, number=number, stream=stream, length=length,
                                          expected_sha256=sha256, offset=offset)
        except BaseException:
            with self._transaction() as files:
                files.db.execute(sa.delete(UploadPart).where(
                    UploadPart.claim == token, UploadPart.claimed_until.is_not(None)))
            raise

    def _record_part(self, public_id: str, number: int, token: str, info: dict[str, Any],
                     state: dict[str, Any], *, last: bool = False) -> dict[str, Any]:
        """Mark the claimed part received.  If the claim was lost meanwhile (the session was
        aborted, or the claim expired and another sender took it), the bytes just stored
        are freed, unless they are the very bytes the part now holds."""
        now = utcnow()
        lost: Exception | None = None
        with self._transaction() as files:
            db = files.db
            try:
                upload, _version = self._lock(db, public_id)
            except ApiError as exc:
                lost, part = exc, None
            else:
                part = db.scalar(sa.select(UploadPart).where(
                    UploadPart.upload_id == upload.id, UploadPart.number == number))
            if part is not None and part.claim == token and part.claimed_until is not None:
                part.sha256, part.state, part.claimed_until = info["sha256"], info, None
                upload.offset += part.size
                if last:
                    upload.size = upload.offset  # a short chunk is the last one
                self._extend(upload, now)
                return part_json(part)
            keep = part is not None and part.sha256 == info["sha256"]
            if lost is None:
                lost = Conflict(f"part {number} was claimed by another request meanwhile",
                                code="part_in_progress", details={"number": number})
        if not keep:
            self.store.delete_part(state, info)
        raise lost

    def delete_part(self, public_id: str, number: int) -> None:
        """Free a received part so that its number can be sent again (after a completion
        refused for a wrong digest, say).  404 ``part_not_found``; 409 while it is being
        received or the session is being completed."""
        now = utcnow()
        with self._transaction() as files:
            db = files.db
            upload, _version = self._lock(db, public_id)
            self._check_not_completing(upload, now)
            part = db.scalar(sa.select(UploadPart).where(
                UploadPart.upload_id == upload.id, UploadPart.number == number))
            if part is None or (part.claimed_until is not None and part.claimed_until <= now):
                raise ApiError(f"the upload holds no part {number}", code="part_not_found",
                               status=404, details={"number": number})
            if part.claimed_until is not None:
                raise Conflict(f"part {number} is being received by another request",
                               code="part_in_progress", details={"number": number})
            if upload.part_size is None:
                raise Conflict("the chunks of a sequential upload cannot be deleted one by "
                               "one", code="upload_mode")
            info, state = part.state, upload.state
            upload.offset -= part.size
            db.delete(part)
        if info:
            self.store.delete_part(state, info)

    # --------------------------------------------------------------------- completing

    def complete(self, public_id: str, sha256: str) -> tuple[dict[str, Any], str]:
        """Assemble the parts, verify ``sha256``, and give the draft the file.

        :returns: the file (:func:`~.services.file_json`) and ``created``, ``unchanged`` or
            ``replaced``.
        :raises DigestRefused: the content's digest differs; the session and its parts
            stay (the details list them).
        :raises ApiError: 422 ``upload_incomplete`` (parts missing), 422
            ``validation_failed`` (size rules: the session and its bytes are deleted at
            once), 409 ``part_in_progress``, ``upload_completing`` or
            ``version_immutable``.
        """
        now = utcnow()
        refused: ApiError | None = None
        with self._transaction() as files:
            db = files.db
            upload, version = self._lock(db, public_id)
            self._check_not_completing(upload, now)
            if upload.sha256 is not None and not same_digest(upload.sha256, sha256):
                raise BadRequest("the digest differs from the one announced when the upload "
                                 "was opened", code="digest_mismatch",
                                 details={"expected": DIGEST_PREFIX + upload.sha256})
            parts = self._parts(db, upload)
            if any(p.claimed_until is not None and p.claimed_until > now for p in parts):
                raise Conflict("parts are still being received", code="part_in_progress",
                               headers={"Retry-After": "5"})
            for part in parts:
                if part.claimed_until is not None:
                    db.delete(part)
            parts = [p for p in parts if p.claimed_until is None]
            total = sum(p.size for p in parts)
            if upload.part_size is not None:
                count = parts_count(upload.size, upload.part_size)
                missing = sorted(set(range(1, count + 1)) - {p.number for p in parts})
                if missing:
                    raise Unprocessable(
                        f"the upload holds {len(parts)} of its {count} parts",
                        code="upload_incomplete",
                        details={"offset": upload.offset, "size": upload.size,
                                 "missing": missing[:100]})
            elif upload.size is not None and total != upload.size:
                raise Unprocessable(f"the upload holds {total} of its announced "
                                    f"{upload.size} bytes", code="upload_incomplete",
                                    details={"offset": total, "size": upload.size})
            version = files.draft(str(version.model.name), str(version.number), lock=True)
            try:
                check_upload(db, self.settings, version, upload.path, total,
                             upload_id=upload.id)
            except Unprocessable as exc:
                refused = exc
            else:
                upload.completing_until = now + dt.timedelta(
                    seconds=claim_timeout(self.settings))
            state, described = upload.state, [p.state for p in parts]
            path, media, upload_id = upload.path, upload.media_type, upload.id
            model_name, number = version.model.name, str(version.number)
        if refused is not None:  # what the size rules refuse is deleted at once
            self._drop(public_id, state)
            raise refused
        try:
            info = self.store.complete_parts(state, described, expected_sha256=sha256)
        except DigestMismatch as exc:
            snapshot = self._release(public_id)
            raise DigestRefused(
                "the content does not match the digest sent; the upload keeps its parts: "
                "send again those that differ (delete them first) and complete again",
                details={"expected": DIGEST_PREFIX + exc.expected,
                         "actual": DIGEST_PREFIX + exc.actual,
                         "size": total, "parts": snapshot.parts}) from None
        except BaseException:
            self._release(public_id)
            raise
        with self._transaction() as files:
            touch_blob(files.db, info)
        try:
            with self._transaction() as files:
                version = files.draft(model_name, number, lock=True)
                check_upload(files.db, self.settings, version, path, info.size,
                             upload_id=upload_id)
                file, outcome = files.add_file(version, path, info, media)
                files.db.execute(sa.delete(UploadSession).where(
                    UploadSession.public_id == public_id))
                return file_json(file), outcome
        except ApiError:
            # Refused under the version's lock (a rule, or the version left draft): the
            # session is over and its content is deleted now, unless a file holds it.
            self._drop(public_id, None)
            self.discard_blob(info)
            raise

    def _release(self, public_id: str) -> UploadSnapshot:
        with self._transaction() as files:
            upload, version = self._lock(files.db, public_id)
            upload.completing_until = None
            return self._snapshot(files.db, upload, version)

    def _drop(self, public_id: str, state: dict[str, Any] | None) -> None:
        with self._transaction() as files:
            files.db.execute(sa.delete(UploadSession).where(
                UploadSession.public_id == public_id))
        if state is not None:
            self.store.abort_upload(state)

    def discard_blob(self, info: BlobInfo) -> None:
        """Delete a blob no file holds, now rather than at the next garbage collection.

        As garbage collection does (:mod:`.gc`): the blob's row is locked, checked to be
        unreferenced and deleted, then the object; an upload of the same bytes racing with
        it finds the blob gone under its own lock and answers 503 (upload again).
        """
        with self._transaction() as files:
            db = files.db
            row = db.scalar(sa.select(Blob).where(Blob.sha256 == info.sha256)
                            .with_for_update())
            held = db.scalar(sa.select(File.id).where(File.sha256 == info.sha256).limit(1))
            if held is not None:
                return
            if row is not None:
                db.delete(row)
                db.flush()
            self.store.delete(info.sha256)

    def abort(self, public_id: str) -> None:
        """Abort a session and free what it received (409 while it is being completed)."""
        with self._transaction() as files:
            upload, _version = self._lock(files.db, public_id)
            self._check_not_completing(upload, utcnow())
            if upload.status == "verifying":  # the worker concludes it (see .direct)
                raise Conflict("the upload is complete and its digest is being verified",
                               code="upload_verifying", headers={"Retry-After": "2"})
            state = upload.state
            files.db.execute(sa.delete(UploadSession).where(
                UploadSession.public_id == public_id))
        self.store.abort_upload(state)
