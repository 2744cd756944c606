"""The ``scan_version`` job: run every scanner on a version's files, then conclude it
(the rules and settings are in :mod:`modelreg.scanning`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa
from pyramid.config import Configurator

from .. import jobs as queue
from ..models import ScanFinding, Version, utcnow
from ..registry.services import RegistryService
from ..storage.errors import StorageError
from . import (
    SCAN_JOB,
    WORKER_ACTOR,
    batch_seconds,
    file_count_problems,
    reject_severities,
)

if TYPE_CHECKING:
    from ..worker.runner import Worker

log = logging.getLogger(__name__)


def _plain(details: Any) -> dict[str, Any]:
    # Findings come from plugins: keep whatever JSON can hold, as text where it cannot.
    data = json.loads(json.dumps(details or {}, default=str))
    return data if isinstance(data, dict) else {"value": data}


def _opener(worker: Worker, sha256: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        return worker.store.open(sha256)

    return opener


def scan_version(worker: Worker, payload: dict[str, Any], heartbeat: Callable[[], None]) -> None:
    """Run every scanner on the files of a ``validating`` version and conclude it.

    The files are scanned in path order from ``payload["next"]`` (0 at first).  Once a run
    has taken ``modelreg.scan.batch_seconds``, it stores the findings so far and queues the
    remaining files as a new ``scan_version`` job (``next``, and the ``failures`` so far), in
    the transaction that marks this job done; that job is claimed after every job queued
    before it, so other versions' scans and other jobs are served in between.

    A scanner's exception becomes a ``scanner_failed`` problem (fail closed); a blob-store
    failure propagates so that the job is tried again later.
    """
    version_id = payload["version_id"]
    start = int(payload.get("next", 0))
    failures: list[dict[str, Any]] = list(payload.get("failures", ()))
    with worker.transaction() as db:
        version = db.get(Version, version_id)
        if version is None or version.status != "validating":
            return
        service = RegistryService(db, worker.hook, worker.settings)
        model_json = service.model_json(version.model)
        files = service.files_json(version)
        version_json = {**service.version_json(version), "files": files}
    too_many = file_count_problems(worker.settings, files)  # the limit may have been lowered
    if too_many:
        conclude_scan(worker, version_id, [], [p.as_json() for p in too_many], first=start == 0)
        return
    budget = batch_seconds(worker.settings)
    began = time.monotonic()
    findings: list[dict[str, Any]] = []
    index = start
    while index < len(files):
        file = files[index]
        index += 1
        _scan_file(worker, model_json, version_json, file, version_id, findings, failures)
        heartbeat()
        if time.monotonic() - began >= budget:
            break
    if index < len(files):
        _store_batch(worker, version_id, findings, start == 0, heartbeat,
                     {"version_id": version_id, "next": index, "failures": failures})
        return
    conclude_scan(worker, version_id, findings, failures, first=start == 0)


def _scan_file(worker: Worker, model_json: dict[str, Any], version_json: dict[str, Any],
               file: dict[str, Any], version_id: int, findings: list[dict[str, Any]],
               failures: list[dict[str, Any]]) -> None:
    """Run every scanner on one file, adding to ``findings`` and ``failures``."""
    for impl in worker.hook.modelreg_scan_file.get_hookimpls():
        arguments = {"model": model_json, "version": version_json, "file": dict(file),
                     "opener": _opener(worker, file["sha256"]),
                     "settings": worker.settings}
        try:
            result = impl.function(*(arguments[name] for name in impl.argnames))
        except StorageError:
            raise
        except Exception as exc:
            log.exception("scanner %s failed on %s of version id %s", impl.plugin_name,
                          file["path"], version_id)
            failures.append({
                "code": "scanner_failed",
                "message": f"{file['path']}: scanner {impl.plugin_name} failed "
                           f"({type(exc).__name__}: {exc}); the version is rejected",
                "field": f"files/{file['path']}",
            })
            continue
        for finding in result or ():
            findings.append({
                "path": finding.path or file["path"], "scanner": impl.plugin_name,
                "severity": str(finding.severity).lower()[:16], "code": finding.code[:64],
                "message": finding.message, "details": _plain(finding.details),
            })


class JobLost(RuntimeError):
    """The job's lease passed to another worker while this one ran it: what it did is
    rolled back, the other worker does it again."""


def _store_findings(db: Any, version_id: int, findings: list[dict[str, Any]],
                    first: bool) -> Version | None:
    """Lock the version's row and, while it is still ``validating``, store ``findings``
    (replacing earlier ones when ``first``: a scan started again); ``None``, storing nothing,
    when the version is gone or no longer validating."""
    locked = db.execute(
        sa.select(Version.id).where(Version.id == version_id).with_for_update()
    ).first()
    version = db.get(Version, version_id) if locked else None
    if version is None or version.status != "validating":
        return None
    if first:
        db.execute(sa.delete(ScanFinding).where(ScanFinding.version_id == version_id))
    now = utcnow()
    db.add_all(ScanFinding(version_id=version_id, created_at=now, **f) for f in findings)
    return version


def _store_batch(worker: Worker, version_id: int, findings: list[dict[str, Any]],
                 first: bool, heartbeat: Any, following: dict[str, Any]) -> None:
    """Store a batch's findings, mark the running job done and queue ``following``, in one
    transaction: a worker that dies before it commits leaves the batch to be scanned again,
    and never two jobs for the rest of the version."""
    with worker.transaction(write=True) as db:
        version = _store_findings(db, version_id, findings, first)
        if version is None:
            return
        job_id = getattr(heartbeat, "job_id", None)
        if job_id is not None and not queue.finish(db, job_id, worker.id):
            raise JobLost(f"job {job_id} is no longer held by worker {worker.id}")
        queue.enqueue(db, SCAN_JOB, following)


def conclude_scan(
    worker: Worker, version_id: int, findings: list[dict[str, Any]],
    failures: list[dict[str, Any]], *, first: bool = True,
) -> None:
    """Store the findings of a scan (the last batch's, when ``first`` is false: earlier
    batches stored theirs) and make the version ``ready`` or ``rejected`` by every finding
    stored for it, in one transaction; nothing happens if the version is no longer
    ``validating``."""
    rejecting = reject_severities(worker.settings)
    with worker.transaction(write=True) as db:
        version = _store_findings(db, version_id, findings, first)
        if version is None:
            return
        db.flush()
        stored = db.scalars(sa.select(ScanFinding).where(ScanFinding.version_id == version_id)
                            .order_by(ScanFinding.id)).all()
        problems = list(failures) + [
            {"code": f.code, "message": f"{f.path}: {f.message}", "field": f"files/{f.path}"}
            for f in stored if f.severity in rejecting
        ]
        service = RegistryService(db, worker.hook, worker.settings, actor=WORKER_ACTOR)
        service.conclude_finalize(version, service.files_json(version), problems)


def give_up_scan(worker: Worker, payload: dict[str, Any], error: str) -> None:
    """Reject the version of a scan job that failed too often (fail closed)."""
    conclude_scan(worker, payload["version_id"], [], [*payload.get("failures", ()), {
        "code": "scan_failed",
        "message": f"the scan could not be completed ({error}); the version is rejected",
        "field": None,
    }], first=not payload.get("next"))


def includeme(config: Configurator) -> None:
    """Register the ``scan_version`` job kind."""
    config.add_job_kind(SCAN_JOB, scan_version, give_up_scan)
