"""Operational endpoints: liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.interfaces import IRoutesMapper
from pyramid.request import Request
from pyramid.security import NO_PERMISSION_REQUIRED

from . import __version__
from .openapi import api_view, openapi_document
from .registry.schemas import Health, OpenAPIDocument
from .storage import REGISTRY_KEY as STORAGE_KEY
from .storage.errors import StorageError

log = logging.getLogger(__name__)


@api_view("healthz", "GET", permission=NO_PERMISSION_REQUIRED, response=Health, tags=["ops"])
def healthz(request: Request) -> dict[str, Any]:
    """Liveness: the process answers requests."""
    return {"status": "ok", "checks": {}}


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


def _ping_database(request: Request) -> None:
    with request.registry["db_engine"].connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@api_view("readyz", "GET", permission=NO_PERMISSION_REQUIRED, response=Health,
          errors=(503,), tags=["ops"])
def readyz(request: Request) -> dict[str, Any]:
    """Readiness: the database can be reached and the blob store is usable (503 otherwise,
    naming the failing check)."""
    checks = {
        "database": _probe("database", lambda: _ping_database(request)),
        "storage": _probe("blob store", request.registry[STORAGE_KEY].check),
    }
    ok = all(value == "ok" for value in checks.values())
    if not ok:
        request.response.status_code = 503
    return {"status": "ok" if ok else "unavailable", "checks": checks}


@api_view("openapi", "GET", permission=NO_PERMISSION_REQUIRED, response=OpenAPIDocument,
          tags=["ops"])
def openapi_json(request: Request) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (built once per process)."""
    registry = request.registry
    document = registry.get("modelreg.openapi.document")
    if document is None:
        mapper = registry.getUtility(IRoutesMapper)
        patterns = {route.name: route.pattern for route in mapper.get_routes()}
        document = openapi_document(registry, patterns, "modelreg", __version__)
        registry["modelreg.openapi.document"] = document
    return document


def includeme(config: Configurator) -> None:
    """Routes of the operational endpoints."""
    config.add_route("healthz", "/healthz")
    config.add_route("readyz", "/readyz")
    config.add_route("openapi", "/api/v1/openapi.json")
    config.scan(".ops")
