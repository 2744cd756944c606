"""Views declared read-only (``modelreg.api.add_read_only_view``, ``read_only=True`` on an
API view) run outside pyramid_tm: their session belongs to no transaction manager, is closed
when the request ends, and refuses to write."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
import webtest
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid_retry import RetryableException

from modelreg import api, keys
from modelreg.api import add_read_only_view, mark_changed
from modelreg.db import READ_ONLY_KEY, plain_connection, plain_row_type
from modelreg.models import Model
from modelreg.testing import CORE_PLUGINS, clear_database, make_app

OPEN = NO_PERMISSION_REQUIRED


def peek(request: Any) -> dict[str, Any]:
    request.dbsession.execute(sa.text("SELECT 1")).all()
    return {"tm_active": bool(request.environ.get("tm.active")),
            "session": type(request.dbsession).__name__}


def add_object(request: Any) -> dict[str, Any]:
    request.dbsession.add(Model(name="written", normalized_name="written"))
    request.dbsession.flush()
    return {}


def orm_insert(request: Any) -> dict[str, Any]:
    request.dbsession.execute(sa.insert(Model).values(name="written",
                                                      normalized_name="written"))
    return {}


def core_write(request: Any) -> dict[str, Any]:
    request.dbsession.connection().execute(sa.insert(Model.__table__).values(
        name="written", normalized_name="written"))
    mark_changed(request.dbsession)
    return {}


def plain_then_orm(request: Any) -> dict[str, Any]:
    plain = plain_connection(request.dbsession)
    plain.execute(sa.select(sa.literal(1))).all()
    request.dbsession.execute(sa.text("SELECT 1")).all()
    return {"one_connection": request.dbsession.connection() is plain,
            "again": plain_connection(request.dbsession) is plain}


def add_then_plain(request: Any) -> dict[str, Any]:
    request.dbsession.add(Model(name="written", normalized_name="written"))
    plain_connection(request.dbsession)
    return {}


def flaky(request: Any) -> dict[str, Any]:
    if request.environ["retry.attempt"] == 0:
        raise RetryableException("the first attempt fails")
    return {"attempt": request.environ["retry.attempt"], "body": request.body.decode()}


class ReadOnlyPlugin:
    """A read-only view, the same view not declared read-only, and read-only views that
    try to write in each way the app writes."""

    @api.hookimpl
    def modelreg_pyramid_configure(self, config: Any) -> None:
        """The test routes."""
        for name, view, read_only in (("ro.peek", peek, True), ("ro.tm", peek, False),
                                      ("ro.add", add_object, True),
                                      ("ro.orm", orm_insert, True),
                                      ("ro.core", core_write, True),
                                      ("ro.plain", plain_then_orm, True),
                                      ("ro.tm_plain", plain_then_orm, False),
                                      ("ro.add_plain", add_then_plain, True),
                                      ("ro.flaky", flaky, True)):
            config.add_route(name, f"/ro/{name}")
            config.add_view(view, route_name=name, request_method="GET", permission=OPEN,
                            renderer="json")
            if read_only:
                add_read_only_view(config, name)


@pytest.fixture
def app(modelreg_settings: dict[str, Any], modelreg_database: Any) -> Any:
    wsgi = make_app(modelreg_settings, (*CORE_PLUGINS, ReadOnlyPlugin()))
    yield webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(wsgi.registry["db_engine"])
    wsgi.registry["db_engine"].dispose()


def _checked_out(app: Any) -> int:
    pool = app.app.registry[keys.DB_ENGINE].pool
    return pool.checkedout() if hasattr(pool, "checkedout") else 0


def test_a_read_only_view_runs_outside_pyramid_tm_and_returns_its_connection(app):
    assert app.get("/ro/ro.peek").json == {"tm_active": False, "session": "ReadOnlySession"}
    assert _checked_out(app) == 0
    app.head("/ro/ro.peek", status=200)
    assert _checked_out(app) == 0
    # The same view, not declared read-only: in pyramid_tm's transaction, as before.
    assert app.get("/ro/ro.tm").json == {"tm_active": True, "session": "TmSession"}


@pytest.mark.parametrize("path", ["/ro/ro.add", "/ro/ro.orm", "/ro/ro.core",
                                  "/ro/ro.add_plain"])
def test_a_write_in_a_read_only_view_fails_and_writes_nothing(app, path):
    response = app.get(path, status=500)
    assert response.json["error"]["code"] == "internal_error"
    assert _checked_out(app) == 0
    engine = app.app.registry[keys.DB_ENGINE]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Model.__table__)
                            .where(Model.name == "written")).scalar() == 0


def test_the_core_json_reads_are_read_only(app):
    read_only = app.app.registry[READ_ONLY_KEY]
    for route in ("api.models", "api.model", "api.versions", "api.version", "api.aliases",
                  "api.alias", "api.alias_history", "api.files"):
        assert {(route, "GET"), (route, "HEAD")} <= read_only, route
    # Writes, downloads and uploads stay in pyramid_tm.
    assert not any(method not in ("GET", "HEAD") for _, method in read_only)
    assert ("api.file", "GET") not in read_only


def test_a_core_read_answers_and_returns_its_connection(app):
    app.get("/api/v1/models/nothing/versions/1", status=(401, 404))
    app.get("/api/v1/models", status=(200, 401))
    assert _checked_out(app) == 0


def test_plain_reads_and_the_orm_share_the_read_only_requests_connection(app):
    """A read-only request's plain reads (modelreg.db.plain_connection) run on a connection
    of the engine, no session transaction; what the session then reads joins it; both go
    back to the pool when the request ends.  In pyramid_tm, the session's own connection."""
    assert app.get("/ro/ro.plain").json == {"one_connection": True, "again": True}
    assert _checked_out(app) == 0
    assert app.get("/ro/ro.tm_plain").json == {"one_connection": True, "again": True}
    assert _checked_out(app) == 0
    # An alias that is not there: the plain read finds nothing, the ORM then reads the model.
    app.post_json("/api/v1/models", {"name": "plain"}, status=201)
    for path in ("/api/v1/models/plain/aliases/nope", "/api/v1/models/nope/aliases/nope",
                 "/api/v1/models/nope/versions/1"):
        app.get(path, status=404)
        assert _checked_out(app) == 0


