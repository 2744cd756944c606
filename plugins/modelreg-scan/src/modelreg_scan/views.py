"""The admin API of allowances (global admins only), audited.

``/api/v1/scan/allowances`` (GET list, POST create) and ``/api/v1/scan/allowances/{name}``
(GET, DELETE).  Allowances of the settings are listed (``"source": "settings"``) but are
changed only in the settings.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from zope.sqlalchemy import mark_changed

from modelreg.api import (
    JSON_BODY_ERRORS,
    ApiOperation,
    Conflict,
    NotFound,
    Unprocessable,
    add_api_view,
    audit_request,
    read_json_body,
)

from . import allowances as allow
from .tables import API, SETTINGS, allowances

log = logging.getLogger(__name__)

PERMISSION = "admin"
FIELDS = {"name", "models", "globals", "description"}


def _one(request: Request, name: str) -> allow.Allowance:
    row = request.dbsession.execute(
        sa.select(allowances).where(allowances.c.name == name)).first()
    if row is None:
        raise NotFound(f"no allowance named {name!r}", code="allowance_not_found",
                       details={"name": name})
    return allow.Allowance.from_row(row)


def list_allowances(request: Request) -> dict[str, Any]:
    """GET /api/v1/scan/allowances: every allowance (of the API and of the settings, which
    start-up and the scans sync to the table), by name."""
    rows = request.dbsession.execute(sa.select(allowances).order_by(allowances.c.name))
    return {"allowances": [allow.Allowance.from_row(row).as_json() for row in rows]}


def create_allowance(request: Request) -> dict[str, Any]:
    """POST /api/v1/scan/allowances: ``name``, ``models`` (a glob of model names),
    ``globals`` (``module:qualname`` patterns) and ``description``; audited as
    ``scan_allowance.created``."""
    body = read_json_body(request)  # the API's rules: 413, 415, 400, NUL and surrogates 422
    unknown = set(body) - FIELDS
    if unknown:
        raise Unprocessable(f"unknown fields: {', '.join(sorted(unknown))}",
                            details={"fields": sorted(unknown)})
    name, models, globals_ = body.get("name"), body.get("models"), body.get("globals")
    description = body.get("description", "")
    problems = allow.problems_of(name, models, globals_, description)
    if problems:
        raise Unprocessable("the allowance is invalid", code="validation_failed",
                            details={"problems": problems})
    exists = Conflict(f"an allowance named {name!r} exists", code="allowance_exists",
                      details={"name": name})
    if request.dbsession.execute(
            sa.select(allowances.c.id).where(allowances.c.name == name)).first():
        raise exists
    allowance = allow.Allowance(name, models, tuple(globals_), description, API,
                                request.authenticated_userid, allow.utcnow())
    try:
        with request.dbsession.begin_nested():
            request.dbsession.execute(sa.insert(allowances).values(
                name=name, models=models, globals=list(globals_), description=description,
                source=API, created_by=allowance.created_by,
                created_at=allowance.created_at))
    except IntegrityError:  # created by a concurrent request
        raise exists from None
    mark_changed(request.dbsession)
    audit_request(request, allow.CREATED, allow.TARGET_TYPE, name,
                  after=allow._summary(allowance))
    request.response.status = 201
    return allowance.as_json()


def get_allowance(request: Request) -> dict[str, Any]:
    """GET /api/v1/scan/allowances/{name}."""
    return _one(request, request.matchdict["name"]).as_json()


def delete_allowance(request: Request) -> Any:
    """DELETE /api/v1/scan/allowances/{name}: audited as ``scan_allowance.deleted``; an
    allowance of the settings is removed from the settings instead (409)."""
    allowance = _one(request, request.matchdict["name"])
    if allowance.source == SETTINGS:
        raise Conflict(f"the allowance {allowance.name!r} is defined by the setting "
                       f"{allow.SETTING_PREFIX}{allowance.name}: remove it there",
                       code="allowance_from_settings", details={"name": allowance.name})
    request.dbsession.execute(sa.delete(allowances).where(allowances.c.name == allowance.name))
    mark_changed(request.dbsession)
    audit_request(request, allow.DELETED, allow.TARGET_TYPE, allowance.name,
                  before=allow._summary(allowance))
    response = Response(status=204)
    del response.content_type
    return response


def includeme(config: Configurator) -> None:
    """Routes and views, each with its OpenAPI operation and the ``admin`` permission."""
    base = "/api/v1/scan/allowances"
    config.add_route("scan.allowances", base)
    config.add_route("scan.allowance", base + "/{name}")
    views: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("scan.allowances", "GET", list_allowances, {}),
        ("scan.allowances", "POST", create_allowance,
         {"status": 201, "errors": (*JSON_BODY_ERRORS, 409)}),
        ("scan.allowance", "GET", get_allowance, {"errors": (404,)}),
        ("scan.allowance", "DELETE", delete_allowance, {"status": 204, "errors": (404, 409)}),
    ]
    for route, method, view, extra in views:
        summary = (view.__doc__ or "").strip().splitlines()[0]
        add_api_view(config, view,
                     ApiOperation(route_name=route, method=method, summary=summary,
                                  permission=PERMISSION, tags=("scan",), **extra),
                     renderer="json")


def start(config: Configurator) -> None:
    """At start-up: check the allowances of the settings (a wrong one stops start-up),
    sync them to the table when it exists, and add the API."""
    settings = config.get_settings()
    allow.from_settings(settings)
    if "sqlalchemy.url" in settings:
        # a pool of its own only in processes that scan (apply()); here one connection
        engine = sa.create_engine(settings["sqlalchemy.url"], poolclass=sa.pool.NullPool)
        try:
            if allow.tables_exist(engine):
                allow.sync_settings(engine, settings)
        except SQLAlchemyError:  # the database is down: the first scan syncs them
            log.warning("modelreg-scan: allowances of the settings not synced at start-up",
                        exc_info=True)
        finally:
            engine.dispose()
    config.include("modelreg_scan.views")
