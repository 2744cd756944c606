"""``modelreg.api.record_audit`` and ``audit_request``: a plugin's audit events land in the
registry's log (``GET /api/v1/audit``) with the actor, token and client address, only when
the change they record commits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import webtest

from helpers import API
from modelreg.api import (
    ApiOperation,
    BadRequest,
    add_api_view,
    audit_request,
    hookimpl,
    record_audit,
)
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from security_helpers import add_principal, bearer, public_id


def thing_view(request: Any) -> dict[str, Any]:
    """POST /api/v1/things: audited; ``?fail=1`` fails after the audit call."""
    audit_request(request, "thing.created", "thing", "t1", after={"size": 3})
    if request.params.get("fail"):
        raise BadRequest("refused after auditing")
    return {"ok": True}


class ThingPlugin:
    @hookimpl
    def modelreg_pyramid_configure(self, config: Any) -> None:
        config.add_route("things", "/api/v1/things")
        add_api_view(config, thing_view,
                     ApiOperation(route_name="things", method="POST", summary="a thing",
                                  permission="admin"), renderer="json")


@pytest.fixture(scope="module")
def audit_wsgi(modelreg_database) -> Iterator[Any]:
    app = make_app({"sqlalchemy.url": modelreg_database.url, "retry.attempts": "3",
                    "modelreg.auth.anonymous": "none"}, (*CORE_PLUGINS, ThingPlugin()))
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def app(audit_wsgi) -> Iterator[webtest.TestApp]:
    yield webtest.TestApp(audit_wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(audit_wsgi.registry["db_engine"])


def events(app, token: str, action: str) -> list[dict[str, Any]]:
    return app.get(f"{API}/audit", {"action": action}, headers=bearer(token)).json["events"]


def test_audit_request_records_the_caller_and_commits_with_the_request(app, audit_wsgi):
    token = add_principal(audit_wsgi, "root", admin=True)
    app.post(f"{API}/things", headers=bearer(token))
    app.post(f"{API}/things?fail=1", headers=bearer(token), status=400)
    (event,) = events(app, token, "thing.created")
    assert (event["actor"], event["token_id"], event["client_addr"]) == (
        "root", public_id(token), "127.0.0.1")
    assert (event["target_type"], event["target"], event["after"]) == ("thing", "t1",
                                                                       {"size": 3})


def test_record_audit_writes_in_the_callers_transaction(app, audit_wsgi):
    token = add_principal(audit_wsgi, "root", admin=True)
    engine = audit_wsgi.registry["db_engine"]
    with engine.begin() as conn:
        record_audit(conn, action="thing.used", target_type="version", target="m/1",
                     actor="system:thing", after={"why": "test"})
    with pytest.raises(RuntimeError), engine.begin() as conn:
        record_audit(conn, action="thing.used", target_type="version", target="m/2",
                     actor="system:thing")
        raise RuntimeError("rolled back")
    (event,) = events(app, token, "thing.used")
    assert (event["actor"], event["target"], event["after"]) == ("system:thing", "m/1",
                                                                 {"why": "test"})
    with engine.begin() as conn:
        for bad in ({"action": "x" * 65}, {"target_type": ""}, {"actor": "a" * 200}):
            with pytest.raises(ValueError):
                record_audit(conn, **{"action": "a.b", "target_type": "t", "target": "x",
                                      "actor": None, **bad})
