"""Writes to a version racing its finalize or its deletion, through a real Waitress server.

Each test releases pairs of conflicting requests at once (:func:`live_helpers.all_at_once`)
and then checks what a client can see: every answer is one that some serial order of the two
requests gives, and the registry holds what that order leaves.  On PostgreSQL and MariaDB the
requests really overlap (row locks decide).  SQLite serializes writers whole, so nothing
races there and these tests skip (the serial outcomes are tested through WebTest, e.g.
``version_has_aliases`` in tests/test_versions.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from live_helpers import LiveClient, all_at_once, unexpected
from modelreg.testing import TestDatabase, clear_database
from modelreg.testing.server import LiveServer

pytestmark = pytest.mark.server

API = "/api/v1"
M = f"{API}/models/racer"
#: Pairs of requests released together, and how many times: without the fix (versions'
#: writes not locked), one round of metadata races ended wrong in 3-7 of 8 races in each of
#: 10 runs on PostgreSQL and MariaDB; alias races went wrong in 1-2 of 8 per round, so they
#: take three rounds.
PAIRS = 8
METADATA_ROUNDS = 1
ALIAS_ROUNDS = 3
#: PATCHes sent with each finalize.
PATCHES = 2


@pytest.fixture(scope="module")
def live_server(race_servers: list[LiveServer]) -> LiveServer:
    """A Waitress process over the session's database where a version needs the metadata
    key ``approved`` to be finalized, and finalize decides at once (no scanner): the
    session's :func:`conftest.race_servers` (PostgreSQL and MariaDB)."""
    return race_servers[0]


@pytest.fixture
def client(live_server: LiveServer, modelreg_database: TestDatabase) -> Iterator[LiveClient]:
    """A client of the server with the model ``racer``; the database is emptied after."""
    from modelreg.db import get_engine

    client = LiveClient(live_server)
    client.json("POST", f"{API}/models", {"name": "racer"}, status=201)
    yield client
    client.close()
    engine = get_engine({"sqlalchemy.url": modelreg_database.url})
    try:
        clear_database(engine)
    finally:
        engine.dispose()


def draft(client: LiveClient, metadata: dict[str, Any]) -> int:
    """A new draft of ``racer`` with ``metadata`` and one file; its number."""
    number = client.json("POST", f"{M}/versions", {"metadata": metadata},
                         status=201)["number"]
    client.json("PUT", f"{M}/versions/{number}/files/model.bin", raw=b"weights %d" % number,
                status=201)
    return number


def ready(client: LiveClient) -> int:
    """A new ready version of ``racer``; its number."""
    number = draft(client, {"approved": "yes"})
    assert client.json("POST", f"{M}/versions/{number}/finalize")["status"] == "ready"
    return number


def test_metadata_edited_while_finalized_is_validated_or_refused(live_server, client):
    """A draft whose metadata carries the required key is finalized while PATCHes remove
    the key.  Serially a PATCH either comes first (200), and validation rejects the version,
    or after (409 ``version_immutable``), and the version is ready with the key.  A ready
    version without the key is metadata that validation never saw."""
    wrong = []
    for _ in range(METADATA_ROUNDS):
        numbers = [draft(client, {"approved": "yes"}) for _ in range(PAIRS)]
        requests = []
        for number in numbers:
            requests.append((live_server, "POST", f"{M}/versions/{number}/finalize", None))
            requests += [(live_server, "PATCH", f"{M}/versions/{number}",
                          {"metadata": {"note": "unapproved"}})] * PATCHES
        answers = all_at_once(requests)
        assert all(code in (200, 409) for code, _ in answers), unexpected(
            answers, (200, 409), live_server)
        step = 1 + PATCHES
        for index, number in enumerate(numbers):
            (finalized, _), *patches = answers[step * index:step * (index + 1)]
            assert finalized == 200, answers
            for code, text in patches:
                assert code == 200 or json.loads(text)["error"]["code"] == "version_immutable"
            version = client.json("GET", f"{M}/versions/{number}")
            edited = any(code == 200 for code, _ in patches)
            expected = (("rejected", {"note": "unapproved"}) if edited
                        else ("ready", {"approved": "yes"}))
            if (version["status"], version["metadata"]) != expected:
                wrong.append((number, [code for code, _ in patches], version["status"],
                              version["metadata"]))
    assert not wrong, (f"{len(wrong)} of {METADATA_ROUNDS * PAIRS} races ended in a state no "
                       f"serial order gives (number, PATCH statuses, status, metadata): {wrong}")


