"""A write that is the whole of its transaction (``modelreg.db.execute_alone``): on
PostgreSQL it runs outside a transaction block and commits itself, with no ``BEGIN`` and no
``COMMIT`` (two round trips of the three of a new version or a tag's write); anywhere else,
and after another statement of the same transaction, it is an ordinary statement of the
transaction.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from helpers import API, create_model
from modelreg import keys
from modelreg.db import execute_alone, mark_changed, transaction
from modelreg.models import Model

MODELS = Model.__table__


def insert(name: str) -> sa.Insert:
    return sa.insert(MODELS).values(name=name, normalized_name=name)


def names(engine: sa.Engine) -> list[str]:
    """The models' names, read on a connection of its own (what another client sees)."""
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(MODELS.c.name).order_by(MODELS.c.name)))


class Abort(Exception):
    pass


def waiting_for_a_lock(admin: sa.Connection) -> int | None:
    """The server process of this database that waits for a lock, once one does (for up to
    10 s); ``admin`` in autocommit, so that each look at ``pg_stat_activity`` is anew."""
    for _ in range(200):
        waiting = admin.scalar(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND pid <> pg_backend_pid()"))
        if waiting is not None:
            return waiting
        time.sleep(0.05)
    return None


def test_a_lone_write_commits_itself_on_postgresql(testapp, backend):
    """Another client sees the write as soon as it ran on PostgreSQL (no transaction block
    was open); elsewhere once the transaction commits."""
    registry = testapp.app.registry
    engine = registry[keys.DB_ENGINE]
    with transaction(registry) as session:
        execute_alone(session, insert("alone"), {})
        seen_before_commit = names(engine)
    assert seen_before_commit == (["alone"] if backend == "postgresql" else [])
    assert names(engine) == ["alone"]


def test_after_another_statement_it_stays_in_the_transaction(testapp):
    """Where the transaction already ran a statement, the write is one more of it: an
    aborted transaction leaves nothing, on every database."""
    registry = testapp.app.registry
    with pytest.raises(Abort), transaction(registry) as session:
        session.execute(sa.select(sa.func.count()).select_from(MODELS)).scalar()
        execute_alone(session, insert("alone"), {})
        raise Abort
    assert names(registry[keys.DB_ENGINE]) == []


def test_the_connection_goes_back_to_transactions(testapp, backend):
    """After a lone write, successful or refused, the connection's next statements are in a
    transaction again: aborting it undoes them."""
    registry = testapp.app.registry
    engine = registry[keys.DB_ENGINE]
    with transaction(registry) as session:
        execute_alone(session, insert("first"), {})
    with pytest.raises(IntegrityError), transaction(registry) as session:
        execute_alone(session, insert("first"), {})  # the name is taken
    for _ in range(engine.pool.size()):  # whichever pooled connection each gets
        with pytest.raises(Abort), transaction(registry) as session:
            execute_alone(session, insert("second"), {})
            if backend == "postgresql":
                assert session.connection().connection.dbapi_connection.autocommit is False
            session.connection().execute(insert("third"))
            raise Abort
        # the lone write committed itself on PostgreSQL; the statement after it did not
        expected = ["first", "second"] if backend == "postgresql" else ["first"]
        assert names(engine) == expected
        with transaction(registry) as session:
            session.connection().execute(sa.delete(MODELS).where(MODELS.c.name == "second"))
            mark_changed(session)


@pytest.fixture
def transaction_control(monkeypatch) -> list[bytes]:
    """The transaction control psycopg sends (``BEGIN``, ``COMMIT``, ``ROLLBACK``)."""
    sent: list[bytes] = []
    original = psycopg.Connection._exec_command

    def exec_command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(command if isinstance(command, bytes) else str(command).encode())
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "_exec_command", exec_command)
    return sent


