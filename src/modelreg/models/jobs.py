"""Tables of background work: the job queue and the findings of scans
(docs/architecture.md, "Jobs")."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .files import PATH_LENGTH
from .meta import TABLE_ARGS, Base, JSONDoc, Timestamp, utcnow

#: Job statuses: waiting (or waiting for a retry), claimed by a worker, finished, given up.
JOB_STATUSES = ("queued", "running", "done", "failed")


class Job(Base):
    """A unit of background work, claimed by one worker at a time under a lease.

    A worker sets ``locked_by`` and ``locked_until`` when it claims the job; a job still
    ``running`` after its lease ran out belongs to a worker that died, and is claimed again.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: What to do, e.g. ``scan_version``; the worker knows a handler for each kind.
    kind: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    #: Claims made so far (a claim whose worker died counts too).
    attempts: Mapped[int] = mapped_column(default=0)
    #: Not claimed before this time (backoff after a failure).
    run_after: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(sa.String(128))
    locked_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (sa.Index("ix_jobs_status_run_after", "status", "run_after"), TABLE_ARGS)


class ScanFinding(Base):
    """What a scanner found in one file of a version (kept whether it rejected or not)."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(sa.String(PATH_LENGTH))
    #: The plugin (its registered name) that reported it.
    scanner: Mapped[str] = mapped_column(sa.String(128))
    severity: Mapped[str] = mapped_column(sa.String(16))
    code: Mapped[str] = mapped_column(sa.String(64))
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (sa.Index("ix_findings_version_id", "version_id"), TABLE_ARGS)


class WorkerBeat(Base):
    """A worker's last sign of life, so that ``/readyz`` and finalize can tell when jobs wait
    with no worker running (one row per worker process, refreshed while it polls)."""

    __tablename__ = "workers"
    __table_args__ = (sa.Index("ix_workers_seen_at", "seen_at"), TABLE_ARGS)

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

