"""Tables of model files: the files of a version, the blobs they share, upload sessions.

A :class:`File` names a blob by its sha256; a :class:`Blob` row exists for every blob the
registry knows of, so that garbage collection finds the unreferenced ones with a query (a
transaction that references a blob touches its row first: see :mod:`modelreg.files.blobs`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .meta import TABLE_ARGS, Base, JSONDoc, Timestamp, utcnow
from .registry import ACTOR_LENGTH

#: Longest file path in characters (MariaDB indexes at most 3072 bytes of utf8mb4).
PATH_LENGTH = 512
SHA256_HEX_LENGTH = 64
MEDIA_TYPE_LENGTH = 255
#: Length of an upload session's public id (hex).
UPLOAD_ID_LENGTH = 32


class Blob(Base):
    """Content the blob store holds, by sha256: one row however many files share it."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(sa.String(SHA256_HEX_LENGTH), primary_key=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    #: Set by every transaction that references the blob; GC spares recent ones.
    last_referenced_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (sa.Index("ix_blobs_last_referenced_at", "last_referenced_at"),
                      TABLE_ARGS)


class File(Base):
    """A file of a version: a relative POSIX path naming a blob."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(sa.String(PATH_LENGTH))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.ForeignKey("blobs.sha256"))
    media_type: Mapped[str] = mapped_column(sa.String(MEDIA_TYPE_LENGTH),
                                            default="application/octet-stream")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))

    __table_args__ = (
        sa.UniqueConstraint("version_id", "path", name="uq_files_version_id_path"),
        sa.Index("ix_files_sha256", "sha256"),
        TABLE_ARGS,
    )


class UploadSession(Base):
    """A resumable upload of one file of a draft, owned by the principal that opened it."""

    __tablename__ = "upload_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The random id the API shows (``/api/v1/uploads/{public_id}``).
    public_id: Mapped[str] = mapped_column(sa.String(UPLOAD_ID_LENGTH), unique=True)
    #: ``NULL`` once the version is deleted: GC then aborts the upload.
    version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("versions.id", ondelete="SET NULL"))
    path: Mapped[str] = mapped_column(sa.String(PATH_LENGTH))
    media_type: Mapped[str] = mapped_column(sa.String(MEDIA_TYPE_LENGTH),
                                            default="application/octet-stream")
    #: The principal that opened it (``None``: an anonymous caller of an open registry).
    owner: Mapped[str | None] = mapped_column(sa.String(ACTOR_LENGTH))
    #: The blob store's own state of the upload (opaque JSON).
    state: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    #: Bytes received so far (the sum of the received parts).
    offset: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: The size of every part but the last, for uploads in numbered parts (``PUT
    #: …/parts/{n}``); ``NULL`` for uploads in sequential chunks (``PATCH``).
    part_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: Set while a completion assembles the parts (no part may change meanwhile); a
    #: completion that died is forgotten once this time has passed.
    completing_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The size and digest the client announced, if it did.
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    sha256: Mapped[str | None] = mapped_column(sa.String(SHA256_HEX_LENGTH))
    #: The parts go straight to the blob store (presigned URLs, :mod:`modelreg.files.direct`).
    direct: Mapped[bool] = mapped_column(sa.Boolean, default=False,
                                         server_default=sa.false())
    #: ``open``; ``verifying`` (a direct upload completed, its digest not yet checked by
    #: the worker); ``refused`` (the check failed: ``error`` says why; its bytes are gone).
    status: Mapped[str] = mapped_column(sa.String(16), default="open", server_default="open")
    #: Why a ``refused`` session was refused: ``{"code", "message", "details"}``.
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (
        sa.Index("ix_upload_sessions_expires_at", "expires_at"),
        sa.Index("ix_upload_sessions_version_id", "version_id"),
        sa.Index("ix_upload_sessions_owner", "owner"),
        TABLE_ARGS,
    )


class UploadPart(Base):
    """A part of an upload session, claimed before its bytes are written.

    The row is inserted (its number claimed) in a transaction that holds the session's
    row lock; a second sender of the number finds it and is refused, so its bytes are never
    written.  ``claimed_until`` is set while the bytes are being received (a sender that
    died frees the number once it has passed) and ``NULL`` once they are stored.
    """

    __tablename__ = "upload_parts"

    id: Mapped[int] = mapped_column(primary_key=True)
    upload_id: Mapped[int] = mapped_column(
        sa.ForeignKey("upload_sessions.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(sa.Integer)
    #: Where the part starts in the file, and its length.
    start: Mapped[int] = mapped_column(sa.BigInteger)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    #: The part's digest once received (``NULL`` while it is being received).
    sha256: Mapped[str | None] = mapped_column(sa.String(SHA256_HEX_LENGTH))
    #: The blob store's description of the stored part (opaque JSON).
    state: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    #: A random token naming the request that claimed the part.
    claim: Mapped[str] = mapped_column(sa.String(UPLOAD_ID_LENGTH))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("upload_id", "number", name="uq_upload_parts_upload_id_number"),
        TABLE_ARGS,
    )


#: Longest owner and key of a :class:`BlobHold`.
HOLD_OWNER_LENGTH = 100
HOLD_KEY_LENGTH = 255


class BlobHold(Base):
    """A blob a plugin keeps although no version references it (run artifacts, staging).

    One hold per ``(owner, key)``: the owner is the plugin's name, the key its own name for
    the thing (e.g. a run's artifact path).  Garbage collection spares held blobs
    (:mod:`modelreg.files.gc`); :meth:`modelreg.plugin_api.Registry.hold_blob` sets one.
    """

    __tablename__ = "blob_holds"

    owner: Mapped[str] = mapped_column(sa.String(HOLD_OWNER_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(HOLD_KEY_LENGTH), primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.ForeignKey("blobs.sha256"))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (sa.Index("ix_blob_holds_sha256", "sha256"), TABLE_ARGS)