def test_a_new_version_and_a_tag_are_one_round_trip_each(testapp, backend,
                                                         transaction_control):
    """``POST …/versions`` and ``PUT …/tags/{key}`` each send their one statement and no
    transaction control; the version, its tags, the tag's previous value and the events are
    all there.  A write of more statements (a tag's deletion) still runs between ``BEGIN``
    and ``COMMIT``."""
    if backend != "postgresql":
        pytest.skip("transaction control of psycopg")
    create_model(testapp)
    transaction_control.clear()
    created = testapp.post_json(f"{API}/models/fraud-detector/versions",
                                {"tags": {"stage": "dev"}}, status=201).json
    assert (created["number"], created["tags"]) == (1, {"stage": "dev"})
    assert transaction_control == []
    engine = testapp.app.registry[keys.DB_ENGINE]
    with engine.connect() as conn:
        actions = list(conn.scalars(sa.text("SELECT action FROM audit_events ORDER BY id")))
        outbox = conn.scalar(sa.text("SELECT count(*) FROM outbox"))
        tags = conn.execute(sa.text("SELECT key, value FROM version_tags")).all()
    assert actions[-1] == "version.created" and outbox == len(actions)
    assert [tuple(t) for t in tags] == [("stage", "dev")]
    assert testapp.get(f"{API}/models/fraud-detector/versions/1").json["tags"] == {
        "stage": "dev"}

    transaction_control.clear()
    for value in ("ana", "bo"):
        testapp.put_json(f"{API}/models/fraud-detector/versions/1/tags/owner",
                         {"value": value}, status=200)
    assert transaction_control == []
    with engine.connect() as conn:
        audits = conn.execute(sa.text(
            "SELECT action, target, before, after FROM audit_events ORDER BY id")).all()[-2:]
        outbox = conn.execute(sa.text(
            "SELECT type, model, payload FROM outbox ORDER BY id")).all()[-2:]
    assert [tuple(a) for a in audits] == [
        ("version.tag_set", "fraud-detector/1:owner", None, {"value": "ana"}),
        ("version.tag_set", "fraud-detector/1:owner", {"value": "ana"}, {"value": "bo"})]
    assert [(e.type, e.model, e.payload["target"], e.payload["before"]) for e in outbox] == [
        ("version.tag_set", "fraud-detector", "fraud-detector/1:owner", None),
        ("version.tag_set", "fraud-detector", "fraud-detector/1:owner", {"value": "ana"})]
    assert testapp.get(f"{API}/models/fraud-detector/versions/1").json["tags"] == {
        "stage": "dev", "owner": "bo"}

    transaction_control.clear()
    testapp.delete(f"{API}/models/fraud-detector/versions/1/tags/owner", status=204)
    assert [c.split()[0] for c in transaction_control] == [b"BEGIN", b"COMMIT"]


@pytest.mark.parametrize("existed", [False, True], ids=["added", "changed"])
def test_a_tag_written_while_its_write_waits_for_the_lock_is_its_before(testapp, backend,
                                                                        existed):
    """Another writer holds the version's row and adds the tag (or changes it); the write
    that waited for the row (its one statement began before that) records the other
    writer's value as its ``before`` and replaces it."""
    if backend != "postgresql":
        pytest.skip("a write that waits for a row lock inside its one statement")
    create_model(testapp)
    testapp.post_json(f"{API}/models/fraud-detector/versions",
                      {"tags": {"owner": "zero"} if existed else {}}, status=201)
    engine = testapp.app.registry[keys.DB_ENGINE]
    answers: list[Any] = []
    with (engine.connect() as holder,
          engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin):
        version_id = holder.scalar(sa.text(  # locks the row, as a tag's write does
            "UPDATE versions SET updated_at = updated_at WHERE number = 1 RETURNING id"))
        holder.execute(sa.text(
            "UPDATE version_tags SET value = 'first' WHERE version_id = :id" if existed else
            "INSERT INTO version_tags (version_id, key, value) VALUES (:id, 'owner', 'first')"
        ), {"id": version_id})
        request = threading.Thread(target=lambda: answers.append(testapp.put_json(
            f"{API}/models/fraud-detector/versions/1/tags/owner", {"value": "second"},
            expect_errors=True)))
        request.start()
        assert waiting_for_a_lock(admin) is not None, "the tag's write never waited"
        holder.commit()
        request.join(30)
    (answer,) = answers
    assert answer.status_int == 200, answer.text
    with engine.connect() as conn:
        audit = conn.execute(sa.text("SELECT before, after FROM audit_events "
                                     "WHERE action = 'version.tag_set'")).one()
        payload = conn.scalar(sa.text("SELECT payload FROM outbox "
                                      "WHERE type = 'version.tag_set'"))
    assert tuple(audit) == ({"value": "first"}, {"value": "second"})
    assert payload["before"] == {"value": "first"}
    assert testapp.get(f"{API}/models/fraud-detector/versions/1").json["tags"] == {
        "owner": "second"}


def test_a_tag_of_a_missing_version_writes_nothing(testapp, backend):
    """A tag for a version that does not exist: 404, and no row anywhere."""
    create_model(testapp)
    engine = testapp.app.registry[keys.DB_ENGINE]
    with engine.connect() as conn:
        before = [conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
                  for table in ("version_tags", "audit_events", "outbox")]
    response = testapp.put_json(f"{API}/models/fraud-detector/versions/7/tags/owner",
                                {"value": "ana"}, status=404)
    assert response.json["error"]["code"] == "version_not_found"
    response = testapp.put_json(f"{API}/models/nowhere/versions/1/tags/owner",
                                {"value": "ana"}, status=404)
    assert response.json["error"]["code"] == "model_not_found"
    with engine.connect() as conn:
        after = [conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
                 for table in ("version_tags", "audit_events", "outbox")]
    assert after == before


