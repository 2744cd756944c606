"""The job runner: runs the queued jobs of every kind registered with
``config.add_job_kind`` (:mod:`modelreg.jobs`; scanning and retention register theirs) and
delivers events.  It imports no domain code (docs/architecture.md).

Jobs and events live in the database; ``modelreg worker <ini>`` runs them
(:class:`~modelreg.worker.runner.Worker`), and with ``modelreg.worker.embedded = true`` the
app runs a worker thread of its own, so that ``pserve development.ini`` alone is a complete
registry.

Settings:

``modelreg.worker.embedded`` (default ``false``)
    run a worker thread inside each app process.
``modelreg.worker.poll_interval`` (seconds, default 2)
    how long an idle worker waits before looking for work again.
``modelreg.worker.lease`` (seconds, default 300)
    how long a claimed job or delivery stays with its worker before another may take it
    (a scan renews it after every file).
``modelreg.worker.max_attempts`` (default 5)
    how many times a job is tried before it fails for good (a scan then rejects its version).
``modelreg.worker.max_backoff`` (seconds, default 3600)
    the longest wait between two attempts of a job or a delivery (they double from 1 s).
``modelreg.scan.reject`` (default ``error``)
    the finding severities that reject a version.
"""

from __future__ import annotations

import atexit
import logging

from pyramid.config import Configurator
from pyramid.settings import asbool

from .. import keys
from ..settings import WORKER_EMBEDDED
from .runner import EmbeddedWorker, Worker

log = logging.getLogger(__name__)

EMBEDDED_SETTING = WORKER_EMBEDDED
#: Where the embedded worker, if any, is kept in the registry.
REGISTRY_KEY = keys.EMBEDDED_WORKER


def includeme(config: Configurator) -> None:
    """The embedded worker thread, when ``modelreg.worker.embedded``
    (:func:`modelreg.config.configure` includes this last, once every job kind is known)."""
    settings = config.get_settings()
    if not asbool(settings.get(EMBEDDED_SETTING, False)):
        return
    registry = config.registry
    embedded = EmbeddedWorker(Worker.from_registry(registry, own_engine=True))
    registry[REGISTRY_KEY] = embedded
    atexit.register(embedded.stop)
    embedded.start()
