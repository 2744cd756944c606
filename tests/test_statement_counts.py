"""A bounded number of SQL statements per write: a regression guard for the write path.

Each write is counted on the app's engine with SQLAlchemy's ``before_cursor_execute`` event,
transaction control left out (as in tests/test_query_counts.py, which keeps the reads at one
statement and budgets the writes of an app with its rules).  On PostgreSQL a statement is a
round trip: the budgets below are what ``bench/statements.py`` measures there
(docs/performance.md, "Write path").  Other databases get the statements their dialect needs
on top, by what the dialect can do, never by name: the audit and outbox rows are two INSERTs
where an INSERT cannot be a CTE of another (all but PostgreSQL), so are a new version's
counter, its INSERT, its tags' and its events, a tag's lock, its read, its write and its
events, and an alias's write, its history row and its model's update, and a counter or a
touched row is read back where an UPDATE returns no rows (MariaDB).

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
    # One: the UPDATE of the counter (it locks the model), the version's INSERT, its tags'
    # INSERT (one, whatever their number), audit + outbox, as common table expressions.
    "create version": 1,
    "create version with tags": 1,
    # The model locked; the version (locked) with the alias; the alias's INSERT or UPDATE
    # with the history row and the model's updated_at (common table expressions of it);
    # audit + outbox.
    "set alias": 4,
    "move alias": 4,
    # One: the UPDATE of the version's updated_at (it locks it), the tag's previous value,
    # its INSERT or UPDATE, audit + outbox, as common table expressions: an alias on the
    # version changes nothing.
    "set version tag": 1,
    "replace version tag": 1,
    "set tag of an aliased version": 1,
    # The version locked; the tag read, its DELETE, audit + outbox.
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


def extra(engine: sa.Engine, operation: str, ruled: bool = False) -> int:
    """Statements the dialect of ``engine`` needs beyond PostgreSQL's for ``operation``
    (``ruled``: with an alias rule)."""
    if engine.dialect.name == "postgresql":
        return 0
    more = 1  # audit and outbox: two INSERTs
    created = operation.startswith("create version")
    tag_set = ("version tag" in operation and "delete" not in operation) or (
        operation == "set tag of an aliased version")
    if created:
        # The version's INSERT, its tags' and the events': not CTEs of the counter's UPDATE.
        more += 2 + ("tags" in operation)
    if tag_set:
        more += 1  # the tag read, then written (not a CTE of its INSERT … ON CONFLICT)
        # The version's lock and the events: not CTEs of the tag's write.
        more += 2 * (not ruled)
    if "alias" in operation and not tag_set:
        more += 2  # the history row and the model's updated_at: not CTEs of the alias's write
    if not engine.dialect.update_returning:
        if created:
            more += 2  # the model read first, its counter read back
        elif tag_set or operation == "delete version tag":
            more += 1  # the version locked by a SELECT, then updated
    return more


def events(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.scalar(sa.text("SELECT count(*) FROM audit_events")),
                conn.scalar(sa.text("SELECT count(*) FROM outbox")))


def run(app: Any, operation: str, method: str, path: str, body: Any, status: int,
        budget: int, ruled: bool = False) -> None:
    """Run one write; check its status, its statement count, and its two events."""
    engine = app.app.registry["db_engine"]
    before = events(engine)
    with counting_statements(engine) as statements:
        args = (path,) if body is None else (path, body)
        getattr(app, method)(*args, status=status)
    limit = budget + extra(engine, operation, ruled)
    # Without a rule, exactly the budget: a statement saved is a budget to lower.
    assert len(statements) <= limit if ruled else len(statements) == limit, (
        operation, len(statements), limit, statements)
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
    run(ruled_app, operation, method, path, body, status, RULED_BUDGETS[operation],
        ruled=True)


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


def test_the_events_of_a_write_of_one_statement(testapp):
    """Where the write and its events are one statement (a new version, a tag set, on
    PostgreSQL), the audit event and the outbox event say what :meth:`record` writes
    elsewhere: the target, the actor, before and after, the model."""
    populate(testapp)
    engine = testapp.app.registry["db_engine"]

    def last_events() -> tuple[Any, ...]:
        audit = sa.table("audit_events", sa.column("id"), sa.column("action"),
                         sa.column("target_type"), sa.column("target"), sa.column("actor"),
                         sa.column("before"), sa.column("after"))
        outbox = sa.table("outbox", sa.column("id"), sa.column("type"), sa.column("model"),
                          sa.column("payload"))
        decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
        with engine.connect() as conn:
            action, target_type, target, actor, before, after = conn.execute(
                sa.select(audit.c.action, audit.c.target_type, audit.c.target,
                          audit.c.actor, audit.c.before, audit.c.after)
                .order_by(audit.c.id.desc())).first()
            kind, model, payload = conn.execute(
                sa.select(outbox.c.type, outbox.c.model, outbox.c.payload)
                .order_by(outbox.c.id.desc())).first()
        payload = decode(payload)
        assert (kind, payload["actor"]) == (action, actor)
        return (action, target_type, target, decode(before), decode(after), model,
                payload["target"], payload["before"], payload["after"])

    created = testapp.post_json(f"{M}/versions", {"tags": {"b": "2", "a": "1"}},
                                status=201).json
    assert created["number"] == 3
    after = {"number": 3, "tags": {"b": "2", "a": "1"}}
    assert last_events() == ("version.created", "version", "fraud-detector/3", None, after,
                             "fraud-detector", "fraud-detector/3", None, after)
    testapp.put_json(f"{M}/versions/3/tags/a", {"value": "10"}, status=200)
    assert last_events() == ("version.tag_set", "version_tag", "fraud-detector/3:a",
                             {"value": "1"}, {"value": "10"}, "fraud-detector",
                             "fraud-detector/3:a", {"value": "1"}, {"value": "10"})
    testapp.put_json(f"{M}/versions/3/tags/c", {"value": "x"}, status=200)
    assert last_events()[3:5] == (None, {"value": "x"})
    assert last_events()[7:] == (None, {"value": "x"})
    counts = events(engine)
    testapp.post_json(f"{API}/models/nothing-here/versions", {}, status=404)
    assert events(engine) == counts
    assert testapp.get(f"{M}/versions/3").json["tags"] == {"a": "10", "b": "2", "c": "x"}
