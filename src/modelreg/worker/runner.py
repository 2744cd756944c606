"""The worker: claims jobs and delivers outbox events to ``modelreg_on_event``.

:class:`Worker` is what ``modelreg worker <ini>`` runs, and what the embedded worker thread
runs inside the app (``modelreg.worker.embedded = true``).  Every step is a short transaction
of its own; nothing is kept in memory between steps, so any number of workers (in any
number of processes and machines) can share one database.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .. import jobs as queue
from .. import keys
from ..db import database_parts, get_engine, get_session_factory, mark_changed, writer_engine
from ..db import transaction as db_transaction
from ..jobs import JobKind
from ..models import OutboxEvent, utcnow
from ..settings import WORKER_LEASE, WORKER_MAX_ATTEMPTS, WORKER_MAX_BACKOFF, WORKER_POLL_INTERVAL
from ..storage import get_blob_store
from ..types import Event

log = logging.getLogger(__name__)

LEASE_SETTING = WORKER_LEASE
MAX_ATTEMPTS_SETTING = WORKER_MAX_ATTEMPTS
POLL_SETTING = WORKER_POLL_INTERVAL
RETRY_CAP_SETTING = WORKER_MAX_BACKOFF


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[: queue.MAX_ERROR]


class Heartbeat:
    """The ``heartbeat`` a job's handler calls to renew its lease; it also names the job
    (``job_id``), for a handler that queues its own continuation in the transaction that
    finishes it (:mod:`modelreg.scanning.jobs`)."""

    def __init__(self, worker: Worker, job_id: int) -> None:
        self.worker = worker
        self.job_id = job_id

    def __call__(self) -> None:
        """Extend the lease of the job, and show that the worker is alive."""
        with self.worker.transaction(write=True) as db:
            queue.renew(db, self.job_id, self.worker.id, self.worker.lease)
            queue.beat(db, self.worker.id)


class Worker:
    """Runs jobs and delivers events for one deployment.

    :param settings: the application settings (``modelreg.worker.*`` among them).
    :param pm: the plugin manager.
    :param engine: the database engine (built from the settings, and disposed by
        :meth:`close`, when not given).
    :param store: the blob store (built from the settings when not given).
    :param job_kinds: the kinds of job it runs (:func:`modelreg.jobs.job_kinds` of the
        app's registry); a job of another kind fails for good.  :meth:`from_registry` builds
        a worker from an assembled app.
    """

    def __init__(
        self, settings: dict[str, Any], pm: Any, *, engine: Engine | None = None,
        store: Any | None = None, job_kinds: Mapping[str, JobKind] | None = None,
    ) -> None:
        self.settings = settings
        self.job_kinds = dict(job_kinds or {})
        self.pm = pm
        self.hook = pm.hook
        self._own_engine = engine is None
        self.engine = engine if engine is not None else get_engine(settings)
        self.session_factory = get_session_factory(self.engine)
        self.writer = writer_engine(self.engine)
        self._database = database_parts(self.engine, self.session_factory)
        self.store = store if store is not None else get_blob_store(settings, pm.hook)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = dt.timedelta(seconds=float(settings.get(LEASE_SETTING, 300)))
        self.max_attempts = int(settings.get(MAX_ATTEMPTS_SETTING, 5))
        self.poll_interval = float(settings.get(POLL_SETTING, 2))
        self.max_backoff = float(settings.get(RETRY_CAP_SETTING, 3600))
        #: A sign of life at least this often (``/readyz`` and finalize read it).
        self.beat_interval = queue.stale_after(settings).total_seconds() / 4

    @classmethod
    def from_registry(
        cls, registry: Any, settings: dict[str, Any] | None = None, *, own_engine: bool = False
    ) -> Worker:
        """A worker of an app assembled by :func:`modelreg.config.configure`: its plugins,
        blob store and job kinds, and its engine unless ``own_engine`` (a thread or process
        of its own builds one from the settings).

        :param settings: settings to add to the app's (e.g. for one run in a test).
        """
        return cls({**registry.settings, **(settings or {})}, registry[keys.PLUGIN_MANAGER],
                   engine=None if own_engine else registry[keys.DB_ENGINE],
                   store=registry[keys.BLOB_STORE], job_kinds=queue.job_kinds(registry))

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Session]:
        """A session in a transaction of its own (:func:`modelreg.db.transaction`),
        committed when the block succeeds."""
        with db_transaction(self._database, write=write) as db:
            yield db

    def close(self) -> None:
        """Release the database connections, if the worker built its engine."""
        if self._own_engine:
            self.engine.dispose()

    # ----------------------------------------------------------------------- loop

    def run_once(self) -> int:
        """Run every due job and deliver every due event, until none is left.

        :returns: how many jobs and deliveries were attempted.
        """
        total = 0
        while True:
            done = 0
            while self.run_job():
                done += 1
            done += self.deliver_events()
            total += done
            if not done:
                return total

    def run_forever(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, polling every ``modelreg.worker.poll_interval`` s.

        A failure of the database or the blob store is logged and the loop goes on.
        """
        last_beat: float | None = None
        while not stop.is_set():
            try:
                if last_beat is None or time.monotonic() - last_beat >= self.beat_interval:
                    self.beat()
                    last_beat = time.monotonic()
                self.run_once()
            except Exception:
                log.exception("worker %s: a step failed; trying again shortly", self.id)
            stop.wait(self.poll_interval)
        try:
            with self.transaction(write=True) as db:
                queue.forget(db, self.id)
        except Exception:  # the row goes stale by itself
            log.warning("worker %s: could not remove its row on the way out", self.id)

    def beat(self) -> None:
        """Show a sign of life (see :func:`modelreg.jobs.beat`)."""
        with self.transaction(write=True) as db:
            queue.beat(db, self.id)

    # ----------------------------------------------------------------------- jobs

    def run_job(self) -> bool:
        """Claim and run one due job; ``False`` when none is due."""
        with self.transaction(write=True) as db:
            job = queue.claim(db, self.id, self.lease)
            if job is None:
                return False
            job_id, kind, payload = job.id, job.kind, dict(job.payload)
            attempts, last_error = job.attempts, job.last_error
        handler = self.job_kinds.get(kind)
        if handler is None:
            self._job_failed(job_id, f"unknown job kind {kind!r}", attempts, give_up=True)
            return True
        if attempts > self.max_attempts:  # earlier workers died holding it
            self._give_up(handler, job_id, payload,
                          last_error or "the worker running it stopped", attempts)
            return True
        log.info("worker %s: running job %s (%s), attempt %s", self.id, job_id, kind, attempts)

        heartbeat = Heartbeat(self, job_id)
        try:
            handler.run(self, payload, heartbeat)
        except Exception as exc:
            log.exception("worker %s: job %s (%s) failed", self.id, job_id, kind)
            if attempts >= self.max_attempts:
                self._give_up(handler, job_id, payload, _error_text(exc), attempts)
            else:
                self._job_failed(job_id, _error_text(exc), attempts)
            return True
        with self.transaction(write=True) as db:
            queue.finish(db, job_id, self.id)
        return True

    def _give_up(
        self, handler: JobKind, job_id: int, payload: dict[str, Any], error: str, attempts: int
    ) -> None:
        try:
            handler.give_up(self, payload, error)
        except Exception as exc:  # leave it queued: giving up must happen some day
            log.exception("worker %s: giving up job %s failed", self.id, job_id)
            self._job_failed(job_id, _error_text(exc), attempts)
            return
        self._job_failed(job_id, error, attempts, give_up=True)

    def _job_failed(self, job_id: int, error: str, attempts: int, give_up: bool = False) -> None:
        with self.transaction(write=True) as db:
            queue.retry_later(db, job_id, self.id, error,
                              queue.backoff(attempts, cap=self.max_backoff), give_up=give_up)

    # --------------------------------------------------------------------- events

    def deliver_events(self, limit: int = 100) -> int:
        """Hand due outbox events to ``modelreg_on_event``, oldest first, in order per model.

        Only the oldest undelivered event of each model is due (and only once its backoff
        passed and no other worker holds it), so an event is delivered after every earlier
        event of its model.  A delivery is claimed with a lease before the hook runs and
        marked after it returns: a worker that dies in between leaves it to be delivered
        again (at least once).  A hook that raises makes the event due again after a
        backoff, and holds back the later events of its model meanwhile.

        In batches: one transaction claims, for each model whose oldest event is due, that
        event and the ones after it (up to ``limit`` in all), and one transaction marks them
        all once the hook has seen them (delivered, or the failed one backing off and the
        rest of its model released).  A stream of writes to one model is then delivered
        ``limit`` events at a time, not one per poll with two commits each (the cost of a
        write again, docs/performance.md, "Write path").

        With no plugin implementing the hook there is nobody to hand events to, in any order:
        every undelivered event is marked delivered in one statement (:meth:`_retire_events`).

        :returns: how many deliveries were attempted.
        """
        if not self.hook.modelreg_on_event.get_hookimpls():
            return self._retire_events()
        claimed = self._claim_events(limit)
        if not claimed:
            return 0
        attempted = 0
        delivered: list[int] = []
        released: list[int] = []
        failed: list[tuple[int, dict[str, Any]]] = []
        blocked: set[str | None] = set()  # models whose delivery failed in this batch
        for row_id, event, attempts in claimed:
            if event.model in blocked:
                released.append(row_id)
                continue
            attempted += 1
            try:
                self.hook.modelreg_on_event(event=event, settings=self.settings)
            except Exception as exc:
                log.exception("worker %s: delivering event %s failed", self.id, event.id)
                delay = queue.backoff(attempts + 1, cap=self.max_backoff)
                failed.append((row_id, {"attempts": attempts + 1,
                                        "next_attempt_at": utcnow() + delay,
                                        "last_error": _error_text(exc), "locked_until": None}))
                blocked.add(event.model)
            else:
                delivered.append(row_id)
        outbox = OutboxEvent.__table__
        with self.transaction(write=True) as db:
            if delivered:
                db.execute(sa.update(outbox).where(outbox.c.id.in_(delivered)).values(
                    attempts=outbox.c.attempts + 1, delivered_at=utcnow(), last_error=None,
                    locked_until=None))
            for row_id, values in failed:
                db.execute(sa.update(outbox).where(outbox.c.id == row_id).values(**values))
            if released:
                db.execute(sa.update(outbox).where(outbox.c.id.in_(released))
                           .values(locked_until=None))
            mark_changed(db)  # Core statements: commit, not roll back
        return attempted

    def _claim_events(self, limit: int) -> list[tuple[int, Event, int]]:
        """Claim the due events of a batch (:meth:`deliver_events`): ``(row id, event,
        attempts so far)``, oldest first, each model's events from its oldest undelivered
        one with no gap."""
        now = utcnow()
        until = now + self.lease
        outbox = OutboxEvent.__table__
        free = sa.and_(
            sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
            sa.or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < now))
        heads = (sa.select(sa.func.min(outbox.c.id)).where(outbox.c.delivered_at.is_(None))
                 .group_by(outbox.c.model))
        with self.transaction(write=True) as db:
            models = set(db.scalars(
                sa.select(outbox.c.model)
                .where(outbox.c.id.in_(heads.scalar_subquery()), free)
                .order_by(outbox.c.id).limit(limit)
            ))
            if not models:
                return []
            named = [model for model in models if model is not None]
            of_models = outbox.c.model.in_(named) if named else sa.false()
            if None in models:
                of_models = sa.or_(of_models, outbox.c.model.is_(None))
            # Each model's undelivered events in order, cut at the first one not free
            # (held, or backing off): the events after it wait for it.
            runs: dict[int, str | None] = {}
            stopped: set[str | None] = set()
            for row_id, model, is_free in db.execute(
                sa.select(outbox.c.id, outbox.c.model, free)
                .where(outbox.c.delivered_at.is_(None), of_models)
                .order_by(outbox.c.id).limit(limit)
            ):
                if model in stopped:
                    continue
                if not is_free:
                    stopped.add(model)
                    continue
                runs[row_id] = model
            if not runs:
                return []
            db.execute(sa.update(outbox)
                       .where(outbox.c.id.in_(runs), outbox.c.delivered_at.is_(None), free)
                       .values(locked_until=until))
            mark_changed(db)  # a Core statement: commit, not roll back
            # What this worker holds now (another may have claimed some first): again each
            # model's events up to the first it does not hold.
            rows = {row.id: row for row in db.execute(
                sa.select(outbox).where(outbox.c.id.in_(runs), outbox.c.locked_until == until))}
        claimed = []
        stopped = set()
        for row_id, model in runs.items():
            row = rows.get(row_id)
            if row is None or model in stopped:
                stopped.add(model)
                if row is not None:  # held, but after a gap: let it go again
                    released = sa.update(outbox).where(outbox.c.id == row_id)
                    with self.transaction(write=True) as db:
                        db.execute(released.values(locked_until=None))
                        mark_changed(db)
                continue
            claimed.append((row_id, Event(
                id=row.event_id, type=row.type, model=row.model, payload=dict(row.payload),
                # Stored as naive UTC; plugins get an aware time.
                created_at=row.created_at.replace(tzinfo=dt.UTC)), row.attempts))
        return claimed

    def _retire_events(self) -> int:
        """Mark every undelivered event that no other worker holds delivered, in one
        statement: what a delivery to no listener amounts to."""
        now = utcnow()
        with self.transaction(write=True) as db:
            return db.execute(
                sa.update(OutboxEvent)
                .where(OutboxEvent.delivered_at.is_(None),
                       sa.or_(OutboxEvent.locked_until.is_(None),
                              OutboxEvent.locked_until < now))
                .values(delivered_at=now, attempts=OutboxEvent.attempts + 1,
                        last_error=None, locked_until=None)
                .execution_options(synchronize_session=False)
            ).rowcount


class EmbeddedWorker:
    """A :class:`Worker` in a daemon thread of the app's process (``pserve development.ini``).

    :meth:`stop` ends it (the app registers it to run at interpreter exit).
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelreg-worker", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()
        log.info("embedded worker %s started", self.worker.id)

    def _run(self) -> None:
        try:
            self.worker.run_forever(self._stop)
        finally:
            self.worker.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop after its current step and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