def test_a_version_deleted_while_an_alias_moves_to_it(live_server, client, modelreg_database):
    """``DELETE`` of a version and ``PUT`` of an alias onto it, at once.  Serially: the
    delete first (204) and the move finds no version (404); or the move first (200) and the
    delete is 409 ``version_has_aliases``.  Never both, never a 500, and the alias and its
    history always agree."""
    base = ready(client)
    wrong = []
    for round_ in range(ALIAS_ROUNDS):
        numbers = [ready(client) for _ in range(PAIRS)]
        names = [f"a{round_}-{i}" for i in range(PAIRS)]
        for name in names:
            client.json("PUT", f"{M}/aliases/{name}", {"version": base}, status=201)
        requests = []
        for name, number in zip(names, numbers, strict=True):
            requests.append((live_server, "DELETE", f"{M}/versions/{number}", None))
            requests.append((live_server, "PUT", f"{M}/aliases/{name}", {"version": number}))
        answers = all_at_once(requests)
        assert all(code in (200, 204, 404, 409) for code, _ in answers), unexpected(
            answers, (200, 204, 404, 409), live_server)
        for index, (name, number) in enumerate(zip(names, numbers, strict=True)):
            (deleted, deleted_text), (moved, moved_text) = answers[2 * index:2 * index + 2]
            alias = client.json("GET", f"{M}/aliases/{name}", status=(200, 404))
            history = client.json("GET", f"{M}/aliases/{name}/history")["history"]
            # (an alias that vanished answers 404: its version is None)
            outcome = (deleted, moved, alias.get("version"), history[0]["to_version"])
            if deleted == 204:
                error = json.loads(moved_text)["error"]["code"] if moved == 404 else None
                ok = outcome == (204, 404, base, base) and error == "version_not_found"
            else:
                error = json.loads(deleted_text)["error"]
                ok = (outcome == (409, 200, number, number)
                      and error["code"] == "version_has_aliases"
                      and error["details"]["aliases"] == [name])
            if not ok:
                wrong.append(outcome)
    assert not wrong, (f"{len(wrong)} of {ALIAS_ROUNDS * PAIRS} races ended in a state no "
                       "serial order gives (DELETE, PUT alias, alias's version, history's last "
                       f"move): {wrong}")
    # Every alias that ever existed still does: none vanished without an audit event.
    engine = sa.create_engine(modelreg_database.url)
    try:
        with engine.connect() as conn:
            deleted = conn.scalar(sa.text(
                "SELECT count(*) FROM audit_events WHERE action = 'alias.deleted'"))
            aliases = conn.scalar(sa.text("SELECT count(*) FROM aliases"))
    finally:
        engine.dispose()
    assert (deleted, aliases) == (0, ALIAS_ROUNDS * PAIRS)


#: Writes to a version of ``racer`` (a draft, or ready for ``ready``), and their answer once
#: another transaction that held the version's row has made it ``rejected``: a draft-only
#: write sees the new status (409); the others run after it.
HELD_WRITES = [
    ("patch metadata", "draft", "PATCH", "", {"metadata": {"approved": "no"}},
     409, "version_immutable"),
    ("patch lineage", "draft", "PATCH", "", {"lineage": {"source": "x"}},
     409, "version_immutable"),
    ("set tag", "draft", "PUT", "/tags/stage", {"value": "dev"}, 200, None),
    ("finalize", "draft", "POST", "/finalize", None, 409, "version_not_draft"),
    ("delete version", "draft", "DELETE", "", None, 204, None),
    ("move alias onto it", "ready", "PUT", "alias", None, 409,  # the only one
     "version_not_ready"),
]


def test_a_write_waits_for_the_version_and_reads_its_status_again(
        live_server, client, modelreg_database):
    """Another transaction holds versions' rows (as finalize does) and changes their status;
    each write of :data:`HELD_WRITES`, sent meanwhile (all at once, one version each), waits
    for it, then answers as the new status says."""
    from modelreg.db import get_engine, writer_engine
    from modelreg.models import Model, Version

    cases = []
    for name, status, method, path, body, code, error in HELD_WRITES:
        number = draft(client, {"approved": "yes"})
        if status == "ready":
            client.json("POST", f"{M}/versions/{number}/finalize")
        if path == "alias":
            target, body = f"{M}/aliases/champion", {"version": number}
        else:
            target = f"{M}/versions/{number}{path}"
        cases.append((name, number, method, target, body, code, error))
    engine = writer_engine(get_engine({"sqlalchemy.url": modelreg_database.url}))
    answers: dict[str, tuple[int, str]] = {}

    def send(name: str, method: str, target: str, body: Any) -> None:
        other = LiveClient(live_server)
        try:
            answers[name] = other.request(method, target, body)
        finally:
            other.close()

    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(
                sa.select(Version.number, Version.id).join(Model, Model.id == Version.model_id)
                .where(Model.name == "racer")).all())
        ids = [rows[number] for _, number, *_ in cases]
        with engine.connect() as conn, conn.begin():  # the versions' rows alone, as finalize
            conn.execute(sa.select(Version.id).where(Version.id.in_(ids)).with_for_update())
            conn.execute(sa.update(Version).where(Version.id.in_(ids))
                         .values(status="rejected"))
            threads = [threading.Thread(target=send, args=(name, method, target, body))
                       for name, _, method, target, body, _, _ in cases]
            for thread in threads:
                thread.start()
            time.sleep(0.25)
            early = {name: answers[name] for name, *_ in cases if name in answers}
            assert not early, f"writes that did not wait: {early}"
        for thread in threads:
            thread.join(30)
    finally:
        engine.dispose()
    for name, _, _, _, _, code, error in cases:
        got, text = answers[name]
        assert got == code, (name, text)
        if error is not None:
            assert json.loads(text)["error"]["code"] == error, (name, text)
