"""Operational endpoints: liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.interfaces import IRoutesMapper
from pyramid.request import Request
from pyramid.security import NO_PERMISSION_REQUIRED
from sqlalchemy.orm import Session

from . import jobs, keys
from .openapi import api_view, openapi_document
from .registry.schemas import Health, OpenAPIDocument
from .settings import READYZ_TIMEOUT
from .storage import REGISTRY_KEY as STORAGE_KEY
from .storage.errors import StorageError
from .version import __version__

log = logging.getLogger(__name__)


@api_view("healthz", "GET", permission=NO_PERMISSION_REQUIRED, response=Health, tags=["ops"])
def healthz(request: Request) -> dict[str, Any]:
    """Liveness: the process answers requests."""
    return {"status": "ok", "checks": {}}


#: Seconds ``/readyz`` waits for its checks before it answers 503 (setting).
READYZ_TIMEOUT_SETTING = READYZ_TIMEOUT
DEFAULT_READYZ_TIMEOUT = 2.0
#: Where the process keeps its :class:`ReadinessChecks` (in the Pyramid registry).
CHECKS_KEY = keys.READYZ_CHECKS


def _probe(what: str, probe: Callable[[], Any]) -> str:
    """``"ok"``, or ``"error: <exception class>"`` when ``probe`` raises anything at all.

    Expected failures (the database's, the blob store's) are logged in one line; anything
    else (a driver's or a plugin's own exception) with its traceback.  Either way the
    dependency is not ready: a probe never turns into a 500.  The message may name paths or
    hosts: it goes to the log, never to the client.
    """
    try:
        probe()
    except (sa.exc.SQLAlchemyError, StorageError) as exc:
        log.warning("readiness: the %s is unavailable: %s", what, exc)
        return f"error: {type(exc).__name__}"
    except Exception as exc:
        log.warning("readiness: checking the %s failed unexpectedly", what, exc_info=True)
        return f"error: {type(exc).__name__}"
    return "ok"


def ping_database(engine: sa.Engine, timeout: float) -> None:
    """Run ``SELECT 1`` on a connection of ``engine``'s pool, under a statement timeout of
    ``timeout`` seconds where the dialect has one (PostgreSQL ``statement_timeout``, MariaDB
    ``max_statement_time``, MySQL ``MAX_EXECUTION_TIME``), so that a stuck server frees the
    connection again.  Waiting for a connection of a saturated pool is bounded by the caller
    (:class:`ReadinessChecks`), not here."""
    millis = max(1, int(timeout * 1000))
    with engine.connect() as conn:
        dialect = conn.dialect
        if dialect.name == "postgresql":
            with conn.begin():
                conn.execute(sa.text(f"SET LOCAL statement_timeout = {millis}"))
                conn.execute(sa.text("SELECT 1"))
        elif dialect.name in ("mysql", "mariadb") and getattr(dialect, "is_mariadb", False):
            conn.execute(sa.text(f"SET STATEMENT max_statement_time = {millis / 1000:.3f} "
                                 "FOR SELECT 1"))
        elif dialect.name == "mysql":
            conn.execute(sa.text(f"SELECT /*+ MAX_EXECUTION_TIME({millis}) */ 1"))
        else:
            conn.execute(sa.text("SELECT 1"))


class _Flight:
    """One run of a check in a thread of its own; ``result`` once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = "error: not run"


class ReadinessChecks:
    """The checks of ``/readyz``, each run in a daemon thread and waited for at most the
    deadline, so that a stuck database or store (or a saturated connection pool) makes
    ``/readyz`` answer 503 in time for a load balancer's probe instead of after the pool's
    ``pool_timeout``.

    A check still running from an earlier probe is not started again: later probes wait for
    that same run (at most their own deadline), so a stuck dependency holds one thread per
    check, however often the load balancer asks.

    :param checks: the name of each check and a function that returns its result
        (``"ok"`` or ``"error: …"``, see :func:`_probe`).
    :param timeout: seconds to wait for all of them together.
    """

    def __init__(self, checks: dict[str, Callable[[], str]], timeout: float) -> None:
        self.checks = checks
        self.timeout = timeout
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def _start(self, name: str) -> _Flight:
        with self._lock:
            flight = self._flights.get(name)
            if flight is not None and not flight.done.is_set():
                return flight  # still running since an earlier probe
            flight = self._flights[name] = _Flight()

        def run() -> None:
            try:
                flight.result = self.checks[name]()
            finally:
                flight.done.set()

        threading.Thread(target=run, name=f"modelreg-readyz-{name}", daemon=True).start()
        return flight

    def run(self) -> dict[str, str]:
        """Every check's result, ``"timeout"`` for those that did not finish in time."""
        deadline = time.monotonic() + self.timeout
        flights = {name: self._start(name) for name in self.checks}
        results = {}
        for name, flight in flights.items():
            if flight.done.wait(max(0.0, deadline - time.monotonic())):
                results[name] = flight.result
            else:
                log.warning("readiness: the %s check did not finish within %g s", name,
                            self.timeout)
                results[name] = "timeout"
        return results


