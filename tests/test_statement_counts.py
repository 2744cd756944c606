"""A bounded number of SQL statements per write: a regression guard for the write path.

Each write is counted on the app's engine with SQLAlchemy's ``before_cursor_execute`` event,
transaction control left out (as in tests/test_query_counts.py, which keeps the reads at one
statement and budgets the writes of an app with its rules).  On PostgreSQL a statement is a
round trip: the budgets below are what ``bench/statements.py`` measures there
(docs/performance.md, "Write path").  Other databases get the statements their dialect needs
on top, by what the dialect can do, never by name: the audit and outbox rows are two INSERTs
where an INSERT cannot be a CTE of another (all but PostgreSQL), so are a tag's read and its
write, and an alias's write, its history row and its model's update, and a counter or a touched
row is read back where an UPDATE returns no rows (MariaDB).

Every write still writes its audit event and its outbox event, in its transaction: each test
checks that one of each was added.  If a change needs more statements on purpose, raise the
budget here and say why in the commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import API, create_model, ready_version
from modelreg.testing import clear_database, counting_statements, make_app
from openapi_checking import CheckedTestApp

M = f"{API}/models/fraud-detector"

#: Statements per write on PostgreSQL, at most, with no alias rule configured.
BUDGETS = {
    # The look-alike check, the INSERT, audit and outbox (one statement).
    "create model": 3,
    # UPDATE of the counter RETURNING the model (it locks it), the INSERT, audit + outbox.
    "create version": 3,
    # ... and the INSERT of its tags (one, whatever their number).
    "create version with tags": 4,
    # The model locked; the version (locked) with the alias; the alias's INSERT or UPDATE
    # with the history row and the model's updated_at (common table expressions of it);
    # audit + outbox.
    "set alias": 4,
    "move alias": 4,
    # UPDATE of the version's updated_at RETURNING it (it locks it), the tag's INSERT or
    # UPDATE returning its previous value (one statement), audit + outbox: an alias on the
    # version changes nothing.
    "set version tag": 3,
    "replace version tag": 3,
    "set tag of an aliased version": 3,
    # ... the tag read, its DELETE.
    "delete version tag": 4,
}

#: With a protected alias configured (an alias rule): the model locked, then the version, the
#: version's aliases, the documents the rule sees (the model's and the version's), the tag,
#: the version's updated_at, the tag's write, audit + outbox.
RULED_BUDGETS = {
    "set tag of an aliased version": 9,
    "delete version tag": 9,
    # The model locked; the version with the alias; the documents the rule sees (the model,
    # the new and the previous version); the alias with history and updated_at; audit +
    # outbox.
    "move alias": 7,
}


def extra(engine: sa.Engine, operation: str) -> int:
    """Statements the dialect of ``engine`` needs beyond PostgreSQL's for ``operation``."""
    more = 0 if engine.dialect.name == "postgresql" else 1  # audit and outbox: two INSERTs
    if engine.dialect.name != "postgresql" and "tag" in operation and "delete" not in operation:
        more += 1  # the tag read, then written (not a CTE of its INSERT … ON CONFLICT)
    if engine.dialect.name != "postgresql" and "alias" in operation:
        more += 2  # the history row and the model's updated_at: not CTEs of the alias's write
    if not engine.dialect.update_returning:
        if operation.startswith("create version"):
            more += 2  # the model read first, its counter read back
        elif "tag" in operation:  # a version tag's write
            more += 1  # the version locked by a SELECT, then updated
    return more


def events(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.scalar(sa.text("SELECT count(*) FROM audit_events")),
                conn.scalar(sa.text("SELECT count(*) FROM outbox")))


def run(app: Any, operation: str, method: str, path: str, body: Any, status: int,
        budget: int) -> None:
    """Run one write; check its status, its statement count, and its two events."""
    engine = app.app.registry["db_engine"]
    before = events(engine)
    with counting_statements(engine) as statements:
        args = (path,) if body is None else (path, body)
        getattr(app, method)(*args, status=status)
    limit = budget + extra(engine, operation)
    assert len(statements) <= limit, (operation, len(statements), limit, statements)
    audit, outbox = events(engine)
    assert (audit - before[0], outbox - before[1]) == (1, 1), operation


