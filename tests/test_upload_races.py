"""Upload sessions raced through two real Waitress processes sharing one database and store.

* Two chunks sent at once to the same offset of one session (``PATCH``): one is received,
  the other answered ``416`` — and the stored bytes are the received one's (before parts
  were claimed under the session's lock, the loser's bytes overwrote the winner's).
* Numbered parts sent in parallel, each number twice at once with different bytes, half
  through each process: one sender per number wins (``201``), the other gets ``409`` and
  its bytes are never stored over the winner's; the file completes with the winners' bytes.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from live_helpers import TIMEOUT, LiveClient
from modelreg.testing import TestDatabase, clear_database
from modelreg.testing.server import LiveServer

pytestmark = pytest.mark.server

API = "/api/v1"
M = "race"
KiB = 1024
#: Chunks large enough that two writes of one offset overlap in time.
CHUNK = 512 * KiB
ROUNDS = 12


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def servers(race_servers: list[LiveServer]) -> list[LiveServer]:
    """Two Waitress processes over the session's database and one blob directory, chunks
    of 64 KiB allowed: the session's :func:`conftest.race_servers` (on PostgreSQL and
    MariaDB: SQLite serializes every writer, there is no race to lose)."""
    return race_servers


@pytest.fixture
def engine(modelreg_database: TestDatabase) -> Iterator[sa.Engine]:
    from modelreg.db import get_engine

    engine = get_engine({"sqlalchemy.url": modelreg_database.url})
    yield engine
    try:
        clear_database(engine)
    finally:
        engine.dispose()


def together(calls: list[tuple[LiveServer, str, str, bytes, dict[str, str]]]
             ) -> list[tuple[int, Any]]:
    """Each ``(server, method, path, body, headers)`` from its own connection, released at
    once; the status and decoded JSON body of each."""
    barrier = threading.Barrier(len(calls), timeout=TIMEOUT)
    answers: list[Any] = [None] * len(calls)

    def run(index: int, server: LiveServer, method: str, path: str, body: bytes,
            headers: dict[str, str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            conn.connect()
            barrier.wait()
            conn.request(method, path, body=body, headers={
                "Content-Type": "application/octet-stream", "Accept": "application/json",
                **headers})
            response = conn.getresponse()
            text = response.read()
            answers[index] = (response.status, json.loads(text) if text else None)
        except Exception as exc:  # reported through the answers
            answers[index] = (0, f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    return answers


def draft(client: LiveClient) -> int:
    client.json("POST", f"{API}/models", {"name": M}, status=201)
    return client.json("POST", f"{API}/models/{M}/versions", {}, status=201)["number"]


def test_two_chunks_at_one_offset_the_refused_one_writes_nothing(servers, engine):
    client = LiveClient(servers[0])
    try:
        number = draft(client)
        session = client.json("POST", f"{API}/models/{M}/versions/{number}/uploads",
                              {"path": "raced.bin"}, status=201)
        location = session["location"]
        received = b""
        for round_ in range(ROUNDS):
            start = len(received)
            mine, theirs = os.urandom(CHUNK), os.urandom(CHUNK)
            headers = {"Content-Range": f"bytes {start}-{start + CHUNK - 1}/*"}
            answers = together([(servers[0], "PATCH", location, mine, headers),
                                (servers[1], "PATCH", location, theirs, headers)])
            statuses = sorted(code for code, _ in answers)
            assert statuses == [202, 416], (round_, answers, servers[0].log_tail())
            loser = next(body for code, body in answers if code == 416)
            assert loser["error"]["code"] == "chunk_out_of_order"
            received += mine if answers[0][0] == 202 else theirs
        assert client.json("GET", location)["offset"] == len(received)
        # The stored bytes are the received chunks', not the refused ones'.
        done = client.json("PUT", f"{location}?digest=sha256:{sha(received)}", raw=b"",
                           status=201)
        assert done["sha256"] == sha(received)
        code, _, body = client.call(
            "GET", f"{API}/models/{M}/versions/{number}/files/raced.bin")
        assert code == 200 and body == received
    finally:
        client.close()


def test_parallel_parts_through_two_processes_each_number_claimed_once(servers, engine):
    client = LiveClient(servers[1])
    part_size, count = 256 * KiB, 8
    try:
        number = draft(client)
        size = part_size * (count - 1) + 1000
        session = client.json("POST", f"{API}/models/{M}/versions/{number}/uploads",
                              {"path": "parts.bin", "size": size, "part_size": part_size},
                              status=201)
        assert session["parts_count"] == count and session["parts"] == []
        location = session["location"]
        calls, candidates = [], {}
        for n in range(1, count + 1):
            length = part_size if n < count else 1000
            for which in range(2):
                data = os.urandom(length)
                candidates[(n, which)] = data
                digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
                calls.append((servers[(n + which) % 2], "PUT", f"{location}/parts/{n}", data,
                              {"Content-Digest": f"sha-256=:{digest}:"}))
        answers = together(calls)
        winners = {}
        for (n, which), (code, body) in zip(candidates, answers, strict=True):
            assert code in (201, 409), (n, code, body)
            if code == 201:
                assert n not in winners, f"part {n} was stored twice"
                winners[n] = candidates[(n, which)]
                assert body == {"number": n, "start": (n - 1) * part_size,
                                "size": len(winners[n]),
                                "digest": f"sha256:{sha(winners[n])}"}
            else:
                assert body["error"]["code"] in ("part_in_progress", "part_exists")
        assert sorted(winners) == list(range(1, count + 1))
        content = b"".join(winners[n] for n in range(1, count + 1))
        held = client.json("GET", location)
        assert [p["digest"] for p in held["parts"]] == [
            f"sha256:{sha(winners[n])}" for n in range(1, count + 1)]
        # Completed through the other process.
        other = LiveClient(servers[0])
        try:
            other.json("PUT", f"{location}?digest=sha256:{sha(content)}", raw=b"", status=201)
        finally:
            other.close()
        code, _, body = client.call(
            "GET", f"{API}/models/{M}/versions/{number}/files/parts.bin")
        assert code == 200 and body == content
    finally:
        client.close()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM upload_parts")).scalar_one() == 0
