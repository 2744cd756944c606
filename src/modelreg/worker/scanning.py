"""Scanning at finalize: the ``scan_version`` job the worker runs (DESIGN §7).

When a plugin implements ``modelreg_scan_file``, finalize queues a ``scan_version`` job for a
version that passed the cheap validators and leaves it ``validating``.  The job runs every
scanner on every file, stores the findings per file and concludes the version through
:meth:`~modelreg.registry.services.RegistryService.conclude_finalize`: ``rejected`` when a
finding's severity is one that ``modelreg.scan.reject`` names, or when a scanner raised
(fail closed); ``ready`` otherwise.  A job that fails ``modelreg.worker.max_attempts`` times
(the blob store down, the worker killed) rejects the version too: never ``ready`` unscanned.

Settings:

``modelreg.scan.reject`` (default ``error``)
    the severities that reject a version; findings of other severities are kept and shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa

from ..models import ScanFinding, Version, utcnow
from ..storage.errors import StorageError

if TYPE_CHECKING:
    from .runner import Worker

log = logging.getLogger(__name__)

#: The kind of the job finalize queues.
SCAN_JOB = "scan_version"
#: The setting naming the severities that reject, and its default.
REJECT_SETTING = "modelreg.scan.reject"
DEFAULT_REJECT = "error"
#: The actor the audit log records for what the worker concludes.
WORKER_ACTOR = "system:worker"


def has_scanners(hook: Any) -> bool:
    """Whether any registered plugin implements ``modelreg_scan_file``."""
    return bool(hook.modelreg_scan_file.get_hookimpls())


def reject_severities(settings: dict[str, Any]) -> set[str]:
    """The finding severities that reject a version (``modelreg.scan.reject``)."""
    value = settings.get(REJECT_SETTING)
    return set((DEFAULT_REJECT if value is None else str(value)).replace(",", " ").lower().split())


def finding_json(row: ScanFinding) -> dict[str, Any]:
    """The API representation of a stored finding."""
    return {"path": row.path, "scanner": row.scanner, "severity": row.severity,
            "code": row.code, "message": row.message, "details": row.details}


def _plain(details: Any) -> dict[str, Any]:
    # Findings come from plugins: keep whatever JSON can hold, as text where it cannot.
    data = json.loads(json.dumps(details or {}, default=str))
    return data if isinstance(data, dict) else {"value": data}


def _opener(worker: Worker, sha256: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        return worker.store.open(sha256)

    return opener


def scan_version(worker: Worker, payload: dict[str, Any], heartbeat: Callable[[], None]) -> None:
    """Run every scanner on every file of a ``validating`` version and conclude it.

    A scanner's exception becomes a ``scanner_failed`` problem (fail closed); a blob-store
    failure propagates so that the job is tried again later.
    """
    from ..registry.services import RegistryService

    version_id = payload["version_id"]
    with worker.transaction() as db:
        version = db.get(Version, version_id)
        if version is None or version.status != "validating":
            return
        service = RegistryService(db, worker.hook, worker.settings)
        model_json = service.model_json(version.model)
        files = service.files_json(version)
        version_json = {**service.version_json(version), "files": files}
    findings: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for file in files:
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
            heartbeat()
    conclude_scan(worker, version_id, findings, failures)


def conclude_scan(
    worker: Worker, version_id: int, findings: list[dict[str, Any]],
    failures: list[dict[str, Any]],
) -> None:
    """Store the findings of a scan and make the version ``ready`` or ``rejected``, in one
    transaction; nothing happens if the version is no longer ``validating``."""
    from ..registry.services import RegistryService

    rejecting = reject_severities(worker.settings)
    with worker.transaction(write=True) as db:
        locked = db.execute(
            sa.select(Version.id).where(Version.id == version_id).with_for_update()
        ).first()
        version = db.get(Version, version_id) if locked else None
        if version is None or version.status != "validating":
            return
        db.execute(sa.delete(ScanFinding).where(ScanFinding.version_id == version_id))
        now = utcnow()
        db.add_all(ScanFinding(version_id=version_id, created_at=now, **f) for f in findings)
        problems = list(failures) + [
            {"code": f["code"], "message": f"{f['path']}: {f['message']}",
             "field": f"files/{f['path']}"}
            for f in findings if f["severity"] in rejecting
        ]
        service = RegistryService(db, worker.hook, worker.settings, actor=WORKER_ACTOR)
        service.conclude_finalize(version, service.files_json(version), problems)


def give_up_scan(worker: Worker, payload: dict[str, Any], error: str) -> None:
    """Reject the version of a scan job that failed too often (fail closed)."""
    conclude_scan(worker, payload["version_id"], [], [{
        "code": "scan_failed",
        "message": f"the scan could not be completed ({error}); the version is rejected",
        "field": None,
    }])
