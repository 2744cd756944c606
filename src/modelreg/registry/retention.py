"""Retention in the background: the ``apply_retention`` job the worker runs.

Finalizing a version (when it becomes ``ready``), moving an alias and deleting one queue a
job for the model, in the same transaction, when ``modelreg.policy.retention.keep_last`` is
set; the job archives or deletes what retention no longer keeps
(:meth:`~modelreg.registry.services.RegistryService.apply_retention`), audited as
``system:retention``.  ``modelreg gc`` applies it to every model as well, before it collects
the blobs that this frees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyramid.config import Configurator

from ..policy import RETENTION_ACTOR, RETENTION_JOB
from .services import RegistryService

if TYPE_CHECKING:
    from ..worker.runner import Worker

log = logging.getLogger(__name__)


def run_retention(worker: Worker, payload: dict[str, Any], heartbeat: Callable[[], None]) -> None:
    """Apply retention to the model of the job (nothing if it was deleted meanwhile)."""
    with worker.transaction(write=True) as db:
        service = RegistryService(db, worker.hook, worker.settings, actor=RETENTION_ACTOR)
        for item in service.apply_retention(int(payload["model_id"])):
            log.info("retention: %s version %s of %r", item["action"], item["version"],
                     item["model"])


def give_up_retention(worker: Worker, payload: dict[str, Any], error: str) -> None:
    """Nothing to undo: the next job of the model, or ``modelreg gc``, applies it again."""
    log.error("retention of model id %s failed for good: %s", payload.get("model_id"), error)


def includeme(config: Configurator) -> None:
    """Register the retention job kind."""
    config.add_job_kind(RETENTION_JOB, run_retention, give_up_retention)
