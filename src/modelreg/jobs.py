"""Jobs: the queue in the database, and the kinds of job the worker knows.

A feature registers each kind it queues at configure time with ``config.add_job_kind(kind,
run, give_up)``; the worker (:mod:`modelreg.worker.runner`) finds the handlers in the
registry (:func:`job_kinds`), so the domain enqueues by kind name and neither side imports
the other (docs/architecture.md).

The queue: enqueue in the caller's transaction, claim under a lease.

A claim is a short writing transaction of its own: the oldest due job is selected with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB ≥ 10.6), so concurrent workers take
different jobs without waiting for each other; on SQLite the writing transaction begins
with ``BEGIN IMMEDIATE`` (:func:`modelreg.db.writer_engine`), which lets one writer in at a
time, and SQLAlchemy renders no ``FOR UPDATE`` there.  A claimed job is ``running`` until
``locked_until``; a worker that dies leaves it to be claimed again once the lease runs out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from sqlalchemy.orm import Session

from . import keys
from .models import Job, WorkerBeat, utcnow
from .settings import WORKER_STALE_AFTER

#: Longest error text kept on a job or an outbox row.
MAX_ERROR = 4000


@dataclass(frozen=True)
class JobKind:
    """How to run a kind of job, and what to do when it failed too often.

    ``run(worker, payload, heartbeat)`` does the work (``heartbeat()`` renews the lease);
    ``give_up(worker, payload, error)`` concludes a job that failed for good.  ``worker`` is
    the :class:`~modelreg.worker.runner.Worker` running it (its ``transaction()``, ``hook``,
    ``settings``, ``store`` and ``id``).
    """

    run: Callable[[Any, dict[str, Any], Callable[[], None]], None]
    give_up: Callable[[Any, dict[str, Any], str], None]


def add_job_kind(
    config: Configurator, kind: str, run: Callable[..., None], give_up: Callable[..., None]
) -> None:
    """The ``config.add_job_kind(kind, run, give_up)`` directive: teach the worker a kind of
    job.  A kind registered twice is a configuration error."""
    kinds = config.registry.setdefault(keys.JOB_KINDS, {})
    if kind in kinds:
        raise ValueError(f"job kind {kind!r} is registered twice")
    kinds[kind] = JobKind(run, give_up)


def job_kinds(registry: Any) -> Mapping[str, JobKind]:
    """The kinds of job registered in a Pyramid registry (empty when none)."""
    return dict(registry.get(keys.JOB_KINDS, {}))


def includeme(config: Configurator) -> None:
    """Add the ``add_job_kind`` directive."""
    config.add_directive("add_job_kind", add_job_kind)
    config.registry.setdefault(keys.JOB_KINDS, {})


def enqueue(dbsession: Session, kind: str, payload: dict[str, Any]) -> Job:
    """Queue a job in the caller's transaction: it exists only if that transaction commits."""
    now = utcnow()
    job = Job(kind=kind, payload=payload, status="queued", attempts=0, run_after=now,
              created_at=now, updated_at=now)
    dbsession.add(job)
    return job


def claim(dbsession: Session, worker_id: str, lease: dt.timedelta) -> Job | None:
    """Claim the oldest due job for ``worker_id`` (queued and due, or running past its
    lease), in the caller's writing transaction, which should commit at once.

    :returns: the job, now ``running`` with its attempts counted, or ``None``.
    """
    now = utcnow()
    due = sa.or_(
        sa.and_(Job.status == "queued", Job.run_after <= now),
        sa.and_(Job.status == "running", Job.locked_until < now),
    )
    job = dbsession.scalars(
        sa.select(Job).where(due).order_by(Job.id).limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        return None
    job.status = "running"
    job.attempts += 1
    job.locked_by = worker_id
    job.locked_until = now + lease
    job.updated_at = now
    return job


def renew(dbsession: Session, job_id: int, worker_id: str, lease: dt.timedelta) -> bool:
    """Extend the lease of a job this worker holds; ``False`` if it lost the job."""
    now = utcnow()
    result = dbsession.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
        .values(locked_until=now + lease, updated_at=now)
    )
    return result.rowcount == 1


def finish(dbsession: Session, job_id: int, worker_id: str) -> bool:
    """Mark a job this worker holds as done; ``False`` when it holds it no longer."""
    result = dbsession.execute(
        sa.update(Job).where(Job.id == job_id, Job.locked_by == worker_id)
        .values(status="done", locked_by=None, locked_until=None, updated_at=utcnow())
    )
    return result.rowcount == 1