def test_a_read_is_retried_with_its_body(app):
    """A read that fails with a retryable error runs again, its body (none, or what the
    client sent) read again from the start (modelreg.db.retry_activate_hook)."""
    assert app.get("/ro/ro.flaky").json == {"attempt": 1, "body": ""}
    assert app.get("/ro/ro.flaky", headers={"Content-Length": "0"}).json == {
        "attempt": 1, "body": ""}
    response = app.request("/ro/ro.flaky", method="GET", body=b"sent")
    assert response.json == {"attempt": 1, "body": "sent"}
    assert _checked_out(app) == 0


def test_plain_row_types_name_the_columns_as_the_results_do(app):
    """modelreg.db.plain_row_type: the named tuples that the version document, the alias
    document and the token's check read their rows into have the result's column names,
    in its order, on each database."""
    from modelreg.registry.queries import _alias_document_statement, _version_document_statement
    from modelreg.security.tokens import _token_statement

    statements = [(_version_document_statement(kind), {"model": "m", "value": value})
                  for kind, value in (("number", 1), ("id", 1), ("latest", None),
                                      ("digest", "sha256:0"), ("alias", "a"))]
    statements += [(_token_statement(True), {"public_id": "p", "client": "c"}),
                   (_token_statement(False), {"public_id": "p"}),
                   (_alias_document_statement(), {"model": "m", "alias": "a"})]
    with app.app.registry[keys.DB_ENGINE].connect() as conn:
        for statement, params in statements:
            names = tuple(conn.execute(statement, params).keys())
            assert plain_row_type(statement)._fields == names


def test_sqlite_reads_begin_and_writes_begin_immediate(app):
    """On SQLite every transaction begins with BEGIN (the dialect's do_begin), a writing
    engine's with BEGIN IMMEDIATE (its own begin listener), each once; the reading engine
    has no connection event to call."""
    from modelreg.db import writer_engine

    engine = app.app.registry[keys.DB_ENGINE]
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's transactions")
    assert not engine._has_events  # what a begin listener on it would change
    for bind, begin in ((engine, "BEGIN"), (app.app.registry[keys.DB_WRITER_ENGINE],
                                            "BEGIN IMMEDIATE"), (writer_engine(engine),
                                                                 "BEGIN IMMEDIATE"),
                        (writer_engine(writer_engine(engine)), "BEGIN IMMEDIATE")):
        with bind.connect() as conn:
            driver = conn.connection.driver_connection
            traced: list[str] = []
            driver.set_trace_callback(traced.append)
            try:
                conn.execute(sa.select(sa.func.count()).select_from(Model.__table__)).all()
                assert driver.in_transaction
                conn.rollback()
                conn.execute(sa.select(sa.literal(1))).all()
            finally:
                driver.set_trace_callback(None)
        assert [s for s in traced if s.startswith("BEGIN")] == [begin, begin], traced
    # A connection left in a transaction is not quietly reused: BEGIN fails, as before.
    with engine.connect() as conn:
        conn.connection.driver_connection.execute("BEGIN")
        with pytest.raises(sa.exc.OperationalError, match="within a transaction"):
            conn.execute(sa.select(sa.literal(1)))