#: Checks that only inform: a ``warning: …`` answer goes to the body's ``warnings``, and no
#: answer of theirs is a reason for 503 (a load balancer must not take every app process out
#: because no worker runs the jobs).
ADVISORY_CHECKS = frozenset({"worker"})


def worker_check(engine: sa.Engine, stale: Any) -> str:
    """``"ok"``, or ``"warning: …"`` when jobs have waited with no worker seen to run them
    (:func:`modelreg.jobs.waiting_without_worker`); never raises."""
    try:
        with Session(engine) as db:
            problem = jobs.waiting_without_worker(db, stale)
    except Exception as exc:  # the database check reports an unreachable database
        log.warning("readiness: the worker check failed: %s", exc)
        return f"unknown: {type(exc).__name__}"
    return "ok" if problem is None else f"warning: {problem}"


def readiness_timeout(settings: dict[str, Any]) -> float:
    """``modelreg.readyz.timeout`` in seconds (default 2); a wrong value stops start-up."""
    raw = settings.get(READYZ_TIMEOUT_SETTING, DEFAULT_READYZ_TIMEOUT)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 < value <= 300:
        raise ValueError(f"{READYZ_TIMEOUT_SETTING} must be a number of seconds in (0, 300], "
                         f"not {raw!r}")
    return value


def _readiness_checks(request: Request) -> ReadinessChecks:
    registry = request.registry
    checks = registry.get(CHECKS_KEY)
    if checks is None:
        timeout = readiness_timeout(registry.settings)
        stale = jobs.stale_after(registry.settings)
        engine = registry[keys.DB_ENGINE]
        store = registry[STORAGE_KEY]
        checks = ReadinessChecks({
            "database": lambda: _probe("database", lambda: ping_database(engine, timeout)),
            "storage": lambda: _probe("blob store", store.check),
            "worker": lambda: worker_check(engine, stale),
        }, timeout)
        # Two first probes at once: one set of checks wins (setdefault is atomic).
        checks = registry.setdefault(CHECKS_KEY, checks)
    return checks


@api_view("readyz", "GET", permission=NO_PERMISSION_REQUIRED, response=Health,
          errors=(503,), tags=["ops"])
def readyz(request: Request) -> dict[str, Any]:
    """Readiness: the database can be reached and the blob store is usable, each within
    ``modelreg.readyz.timeout`` (503 otherwise, naming the failing checks).  The ``worker``
    check only informs: ``warnings`` says when jobs wait and no worker has been seen."""
    readiness = _readiness_checks(request)
    checks = readiness.run()
    advice = [checks.pop(name) for name in ADVISORY_CHECKS if name in checks]
    warnings = [value.removeprefix("warning: ") for value in advice
                if value.startswith("warning: ")]
    failing = sorted(name for name, value in checks.items() if value != "ok")
    if not failing:
        return {"status": "ok", "checks": checks, **({"warnings": warnings} if warnings else {})}
    request.response.status_code = 503
    slow = [name for name in failing if checks[name] == "timeout"]
    if slow:
        error = {"code": "readiness_timeout",
                 "message": f"no answer within {readiness.timeout:g} s from: {', '.join(slow)}",
                 "details": {"checks": slow, "timeout": readiness.timeout}}
    else:
        error = {"code": "not_ready", "message": f"not ready: {', '.join(failing)}",
                 "details": {"checks": failing}}
    return {"status": "unavailable", "checks": checks, "error": error}


@api_view("openapi", "GET", permission=NO_PERMISSION_REQUIRED, response=OpenAPIDocument,
          tags=["ops"])
def openapi_json(request: Request) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (built once per process)."""
    registry = request.registry
    document = registry.get(keys.OPENAPI_DOCUMENT)
    if document is None:
        mapper = registry.getUtility(IRoutesMapper)
        patterns = {route.name: route.pattern for route in mapper.get_routes()}
        document = openapi_document(registry, patterns, "modelreg", __version__)
        registry[keys.OPENAPI_DOCUMENT] = document
    return document


def includeme(config: Configurator) -> None:
    """Routes of the operational endpoints."""
    readiness_timeout(config.get_settings())  # wrong settings stop start-up
    jobs.stale_after(config.get_settings())
    config.add_route("healthz", "/healthz")
    config.add_route("readyz", "/readyz")
    config.add_route("openapi", "/api/v1/openapi.json")
    config.scan(".ops")