def test_a_refused_new_version_writes_nothing(testapp, backend):
    """A version for a model that does not exist: 404, and no row anywhere."""
    engine = testapp.app.registry[keys.DB_ENGINE]
    response = testapp.post_json(f"{API}/models/nowhere/versions", {}, status=404)
    assert response.json["error"]["code"] == "model_not_found"
    with engine.connect() as conn:
        counts = [conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
                  for table in ("versions", "audit_events", "outbox")]
    assert counts == [0, 0, 0]


def test_a_new_version_whose_connection_is_lost_is_not_run_again(testapp, backend):
    """A statement that commits itself and loses its connection may have landed: the request
    is answered 503 (the client decides), not run again by the app, which could make a
    second version.  The connection is cut for real: the statement waits for the model's row,
    locked by another client, and its server process is terminated."""
    if backend != "postgresql":
        pytest.skip("a PostgreSQL server process to terminate")
    create_model(testapp)
    engine = testapp.app.registry[keys.DB_ENGINE]
    answers: list[Any] = []
    with (engine.connect() as holder,
          engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin):
        holder.execute(sa.update(MODELS).values(description="held"))  # locks the row
        request = threading.Thread(target=lambda: answers.append(testapp.post_json(
            f"{API}/models/fraud-detector/versions", {}, expect_errors=True)))
        request.start()
        waiting = waiting_for_a_lock(admin)
        assert waiting is not None, "the new version never waited for the model's row"
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting})
        request.join(30)
        holder.rollback()
    (answer,) = answers
    assert answer.status_int == 503, answer.text
    assert answer.json["error"]["code"] == "database_unavailable"
    assert testapp.get(f"{API}/models/fraud-detector/versions").json["versions"] == []
    # and the next request gets a connection that works
    testapp.post_json(f"{API}/models/fraud-detector/versions", {}, status=201)


def test_a_pooled_connection_terminated_while_idle_is_no_lost_version(testapp, backend):
    """The server ends a pooled connection between two requests (as a restart does): the
    next new version sees the termination waiting on it, takes the path a retry can
    follow, and is made once (``tests/test_database_restart.py`` restarts a whole server)."""
    if backend != "postgresql":
        pytest.skip("a PostgreSQL server process to terminate")
    create_model(testapp)
    testapp.post_json(f"{API}/models/fraud-detector/versions", {}, status=201)
    # not a connection of the app's pool, which would be the one to end
    outside = sa.create_engine(testapp.app.registry[keys.DB_ENGINE].url,
                               poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with outside.connect() as admin:
            ended = admin.scalar(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'idle'"))
    finally:
        outside.dispose()
    assert ended >= 1
    time.sleep(0.2)  # the termination's message reaches the pooled connections
    created = testapp.post_json(f"{API}/models/fraud-detector/versions", {}, status=201)
    assert created.json["number"] == 2
    numbers = [v["number"] for v in
               testapp.get(f"{API}/models/fraud-detector/versions").json["versions"]]
    assert numbers == [2, 1]


def test_a_caller_with_a_token_writes_in_one_round_trip(secure_app, backend,
                                                        transaction_control):
    """The token's read runs outside a transaction block too (``read_alone``), so that a new
    version and a tag's write of a caller with a token still send no ``BEGIN`` and no
    ``COMMIT``; a refused token leaves the connection as it found it."""
    from security_helpers import add_principal, bearer, seed_model

    if backend != "postgresql":
        pytest.skip("transaction control of psycopg")
    token = add_principal(secure_app.app, "ana", admin=True)
    seed_model(secure_app.app)
    secure_app.get(f"{API}/models/fraud-detector", headers=bearer(token))  # stamps last use
    secure_app.get(f"{API}/models/fraud-detector", headers=bearer("mr_nope_nope"), status=401)
    transaction_control.clear()
    number = secure_app.post_json(f"{API}/models/fraud-detector/versions", {},
                                  headers=bearer(token), status=201).json["number"]
    secure_app.put_json(f"{API}/models/fraud-detector/versions/{number}/tags/owner",
                        {"value": "ana"}, headers=bearer(token), status=200)
    assert transaction_control == []
    engine = secure_app.app.registry[keys.DB_ENGINE]
    with engine.connect() as conn:
        audits = conn.execute(sa.text(
            "SELECT action, actor FROM audit_events ORDER BY id")).all()[-2:]
    assert [tuple(a) for a in audits] == [("version.created", "ana"),
                                          ("version.tag_set", "ana")]
    secure_app.post_json(f"{API}/models/fraud-detector/versions", {}, status=401)
