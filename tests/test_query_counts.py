"""A bounded number of SQL statements per request on the hot paths: a regression guard.

Each read or write below must not grow its statement count by accident (a lazy load of a
relationship, a per-row query in a listing).  Counted on the app's engine with SQLAlchemy's
``before_cursor_execute`` event, leaving out transaction control (``BEGIN`` on SQLite, which
the engine emits itself).  If a change needs more statements on purpose, raise the budget
here and say why in the commit.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers import API, create_model, ready_version
from modelreg.db import get_engine
from modelreg.testing import counting_statements
from security_helpers import add_principal, bearer, seed_model

M = f"{API}/models/fraud-detector"

#: Statements per request, at most.
BUDGETS = {
    # One statement: the version, its model's name, its tags and aliases (UNION ALL).
    "get version by number": 1,
    "get version by alias": 1,
    "get version latest": 1,
    # One statement: the alias joined with its model and version.
    "resolve alias": 1,
    # One statement whatever the page size: the page, its tags and aliases.
    "search a page": 1,
    # The version (with its model), the model locked (as moving an alias locks it), the
    # version's aliases, the tag, the insert, the version's updated_at, the audit event and
    # the outbox event...
    "set version tag": 8,
    # ...and when the version carries an alias, the documents its rules see
    # (modelreg_validate_alias): the model's and the version's, one statement each.
    "set tag of an aliased version": 10,
    # The model (locked), the tag, the insert, the model's updated_at, audit, outbox.
    "set model tag": 6,
    # The model (locked), the version, the alias; the documents the alias's rules see (the
    # model, the new and the previous version: one statement each); the history row, the
    # model's updated_at, the alias's update, audit, outbox.
    "move alias": 11,
}


@pytest.fixture
def populated(testapp):
    create_model(testapp, tags={"team": "risk", "tier": "gold"})
    for _ in range(3):
        ready_version(testapp)
    testapp.put_json(f"{M}/versions/2/tags/stage", {"value": "prod"})
    testapp.put_json(f"{M}/aliases/champion", {"version": 2}, status=201)
    for i in range(5):
        create_model(testapp, f"fraud-{i}", tags={"team": "risk"})
    return testapp


@pytest.mark.parametrize(("operation", "method", "path", "body"), [
    ("get version by number", "get", f"{M}/versions/2", None),
    ("get version by alias", "get", f"{M}/versions/champion", None),
    ("get version latest", "get", f"{M}/versions/latest", None),
    ("resolve alias", "get", f"{M}/aliases/champion", None),
    ("search a page", "get", f"{API}/models?filter=tag.team+%3D+%27risk%27&page_size=3", None),
    ("set version tag", "put_json", f"{M}/versions/3/tags/owner", {"value": "ana"}),
    ("set tag of an aliased version", "put_json", f"{M}/versions/2/tags/owner",
     {"value": "ana"}),
    ("set model tag", "put_json", f"{M}/tags/owner", {"value": "ana"}),
    ("move alias", "put_json", f"{M}/aliases/champion", {"version": 3}),
])
def test_statements_per_request(populated, operation, method, path, body):
    app = populated
    args = (path,) if body is None else (path, body)
    with counting_statements(app.app.registry["db_engine"]) as statements:
        response = getattr(app, method)(*args, status=200)
    assert len(statements) <= BUDGETS[operation], (operation, statements)
    assert response.json


def test_a_page_is_one_statement_whatever_its_size(populated):
    app = populated
    for size in (1, 4, 100):
        with counting_statements(app.app.registry["db_engine"]) as statements:
            page = app.get(f"{API}/models", {"page_size": str(size)}).json
        assert len(statements) == 1, statements
        assert len(page["models"]) == min(size, 6)


def test_a_page_renders_tags_aliases_and_latest(populated):
    """What the one statement of a page must still give: tags and aliases in key order,
    the latest version, the next page's token."""
    app = populated
    first = app.get(f"{API}/models", {"page_size": "1"}).json
    assert [m["name"] for m in first["models"]] == ["fraud-0"]
    assert first["next_page_token"]
    everything = app.get(f"{API}/models", {"filter": "name = 'fraud-detector'"}).json
    (model,) = everything["models"]
    assert model["tags"] == {"team": "risk", "tier": "gold"}
    assert list(model["tags"]) == ["team", "tier"]
    assert model["aliases"] == {"champion": 2}
    assert model["latest_version"] == 3
    assert everything["next_page_token"] is None


