"""Concurrent writers through a real Waitress server, on every backend.

32 clients, each on its own keep-alive connection, are released at once by a barrier and hit
one model: version numbers must come out as exactly 1..32, and concurrent alias moves must
leave a consistent history.  These are the races that WebTest (one request at a time) cannot
show.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from live_helpers import TIMEOUT, LiveClient, all_at_once, unexpected
from modelreg.testing import TestDatabase, clear_database
from modelreg.testing.server import LiveServer

pytestmark = pytest.mark.server

API = "/api/v1"
CLIENTS = 32


@pytest.fixture(scope="module")
def live_server(modelreg_settings: dict[str, Any]) -> Iterator[LiveServer]:
    """A Waitress process with 16 threads over the session's database.

    It runs with the test app's settings (``modelreg_settings``: the database's URL and
    whatever else the suite configures), retrying transient conflicts up to 3 times.
    """
    settings = {key: str(value) for key, value in modelreg_settings.items()
                if isinstance(value, str | int | float | bool)}
    settings["retry.attempts"] = "3"
    # as in development.ini: versions finalized while a scanner is installed get scanned
    settings["modelreg.worker.embedded"] = "true"
    settings["modelreg.worker.poll_interval"] = "0.2"
    with LiveServer(settings, threads=16) as server:
        yield server


@pytest.fixture
def engine(modelreg_database: TestDatabase) -> Iterator[sa.Engine]:
    """An engine on the test database; the database is emptied after the test."""
    from modelreg.db import get_engine

    engine = get_engine({"sqlalchemy.url": modelreg_database.url})
    yield engine
    try:
        clear_database(engine)
    finally:
        engine.dispose()


def test_concurrent_version_numbers_have_no_gaps_or_duplicates(live_server, engine):
    client = LiveClient(live_server)
    try:
        client.json("POST", f"{API}/models", {"name": "race"}, status=201)
        answers = all_at_once([(live_server, "POST", f"{API}/models/race/versions", {})]
                              * CLIENTS)
        assert all(code == 201 for code, _ in answers), unexpected(answers, (201,), live_server)
        numbers = sorted(json.loads(text)["number"] for _, text in answers)
        assert numbers == list(range(1, CLIENTS + 1))

        listed = client.json("GET", f"{API}/models/race/versions?page_size=100")
        assert sorted(v["number"] for v in listed["versions"]) == numbers
        assert listed["next_page_token"] is None
    finally:
        client.close()
    with engine.connect() as conn:
        next_version = conn.execute(
            sa.text("SELECT next_version FROM models WHERE name = :name"), {"name": "race"}
        ).scalar_one()
    assert next_version == CLIENTS + 1


def test_concurrent_alias_moves_keep_a_consistent_history(live_server, engine):
    base = f"{API}/models/race"
    client = LiveClient(live_server)
    try:
        client.json("POST", f"{API}/models", {"name": "race"}, status=201)
        for number in range(1, 5):
            client.json("POST", f"{base}/versions", {}, status=201)
            client.conn.request("PUT", f"{base}/versions/{number}/files/model.bin",
                                body=b"weights")
            uploaded = client.conn.getresponse()
            assert uploaded.status == 201, uploaded.read()
            uploaded.read()
            code, text = client.request("POST", f"{base}/versions/{number}/finalize")
            assert code in (200, 202), text  # 202: a scanner is installed
            deadline = time.monotonic() + TIMEOUT
            ready = json.loads(text)
            while ready["status"] == "validating" and time.monotonic() < deadline:
                time.sleep(0.1)  # the embedded worker scans it
                ready = client.json("GET", f"{base}/versions/{number}")
            assert ready["status"] == "ready", ready

        answers = all_at_once([(live_server, "PUT", f"{base}/aliases/champion",
                                {"version": i % 4 + 1}) for i in range(CLIENTS)])
        assert all(code in (200, 201) for code, _ in answers), unexpected(
            answers, (200, 201), live_server)
        assert sum(code == 201 for code, _ in answers) == 1, "the alias is created once"

        alias = client.json("GET", f"{base}/aliases/champion")
        history = client.json("GET", f"{base}/aliases/champion/history?page_size=100")
    finally:
        client.close()

    moves = history["history"]  # newest first
    assert history["next_page_token"] is None
    assert 1 <= len(moves) <= CLIENTS
    assert moves[0]["to_version"] == alias["version"], (alias, moves)
    assert moves[-1]["from_version"] is None, moves
    for newer, older in itertools.pairwise(moves):
        assert newer["from_version"] == older["to_version"], moves
        assert newer["from_version"] != newer["to_version"], moves
