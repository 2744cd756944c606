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
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import webtest

from modelreg.testing import BACKENDS, TestDatabase, clear_database, make_app, unavailable
from modelreg.testing.server import LiveServer
from openapi_checking import CheckedTestApp, OpenAPIChecker


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


@pytest.fixture(scope="session")
def race_servers(modelreg_settings: dict[str, Any], modelreg_database: TestDatabase
                 ) -> Iterator[list[LiveServer]]:
    """Two Waitress processes over the session's database and blob directory, shared by the
    race tests (tests/test_races.py, tests/test_upload_races.py, tests/test_file_paths.py):
    started once per database rather than once per module.

    PostgreSQL and MariaDB only: SQLite serializes every writer, there is no race to lose
    (the serial outcomes are tested through WebTest, e.g. tests/test_versions.py).  A version
    needs the metadata key ``approved`` to be finalized, finalize decides at once (no
    scanner), and upload chunks may be as small as 64 KiB.
    """
    if modelreg_database.backend == "sqlite":
        pytest.skip("SQLite serializes writers: the race needs PostgreSQL or MariaDB")
    settings = {key: str(value) for key, value in modelreg_settings.items()
                if isinstance(value, str | int | float | bool)}
    settings["retry.attempts"] = "3"
    settings["modelreg.policy.required_metadata"] = "approved"
    settings["modelreg.plugins.disabled"] = "scan"
    settings["modelreg.upload.min_chunk_size"] = str(64 * 1024)
    # They live until the session moves to the next database: between the race tests they
    # keep at most two idle connections per engine (a burst opens and closes the rest).
    settings["sqlalchemy.pool_size"] = "2"
    settings["sqlalchemy.max_overflow"] = "30"
    servers = [LiveServer(settings, threads=16) for _ in range(2)]
    failures: list[BaseException] = []

    def start(server: LiveServer) -> None:
        try:
            server.start()
        except BaseException as exc:  # raised below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if failures:
            raise failures[0]
        yield servers
    finally:
        for server in servers:
            server.stop()