@pytest.mark.parametrize(("parameter", "setting", "expected"), [
    ("plan_cache_mode", None, "force_custom_plan"),
    ("plan_cache_mode", "", None),
    ("plan_cache_mode", "force_generic_plan", "force_generic_plan"),
    ("max_parallel_workers_per_gather", None, "0"),
    ("max_parallel_workers_per_gather", "", None),
    ("max_parallel_workers_per_gather", "1", "1"),
])
def test_postgresql_connections_are_set_for_short_statements(modelreg_database, parameter,
                                                            setting, expected):
    """Statements that psycopg prepares are still planned with their values (a generic plan
    of a search knows neither its LIKE prefix nor its LIMIT), and start no parallel worker (a
    tag-filtered page of 100,000 models took 26 ms with one, 11 without), unless
    ``modelreg.postgresql.<parameter>`` says otherwise (empty: the server's own value)."""
    if modelreg_database.backend != "postgresql":
        pytest.skip("a PostgreSQL setting")
    if expected is None:  # the server's own value, as a plain connection sees it
        plain = sa.create_engine(modelreg_database.url)
        try:
            with plain.connect() as conn:
                expected = conn.exec_driver_sql(f"SHOW {parameter}").scalar()
        finally:
            plain.dispose()
    settings = {"sqlalchemy.url": modelreg_database.url}
    if setting is not None:
        settings[f"modelreg.postgresql.{parameter}"] = setting
    engine = get_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql(f"SHOW {parameter}").scalar() == expected
    finally:
        engine.dispose()


@pytest.mark.parametrize(("pre_ping", "ping_after", "pings"), [
    (None, None, 0), ("true", 0.0, 2), ("false", 0.0, 0)])
def test_a_connection_used_a_moment_ago_is_not_pinged(modelreg_database, monkeypatch,
                                                      pre_ping, ping_after, pings):
    """``sqlalchemy.pool_pre_ping`` (default on) pings a pooled connection before use only
    when it lay idle longer than ``PING_AFTER_IDLE_SECONDS``: a round trip per request less
    under load (a restarted database: tests/test_database_restart.py)."""
    if modelreg_database.backend == "sqlite":
        pytest.skip("no server to lose")
    from modelreg import db

    if ping_after is not None:
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", ping_after)
    settings = {"sqlalchemy.url": modelreg_database.url, "sqlalchemy.pool_size": "1"}
    if pre_ping is not None:
        settings["sqlalchemy.pool_pre_ping"] = pre_ping
    engine = get_engine(settings)
    seen = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: seen.append(1) or real_ping(conn))
    try:
        for _ in range(3):  # a new connection (never pinged), then the same one twice
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert len(seen) == pings
    finally:
        engine.dispose()


def test_a_postgresql_parameter_that_is_no_value_stops_start_up():
    with pytest.raises(ValueError, match="max_parallel_workers_per_gather"):
        get_engine({"sqlalchemy.url": "postgresql+psycopg://postgres@127.0.0.1/x",
                    "modelreg.postgresql.max_parallel_workers_per_gather": "0 -c fsync=off"})


def test_a_read_with_a_bearer_token_is_two_statements(secure_wsgi_app, secure_app):
    """The token (its principal, grants and the client's throttling block) in one
    statement, then the read's own: revocation, expiry and grants are read on every
    request, never cached."""
    token = add_principal(secure_wsgi_app, "counted-reader", grants=[("*", "read")],
                          scopes=["read"])
    seed_model(secure_wsgi_app, "counted-model")
    path = "/api/v1/models/counted-model/aliases/champion"
    secure_app.get(path, headers=bearer(token))  # the first use stamps last_used_at
    with counting_statements(secure_wsgi_app.registry["db_engine"]) as statements:
        body = secure_app.get(path, headers=bearer(token)).json
    assert body["version"] == 1
    assert len(statements) == 2, statements
    assert "api_tokens" in statements[0] and "auth_failures" in statements[0]