def retry_later(
    dbsession: Session, job_id: int, worker_id: str, error: str, delay: dt.timedelta,
    *, give_up: bool = False,
) -> None:
    """Record a failure of a job this worker holds: queue it again after ``delay``, or mark
    it ``failed`` for good when ``give_up``."""
    now = utcnow()
    dbsession.execute(
        sa.update(Job).where(Job.id == job_id, Job.locked_by == worker_id)
        .values(status="failed" if give_up else "queued", run_after=now + delay,
                locked_by=None, locked_until=None, last_error=error[:MAX_ERROR],
                updated_at=now)
    )


def backoff(attempts: int, base: float = 2.0, cap: float = 3600.0) -> dt.timedelta:
    """The delay before the next attempt after ``attempts`` failed ones (exponential,
    capped)."""
    return dt.timedelta(seconds=min(cap, base ** max(0, attempts - 1)))


# ----------------------------------------------------------------------------- liveness

#: Seconds without a sign of life after which a worker counts as gone (setting
#: ``modelreg.worker.stale_after``): ``/readyz`` and finalize then say that jobs wait.
STALE_SETTING = WORKER_STALE_AFTER
DEFAULT_STALE_AFTER = 60.0
#: Rows of workers not seen for this long are deleted when a worker starts.
FORGET_AFTER = dt.timedelta(days=1)


def stale_after(settings: dict[str, Any]) -> dt.timedelta:
    """``modelreg.worker.stale_after`` (default 60 s); a wrong value stops start-up."""
    raw = settings.get(STALE_SETTING, DEFAULT_STALE_AFTER)
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"{STALE_SETTING} must be a positive number of seconds, not {raw!r}")
    return dt.timedelta(seconds=seconds)


def beat(dbsession: Session, worker_id: str) -> None:
    """Record that ``worker_id`` is alive, in the caller's writing transaction (a worker
    calls it as it polls); its first beat also forgets workers gone for a day."""
    now = utcnow()
    seen = dbsession.execute(
        sa.update(WorkerBeat).where(WorkerBeat.id == worker_id).values(seen_at=now)
    ).rowcount
    if not seen:
        dbsession.execute(sa.delete(WorkerBeat).where(WorkerBeat.seen_at < now - FORGET_AFTER))
        dbsession.add(WorkerBeat(id=worker_id, started_at=now, seen_at=now))


def forget(dbsession: Session, worker_id: str) -> None:
    """Remove the row of a worker that stops cleanly."""
    dbsession.execute(sa.delete(WorkerBeat).where(WorkerBeat.id == worker_id))


def last_seen(dbsession: Session) -> dt.datetime | None:
    """When any worker last showed a sign of life, or ``None`` if none ever did."""
    return dbsession.scalar(sa.select(sa.func.max(WorkerBeat.seen_at)))


def _ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "no worker has run yet"
    return f"no worker has been seen for {int((now - moment).total_seconds())} s"


#: What an operator does about jobs that no worker runs.
NO_WORKER_HINT = ("run `modelreg worker <ini>`, or set modelreg.worker.embedded = true "
                  "(docs/operations.md)")


def waiting_without_worker(dbsession: Session, stale: dt.timedelta) -> str | None:
    """For ``/readyz``: a sentence when due jobs have waited longer than ``stale`` and no
    worker was seen within it; ``None`` when the queue is served (or empty)."""
    now = utcnow()
    due = sa.and_(Job.status == "queued", Job.run_after <= now - stale)
    count = dbsession.scalar(sa.select(sa.func.count()).select_from(Job).where(due))
    if not count:
        return None
    seen = last_seen(dbsession)
    if seen is not None and seen >= now - stale:
        return None
    return (f"{count} job(s) have waited over {stale.total_seconds():g} s and "
            f"{_ago(seen, now)}: {NO_WORKER_HINT}")


def no_worker_notice(dbsession: Session, stale: dt.timedelta) -> str | None:
    """For a request that just queued a job (finalize): a sentence when no worker was seen
    within ``stale``, so that the job may wait for good; ``None`` otherwise."""
    now = utcnow()
    seen = last_seen(dbsession)
    if seen is not None and seen >= now - stale:
        return None
    return f"{_ago(seen, now)}, so this version stays validating until one runs: " \
        f"{NO_WORKER_HINT}"
