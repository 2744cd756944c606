"""Garbage collection of blobs and upload sessions (``modelreg gc``), safe while serving.

The mechanism (docs/architecture.md, "Files and blobs"):

* every transaction that references a blob first *touches* its row
  (:func:`~modelreg.files.services.touch_blob`: ``last_referenced_at`` = now, and on
  PostgreSQL and MariaDB a row lock until it ends), and a stored blob's row is touched in a
  transaction of its own right after the bytes are stored, before any file refers to it;
* garbage collection, in one transaction per batch, locks the rows of blobs that no file
  references and that nobody touched for a grace period, skipping rows another transaction
  holds (``FOR UPDATE SKIP LOCKED``; SQLite serializes writers instead), deletes those rows,
  then their objects, and commits.

An upload whose bytes were stored but whose file is not yet recorded therefore keeps its
blob: its row is fresh (the grace period) or locked.  If collection wins the race anyway
(a grace period shorter than an upload's last step), the uploader finds the blob gone once
it holds the row's lock and answers 503 instead of recording a file without content
(:meth:`~modelreg.files.services.FileService.add_file`).

A file added by digest, without bytes (:meth:`~modelreg.files.services.FileService.link_file`),
locks the blob's row (``FOR UPDATE``) before it checks that the blob exists and that a
version the caller may read holds it, and touches the row before adding the file: collection
either skips the locked row, or has deleted it by the time the lock is granted and the link
answers 404 (the client then uploads the bytes).

Upload sessions that expired, or whose version was deleted, are aborted in the store (their
temporary data freed) and deleted.

Retention (:mod:`modelreg.policy`) archives a version by deleting its file rows (keeping
their list on the version) or deletes it, so either way only references are dropped, as when
a user deletes a version.  It runs before collection in ``modelreg gc``
(:func:`apply_retention_everywhere`), so that one run frees what it archived or deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ..db import database_parts, transaction, writer_engine
from ..models import Blob, BlobHold, File, UploadSession, Version, utcnow
from ..policy import ARCHIVED, RETAINED_STATUSES, RETENTION_ACTOR, policy_rules
from ..registry.services import RegistryService

log = logging.getLogger(__name__)

#: Rows handled per transaction.
BATCH_SIZE = 500
#: The default grace period: blobs touched more recently than this are kept.
DEFAULT_GRACE = dt.timedelta(hours=1)


@dataclass
class GcReport:
    """What a collection deleted (or, in a dry run, would delete).

    :ivar blobs: ``(sha256, size)`` of each blob.
    :ivar uploads: public ids of the upload sessions.
    """

    dry_run: bool
    blobs: list[tuple[str, int]] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        """Bytes of the blobs deleted."""
        return sum(size for _, size in self.blobs)


def collect_garbage(
    session_factory: sessionmaker[Session],
    engine: sa.Engine,
    store: Any,
    *,
    grace: dt.timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> GcReport:
    """Delete unreferenced blobs older than ``grace`` and stale upload sessions.

    :param dry_run: only report what would be deleted; change nothing.
    :raises StorageError: when the store fails; the batch at hand is rolled back (its rows
        stay, so the next run tries again).
    """
    now = now or utcnow()
    report = GcReport(dry_run=dry_run)
    writer = writer_engine(engine)
    _collect_uploads(session_factory, writer, store, report, now, batch_size)
    _collect_blobs(session_factory, writer, store, report, now - grace, batch_size)
    return report


@contextmanager
def _batch(session_factory: sessionmaker[Session], engine: sa.Engine) -> Iterator[Session]:
    """A writing session in a transaction of its own (:func:`modelreg.db.transaction`),
    committed when the block ends."""
    with transaction(database_parts(engine, session_factory), write=True) as db:
        yield db


def _collect_uploads(session_factory: sessionmaker[Session], engine: sa.Engine, store: Any,
                     report: GcReport, now: dt.datetime, batch_size: int) -> None:
    last, more = 0, True
    while more:
        with _batch(session_factory, engine) as db:
            uploads = db.scalars(
            sa.select(UploadSession)
            .where(sa.or_(UploadSession.expires_at <= now, UploadSession.version_id.is_(None)),
                   UploadSession.id > last)
            .order_by(UploadSession.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
            ).all()
            for upload in uploads:
                report.uploads.append(upload.public_id)
                if not report.dry_run:
                    store.abort_upload(upload.state)
                    db.delete(upload)
            more = len(uploads) == batch_size
            last = uploads[-1].id if uploads else last


def _collect_blobs(session_factory: sessionmaker[Session], engine: sa.Engine, store: Any,
                   report: GcReport, cutoff: dt.datetime, batch_size: int) -> None:
    referenced = sa.select(File.id).where(File.sha256 == Blob.sha256).exists()
    # Blobs a plugin holds (modelreg.api: Registry.hold_blob) are referenced as well.
    held = sa.select(BlobHold.key).where(BlobHold.sha256 == Blob.sha256).exists()
    last, more = "", True
    while more:
        with _batch(session_factory, engine) as db:
            blobs = db.scalars(
                sa.select(Blob)
                .where(Blob.last_referenced_at < cutoff, ~referenced, ~held, Blob.sha256 > last)
                .order_by(Blob.sha256)
                .limit(batch_size)
                .with_for_update(skip_locked=True, of=Blob)
            ).all()
            found = [(blob.sha256, blob.size) for blob in blobs]
            if not report.dry_run and blobs:
                # Rows first (locked until the commit), then the objects: a failure rolls the
                # rows back, and no committed row ever names a deleted object.
                for blob in blobs:
                    db.delete(blob)
                db.flush()
                for sha256, _ in found:
                    store.delete(sha256)
                    log.info("deleted blob sha256:%s", sha256)
            report.blobs.extend(found)
            more = len(blobs) == batch_size
            last = found[-1][0] if found else last


def apply_retention_everywhere(
    session_factory: sessionmaker[Session],
    engine: sa.Engine,
    hook: Any,
    settings: dict[str, Any],
    *,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Apply retention (``modelreg.policy.retention.*``) to every model, one transaction per
    model; nothing when retention is not configured.

    :returns: ``{"model", "version", "action"}`` of every version archived or deleted (or,
        in a dry run, that would be).
    """
    policy = policy_rules(settings)
    if not policy.retention:
        return []
    writer = writer_engine(engine)
    # Only models with more candidates than they keep (an upper bound: aliased versions
    # are left out later, under the model's lock), and, for delete, those with archived ones.
    crowded = (
        sa.select(Version.model_id)
        .where(Version.status.in_(RETAINED_STATUSES))
        .group_by(Version.model_id)
        .having(sa.func.count() > policy.keep_last)
    )
    if policy.retention_action == "delete":
        crowded = crowded.union(
            sa.select(Version.model_id).where(Version.status == ARCHIVED).distinct())
    with _batch(session_factory, writer) as db:
        model_ids = sorted(db.scalars(crowded).all())
    done: list[dict[str, Any]] = []
    for model_id in model_ids:
        with _batch(session_factory, writer) as db:
            service = RegistryService(db, hook, settings, actor=RETENTION_ACTOR)
            done += service.apply_retention(model_id, dry_run=dry_run)
    return done
