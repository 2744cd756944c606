"""Fuzzing against the OpenAPI document: schemathesis generates requests for every operation
of ``/api/v1/openapi.json``, as served by a real Waitress, and checks every answer.

The server has a SQLite database of its own and is open for anonymous writes (as
``development.ini``), so that generated requests reach the handlers instead of stopping at
401.  Each operation gets data that fits the document (positive) once without credentials
and once with a global admin's token (the admin API only answers to that), and data that does
not (negative) with the token, wherever a request can break the document; path parameters
are either generated or name the seeded model, version, alias, tag, file, principal, group,
token and grant (so that the handlers behind a found resource are fuzzed too).

Every answer must be no 5xx, a status the document lists for the operation, of the media
type it declares, with a body that matches its schema (and headers that match theirs);
data that breaks the document must be refused with a 4xx.  Bounded: a few examples per
operation and mode, no deadline per example, the whole module in about a minute; and
derandomized, so that CI runs the same examples every time (change EXAMPLES, or run with
derandomize off, to explore further).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from document_helpers import load_document, operations
from modelreg.testing import TestDatabase, make_app
from modelreg.testing.server import LiveServer
from security_helpers import add_principal, public_id, security_service

pytestmark = pytest.mark.server

API = "/api/v1"
#: Generated examples per operation, caller and mode.
EXAMPLES = 5
#: Every check of the document schemathesis has; negative data must also be refused.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]



def _breakable(operation: dict[str, Any]) -> bool:
    """Whether any request can break the operation's part of the document: a body or a query
    parameter that is not free text.  (A string path parameter takes anything, and the
    credentials are fixed, so for the others there is no negative data to send; requests
    without credentials are the permission-matrix tests' business.)"""
    typed_query = any(p["in"] == "query" and p["schema"].get("type") != "string"
                      for p in operation["parameters"])
    json_body = "application/json" in operation.get("requestBody", {}).get("content", {})
    return json_body or typed_query


CASES = [pytest.param(method, path, id=f"{method} {path}") for method, path, _ in operations()]


@pytest.fixture(scope="module")
def database() -> Iterator[TestDatabase]:
    db = TestDatabase.create("sqlite")
    yield db
    db.drop()


@pytest.fixture(scope="module")
def seeded(database: TestDatabase) -> dict[str, Any]:
    """An admin with a token, and a principal ``alice`` with a token, a grant and a group."""
    app = make_app({"sqlalchemy.url": database.url, "modelreg.auth.anonymous": "write"})
    try:
        admin = add_principal(app, "root", admin=True)
        alice = add_principal(app, "alice", grants=[("fraud-*", "read")], scopes=["read"])
        with security_service(app) as security:
            security.create_group("team-a")
            security.add_member("team-a", "alice")
            (grant,), _ = security.list_grants(principal="alice")
            grant_id = grant.id
    finally:
        app.registry["db_engine"].dispose()
    return {"admin": admin, "values": {
        "model": "fraud-detector", "version": "1", "alias": "champion", "key": "team",
        "path": "model.bin", "principal": "alice", "group": "team-a",
        "token": public_id(alice), "grant": str(grant_id),
    }}


@pytest.fixture(scope="module")
def server(database: TestDatabase, seeded: dict[str, Any]) -> Iterator[LiveServer]:
    settings_ = {
        "sqlalchemy.url": database.url,
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "write",
        # Negative data sends garbled tokens by the hundred: throttling them is tested in
        # the security tests, here it would only lock the admin out.
        "modelreg.auth.max_failures": "0",
        # Installed scanner plugins validate finalized versions in the background.
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
    }
    with LiveServer(settings_, threads=4) as live:
        yield live


@pytest.fixture(scope="module")
def document(server: LiveServer) -> dict[str, Any]:
    """The document as the live server serves it (anonymous callers may write there)."""
    return requests.get(f"{server.url}{API}/openapi.json", timeout=30).json()


@pytest.fixture(scope="module")
def schema(server: LiveServer) -> Any:
    """The same, loaded by schemathesis."""
    return schemathesis.openapi.from_url(f"{server.url}{API}/openapi.json")


def _seed_model(server: LiveServer, token: str) -> None:
    """(Re)create ``fraud-detector`` with tag ``team``, ready version 1 aliased ``champion``:
    fuzzing may have renamed or deleted it."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    base = f"{server.url}{API}/models"
    for name in ("fraud-detector", "Fraud-Detector"):
        session.delete(f"{base}/{name}", timeout=30)
    version = f"{base}/fraud-detector/versions/1"
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", base, {"json": {"name": "fraud-detector", "tags": {"team": "risk"}}}),
        ("POST", f"{base}/fraud-detector/versions", {"json": {}}),
        ("PUT", f"{version}/files/model.bin",
         {"data": b"weights", "headers": {"Content-Type": "application/octet-stream"}}),
        ("POST", f"{version}/finalize", {}),
    ]
    for method, url, options in steps:
        response = session.request(method, url, timeout=30, **options)
        assert response.status_code < 300, (method, url, response.status_code, response.text)
    # An installed scanner plugin validates in the background: wait until it is ready.
    deadline = time.monotonic() + 30
    while session.get(version, timeout=30).json()["status"] == "validating":
        assert time.monotonic() < deadline, "version 1 stayed validating"
        time.sleep(0.1)
    response = session.put(f"{base}/fraud-detector/aliases/champion", json={"version": 1},
                           timeout=30)
    assert response.status_code < 300, response.text


def _fuzz(operation: Any, server: LiveServer, mode: GenerationMode,
          headers: dict[str, str], fixed: dict[str, str]) -> None:
    # The caller's credentials are fixed, so that negative data never "breaks" them: the
    # server would see them anyway, as call_and_validate sends ``headers`` on every case.
    strategy = operation.as_strategy(mode, headers=headers or None)
    if fixed:
        strategy = st.one_of(strategy, operation.as_strategy(mode, headers=headers or None,
                                                             path_parameters=fixed))
    checks = NEGATIVE_CHECKS if mode == GenerationMode.NEGATIVE else CHECKS

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=server.url, headers=headers, checks=checks,
                               timeout=30)

    run()


@pytest.mark.parametrize(("method", "path"), CASES)
def test_fuzz(schema, document, server, seeded, method, path):
    """Data that fits the document, without credentials and with the admin's token; data
    that does not, with the token (the admin API refuses anonymous callers first)."""
    operation = schema[path][method]
    _seed_model(server, seeded["admin"])
    admin = {"Authorization": f"Bearer {seeded['admin']}"}
    fixed = {name: value for name, value in seeded["values"].items()
             if f"{{{name}}}" in path}
    started = time.monotonic()
    _fuzz(operation, server, GenerationMode.POSITIVE, {}, fixed)
    _fuzz(operation, server, GenerationMode.POSITIVE, admin, fixed)
    if _breakable(document["paths"][path][method.lower()]):
        _fuzz(operation, server, GenerationMode.NEGATIVE, admin, fixed)
    assert time.monotonic() - started < 60


def test_the_live_document_is_the_apps(document):
    """The fuzzed document is the one the test suite checks WebTest responses against (and
    the operations of installed plugins, which the live server loads from entry points)."""
    served, local = document, load_document()
    assert served["paths"].keys() >= local["paths"].keys()
    assert json.dumps(served["components"], sort_keys=True) == \
        json.dumps(local["components"], sort_keys=True)