#: operation, method, path, body, status.  Against a model with versions 1 (champion) and
#: 2 (ready, no alias), version 1 tagged ``stage``.
WRITES = [
    ("create model", "post_json", f"{API}/models", {"name": "another"}, 201),
    ("create version", "post_json", f"{M}/versions", {}, 201),
    ("create version with tags", "post_json", f"{M}/versions",
     {"tags": {"a": "1", "b": "2"}}, 201),
    ("set alias", "put_json", f"{M}/aliases/staging", {"version": 2}, 201),
    ("move alias", "put_json", f"{M}/aliases/champion", {"version": 2}, 200),
    ("set version tag", "put_json", f"{M}/versions/2/tags/owner", {"value": "ana"}, 200),
    ("replace version tag", "put_json", f"{M}/versions/1/tags/stage", {"value": "prod"}, 200),
    ("set tag of an aliased version", "put_json", f"{M}/versions/1/tags/owner",
     {"value": "ana"}, 200),
    ("delete version tag", "delete", f"{M}/versions/1/tags/stage", None, 204),
]


def populate(app: Any) -> None:
    create_model(app)
    ready_version(app, tags={"stage": "dev", "approved": "true"})
    ready_version(app)
    app.put_json(f"{M}/aliases/champion", {"version": 1}, status=201)


@pytest.mark.parametrize(("operation", "method", "path", "body", "status"), WRITES)
def test_statements_per_write(testapp, operation, method, path, body, status):
    populate(testapp)
    run(testapp, operation, method, path, body, status, BUDGETS[operation])


@pytest.fixture
def ruled_app(modelreg_database, openapi_checker, tmp_path) -> Iterator[CheckedTestApp]:
    """The app with an alias rule: ``champion`` is protected and needs ``approved=true``."""
    wsgi = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "modelreg.storage": "local",
        "modelreg.storage.local.path": str(tmp_path),
        "modelreg.auth.anonymous": "write",
        "modelreg.policy.protected_aliases": "champion:approved=true",
    })
    app = CheckedTestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    app.checker = openapi_checker
    yield app
    clear_database(wsgi.registry["db_engine"])
    wsgi.registry["db_engine"].dispose()


@pytest.mark.parametrize(("operation", "method", "path", "body", "status"),
                         [w for w in WRITES if w[0] in RULED_BUDGETS])
def test_statements_per_write_with_an_alias_rule(ruled_app, operation, method, path, body,
                                                  status):
    """Where an alias rule applies, its documents are read and the model stays locked."""
    populate(ruled_app)
    if operation == "move alias":  # onto a version the rule accepts
        ruled_app.put_json(f"{M}/versions/2/tags/approved", {"value": "true"}, status=200)
    run(ruled_app, operation, method, path, body, status, RULED_BUDGETS[operation])


def test_the_rule_still_refuses(ruled_app):
    """The rule's reads are not skipped where they decide: the tag a protected alias needs
    cannot be taken from its version, nor the alias moved onto a version without it."""
    populate(ruled_app)
    response = ruled_app.delete(f"{M}/versions/1/tags/approved", status=422)
    assert response.json["error"]["code"] == "validation_failed"
    response = ruled_app.put_json(f"{M}/aliases/champion", {"version": 2}, status=422)
    assert response.json["error"]["code"] == "validation_failed"
    assert ruled_app.get(f"{M}/aliases/champion").json["version"] == 1


def test_a_tag_write_audits_the_value_it_replaced(testapp):
    """A version tag's write reads its previous value with it (on PostgreSQL in the same
    statement): the audit event says what it was, a new tag has none, and a new version's
    tags (written without the unit of work) are the version's."""
    populate(testapp)
    engine = testapp.app.registry["db_engine"]

    def last_event() -> tuple[Any, Any]:
        with engine.connect() as conn:
            audit = sa.table("audit_events", sa.column("id"), sa.column("before"),
                             sa.column("after"))
            before, after = conn.execute(sa.select(audit.c.before, audit.c.after)
                                         .order_by(audit.c.id.desc())).first()
        decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
        return decode(before), decode(after)

    testapp.put_json(f"{M}/versions/1/tags/stage", {"value": "prod"}, status=200)
    assert last_event() == ({"value": "dev"}, {"value": "prod"})
    testapp.put_json(f"{M}/versions/1/tags/owner", {"value": "ana"}, status=200)
    assert last_event() == (None, {"value": "ana"})
    testapp.put_json(f"{M}/versions/1/tags/owner", {"value": "bo"}, status=200)
    assert last_event() == ({"value": "ana"}, {"value": "bo"})
    tags = testapp.get(f"{M}/versions/1").json["tags"]
    assert tags == {"stage": "prod", "approved": "true", "owner": "bo"}
    created = testapp.post_json(f"{M}/versions", {"tags": {"b": "2", "a": "1"}},
                                status=201).json
    assert created["tags"] == {"a": "1", "b": "2"} and created["aliases"] == []
    assert testapp.get(f"{M}/versions/{created['number']}").json["tags"] == {"a": "1", "b": "2"}
