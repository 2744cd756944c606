"""Scanning at finalize: its rules and settings here, the ``scan_version`` job in
:mod:`.jobs`, the findings API in :mod:`.views` (docs/architecture.md).

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
``modelreg.scan.max_files`` (default 10000)
    the most files a version may have when scanners are installed: finalize rejects a
    version with more (problem ``too_many_files``) before any scan is queued.
``modelreg.scan.batch_seconds`` (default 30)
    how long one run of a scan job may go on before it stops after the file in progress,
    stores what it found and queues the rest of the version as a new job behind every job
    already waiting: a version of many files cannot hold the queue (at least one file is
    scanned per run; the per-file limit is the scanner's own, e.g. ``modelreg.scan.timeout``).
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator

from ..models import ScanFinding
from ..settings import SCAN_BATCH_SECONDS, SCAN_MAX_FILES, SCAN_REJECT
from ..types import Problem

#: The kind of the job finalize queues.
SCAN_JOB = "scan_version"
#: The setting naming the severities that reject, and its default.
REJECT_SETTING = SCAN_REJECT
DEFAULT_REJECT = "error"
#: The actor the audit log records for what the worker concludes.
WORKER_ACTOR = "system:worker"
#: The per-version file limit, and its default.
MAX_FILES_SETTING = SCAN_MAX_FILES
DEFAULT_MAX_FILES = 10_000
#: How long one run of a scan job may go on before it yields, and its default (seconds).
BATCH_SETTING = SCAN_BATCH_SECONDS
DEFAULT_BATCH_SECONDS = 30.0


def has_scanners(hook: Any) -> bool:
    """Whether any registered plugin implements ``modelreg_scan_file``."""
    return bool(hook.modelreg_scan_file.get_hookimpls())


def reject_severities(settings: dict[str, Any]) -> set[str]:
    """The finding severities that reject a version (``modelreg.scan.reject``)."""
    value = settings.get(REJECT_SETTING)
    return set((DEFAULT_REJECT if value is None else str(value)).replace(",", " ").lower().split())


def max_files(settings: dict[str, Any]) -> int:
    """The most files a version to be scanned may have (``modelreg.scan.max_files``)."""
    value = settings.get(MAX_FILES_SETTING)
    return DEFAULT_MAX_FILES if value in (None, "") else int(value)


def batch_seconds(settings: dict[str, Any]) -> float:
    """How long one run of a scan job may go on (``modelreg.scan.batch_seconds``)."""
    value = settings.get(BATCH_SETTING)
    return DEFAULT_BATCH_SECONDS if value in (None, "") else float(value)


def file_count_problems(settings: dict[str, Any], files: list[Any]) -> list[Problem]:
    """The ``too_many_files`` problem of a version with more files than
    ``modelreg.scan.max_files``; checked at finalize when scanners are installed."""
    limit = max_files(settings)
    if len(files) <= limit:
        return []
    return [Problem("too_many_files",
                    f"the version has {len(files)} files; at most {limit} can be scanned "
                    f"({MAX_FILES_SETTING}): pack small files into an archive or split the "
                    "version", None)]


def finding_json(row: ScanFinding) -> dict[str, Any]:
    """The API representation of a stored finding."""
    return {"path": row.path, "scanner": row.scanner, "severity": row.severity,
            "code": row.code, "message": row.message, "details": row.details}


def includeme(config: Configurator) -> None:
    """The findings API, and the ``scan_version`` job kind (:mod:`.jobs`)."""
    config.add_route("api.version_findings",
                     "/api/v1/models/{model}/versions/{version}/findings")
    config.scan(".views")
    config.include(".jobs")
