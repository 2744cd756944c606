"""The suite runs every database test on SQLite, PostgreSQL and MariaDB.

``MODELREG_TEST_BACKENDS`` (e.g. ``sqlite`` or ``sqlite,postgresql``) narrows the set.  A
backend whose server is unreachable is skipped, except with ``CI=true``, where it fails.
Every response the WebTest app receives is checked against the OpenAPI document.

Apps are open like ``development.ini`` (anonymous callers may change models) unless a test
asks otherwise: ``testapp`` through the test kit's settings, apps built from bare settings
and real servers through ``MODELREG_AUTH_ANONYMOUS``.  ``secure_app`` is the same app with
``modelreg.auth.anonymous = none``, for the security tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import webtest

from modelreg.testing import BACKENDS, TestDatabase, clear_database, make_app, unavailable


def selected_backends() -> list[str]:
    wanted = os.environ.get("MODELREG_TEST_BACKENDS")
    return [b.strip() for b in wanted.split(",")] if wanted else list(BACKENDS)


@pytest.fixture(scope="session", autouse=True)
def anonymous_writes_by_default() -> Iterator[None]:
    """Apps and servers built from bare settings here are open, as in development.ini.

    An explicit ``modelreg.auth.anonymous`` setting still wins over the environment.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELREG_AUTH_ANONYMOUS", "write")
        yield


@pytest.fixture(scope="session", autouse=True)
def local_blob_storage_by_default(tmp_path_factory) -> Iterator[None]:
    """Apps and servers built from bare settings keep blobs in a directory of the session.

    Through ``MODELREG_STORAGE_LOCAL_PATH``, which an explicit setting still wins over.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELREG_STORAGE_LOCAL_PATH", str(tmp_path_factory.mktemp("blobs")))
        yield


@pytest.fixture(scope="session", params=selected_backends())
def modelreg_database(request: pytest.FixtureRequest, modelreg_plugins) -> Iterator[TestDatabase]:
    try:
        db = TestDatabase.create(request.param, modelreg_plugins)
    except ConnectionError as exc:
        unavailable(str(exc))
    yield db
    db.drop()


class OpenAPIChecker:
    """Validates responses against the app's own OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.routes = []
        for path, methods in document["paths"].items():
            multi = {p["name"] for op in methods.values() for p in op["parameters"]
                     if p.get("x-multi-segment")}

            def param(match: re.Match[str], multi: set[str] = multi) -> str:
                return r"[\s\S]*" if match.group(1) in multi else "[^/]+"

            regex = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", param, re.escape(path)) + "$")
            self.routes.append((regex, methods))
        self.seen: set[tuple[str, str, int]] = set()

    def operation(self, path: str, method: str) -> dict[str, Any] | None:
        for regex, methods in self.routes:
            if regex.match(path):
                return methods.get(method.lower())
        return None

    def check(self, method: str, path: str, response: webtest.TestResponse) -> None:
        if method == "HEAD":
            return
        operation = self.operation(path, method)
        if operation is None:
            # Unknown routes and methods answer with the error document.
            assert response.status_int in (404, 405), (method, path, response.status)
            error_schema = {"$ref": "#/components/schemas/ErrorOut"}
            jsonschema.validate(response.json, self._schema(error_schema))
            return
        documented = operation["responses"].get(str(response.status_int))
        assert documented is not None, (
            f"{method} {path} answered {response.status_int}, which the OpenAPI document "
            f"does not list ({sorted(operation['responses'])})"
        )
        self.seen.add((operation["operationId"], method, response.status_int))
        content = documented.get("content")
        if content is None:
            assert not response.body, f"{method} {path}: undocumented body"
            return
        if "application/json" not in content:  # a binary body (a file): any media type
            return
        assert response.content_type == "application/json", response.content_type
        jsonschema.validate(response.json, self._schema(content["application/json"]["schema"]))

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "components": self.document["components"]}


class CheckedTestApp(webtest.TestApp):
    """A WebTest app whose every response is checked against the OpenAPI document."""

    checker: OpenAPIChecker

    def do_request(self, req, status=None, expect_errors=None):
        response = super().do_request(req, status=status, expect_errors=expect_errors)
        self.checker.check(req.method, req.path_info, response)
        return response


@pytest.fixture(scope="session")
def openapi_checker(modelreg_app) -> OpenAPIChecker:
    document = webtest.TestApp(modelreg_app).get("/api/v1/openapi.json").json
    return OpenAPIChecker(document)


@pytest.fixture
def testapp(modelreg_app, openapi_checker) -> Iterator[CheckedTestApp]:
    app = CheckedTestApp(modelreg_app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    app.checker = openapi_checker
    yield app
    clear_database(modelreg_app.registry["db_engine"])


@pytest.fixture(scope="module")
def secure_wsgi_app(modelreg_database) -> Iterator[Any]:
    """The app over the session's database with no anonymous access at all."""
    app = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "none",
    })
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def secure_app(secure_wsgi_app, openapi_checker) -> Iterator[CheckedTestApp]:
    """A checked WebTest app of :func:`secure_wsgi_app`; the database is emptied after."""
    app = CheckedTestApp(secure_wsgi_app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    app.checker = openapi_checker
    yield app
    clear_database(secure_wsgi_app.registry["db_engine"])


@pytest.fixture
def backend(modelreg_database) -> str:
    return modelreg_database.backend
