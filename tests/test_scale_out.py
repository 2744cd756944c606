"""Two Waitress processes, one PostgreSQL database, one S3-compatible server (issue 8, item 1).

Nothing that matters lives in a process: two identical app processes on different ports serve
one registry, and consecutive requests of one client land on either.  The processes are
started as a deployment would start them (``pserve`` on an ini, plugins from entry points,
the database migrated with every installed plugin's migrations), with ``modelreg.storage =
s3`` on moto's server and the embedded worker running in both.  The tests drive them
alternately and concurrently:

* version numbers created from both, one at a time and all at once: distinct and gapless;
* a resumable upload whose chunks alternate between the processes (each one's view of the
  offset checked on the other), completed on a third request, then pulled through the other
  process with the light client and checked by sha256; each process's metrics count the
  file bytes it received and sent, under the ``s3`` backend;
* alias moves racing from both: one creation, one consistent winner, a complete history
  (the versions' scans, when a scanner is installed, claimed once each by the two embedded
  workers sharing the job queue);
* webhooks (the modelreg-webhooks plugin): a subscription made through one process, two
  models mutated in parallel with each request on the other process than the last; a
  receiver on 127.0.0.1 verifies every signature and gets every event once, in the order of
  its model's outbox, although the embedded workers of both processes take events from the
  same outbox; the events of alias moves racing from both form one chain (each ``before``
  the previous ``after``); a delivery refused twice (503) is retried, delivered once
  accepted, holds back its model's later events meanwhile, and its log reads the same
  through both;
* failed authentications counted on one process throttle the client on the other.

PostgreSQL is required: unreachable, the tests skip, or fail when ``CI=true`` (as do a
missing moto or ``modelreg-s3``, which CI installs); ``MODELREG_TEST_BACKENDS`` without
``postgresql`` skips them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.etree import ElementTree

import pytest
import sqlalchemy as sa

from live_helpers import TIMEOUT, LiveClient, all_at_once, unexpected
from modelreg.migrations import upgrade
from modelreg.plugins import get_plugin_manager
from modelreg.testing import TestDatabase, make_app, unavailable
from modelreg.testing.server import LiveServer
from security_helpers import add_principal, bearer

pytestmark = pytest.mark.server

API = "/api/v1"
MiB = 1024 * 1024
#: Chunks of the resumable upload (the server's default minimum, and S3's part size).
CHUNK = 8 * MiB
MAX_FAILURES = 4
BAD_TOKEN = "mr_0123456789abcdef_" + "x" * 43


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def database() -> Iterator[TestDatabase]:
    """A PostgreSQL database migrated as ``modelreg db upgrade`` would (every installed
    plugin's migrations too); dropped afterwards.  Skipped when ``MODELREG_TEST_BACKENDS``
    leaves PostgreSQL out."""
    wanted = os.environ.get("MODELREG_TEST_BACKENDS")  # as conftest.py reads it
    if wanted and "postgresql" not in {name.strip() for name in wanted.split(",")}:
        pytest.skip("PostgreSQL is not among MODELREG_TEST_BACKENDS")
    try:
        db = TestDatabase.create("postgresql")
    except ConnectionError as exc:
        unavailable(str(exc))
    try:
        upgrade({"sqlalchemy.url": db.url}, get_plugin_manager({}).hook)
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="module")
def settings(database: TestDatabase, modelreg_s3_server: Any) -> dict[str, str]:
    """The ini settings both processes run with."""
    backends = get_plugin_manager({}).hook.modelreg_storage_backends(settings={})
    if "s3" not in {backend.name for found in backends for backend in found}:
        unavailable("the modelreg-s3 plugin is not installed (python3 dev.py test installs it)")
    return {
        "sqlalchemy.url": database.url,
        **modelreg_s3_server.settings(),
        "retry.attempts": "3",
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
        "modelreg.auth.max_failures": str(MAX_FAILURES),
        "modelreg.auth.failure_window": "600",
        "modelreg.auth.block_seconds": "600",
        "modelreg.metrics.enabled": "true",
        "modelreg.metrics.public": "true",
        # Webhooks to a receiver on loopback, retried quickly.
        "modelreg.webhooks.allow_private": "true",
        "modelreg.webhooks.timeout": "5",
        "modelreg.webhooks.backoff_base": "0.2",
        "modelreg.worker.max_backoff": "2",
    }


@pytest.fixture(scope="module")
def servers(settings: dict[str, str]) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two Waitress processes with the same settings, on two ports."""
    with LiveServer(settings, threads=8) as first, LiveServer(settings, threads=8) as second:
        assert first.port != second.port
        yield first, second


@pytest.fixture
def engine(database: TestDatabase) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database.url)
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- HTTP


def clients(servers: tuple[LiveServer, LiveServer]) -> tuple[LiveClient, LiveClient]:
    return LiveClient(servers[0]), LiveClient(servers[1])


def wait_until_ready(client: LiveClient, path: str) -> dict[str, Any]:
    """The version at ``path`` once no scanner runs on it (an embedded worker of either
    process scans it when a scanner plugin is installed)."""
    deadline = time.monotonic() + TIMEOUT
    version = client.json("GET", path)
    while version["status"] == "validating" and time.monotonic() < deadline:
        time.sleep(0.1)
        version = client.json("GET", path)
    assert version["status"] == "ready", version
    return version


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ tests


def test_version_numbers_from_both_processes_are_distinct_and_gapless(servers, engine):
    a, b = clients(servers)
    try:
        a.json("POST", f"{API}/models", {"name": "numbers"}, status=201)
        path = f"{API}/models/numbers/versions"
        alternating = [(a, b)[i % 2].json("POST", path, {}, status=201)["number"]
                       for i in range(6)]
        assert alternating == [1, 2, 3, 4, 5, 6]

        answers = all_at_once([(servers[i % 2], "POST", path, {}) for i in range(24)])
        assert all(code == 201 for code, _ in answers), unexpected(answers, (201,), *servers)
        numbers = sorted(json.loads(text)["number"] for _, text in answers)
        assert numbers == list(range(7, 31))

        for client in (a, b):  # both processes list the same 30 versions
            listed = client.json("GET", f"{path}?page_size=100")
            assert sorted(v["number"] for v in listed["versions"]) == list(range(1, 31))
    finally:
        a.close()
        b.close()
    with engine.connect() as conn:
        next_version = conn.execute(
            sa.text("SELECT next_version FROM models WHERE name = 'numbers'")).scalar_one()
    assert next_version == 31


def test_resumable_upload_alternates_between_processes_and_pulls_from_the_other(
        servers, settings, engine, tmp_path):
    from modelreg_client import Client as LightClient

    a, b = clients(servers)
    for client in (a, b):
        ready = client.json("GET", "/readyz")
        assert ready["checks"] == {"database": "ok", "storage": "ok"}, ready
    content = os.urandom(2 * CHUNK + MiB + 12345)
    config = b'{"layers": 12}\n'
    base = f"{API}/models/weights/versions/1"
    try:
        a.json("POST", f"{API}/models", {"name": "weights"}, status=201)
        b.json("POST", f"{API}/models/weights/versions", {}, status=201)
        opened = a.json("POST", f"{base}/uploads",
                        {"path": "model.bin", "size": len(content),
                         "digest": f"sha256:{sha256(content)}"}, status=201)
        session = opened["location"]
        assert opened["offset"] == 0

        # PATCH on A, then on B; each process sees the offset the other one stored.
        pairs = ((a, b), (b, a))
        for index, (sender, other) in enumerate(pairs):
            start = index * CHUNK
            chunk = content[start:start + CHUNK]
            sent = sender.json("PATCH", session, raw=chunk, status=202,
                               headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"})
            assert sent["offset"] == start + CHUNK
            seen = other.json("GET", session)
            assert (seen["offset"], seen["size"]) == (start + CHUNK, len(content)), seen
            # A chunk sent again to the other process is out of order there too.
            code, headers, data = other.call("PATCH", session, raw=chunk,
                                             headers={"Content-Range":
                                                      f"{start}-{start + len(chunk) - 1}"})
            assert code == 416, data
            assert json.loads(data)["error"]["details"]["offset"] == start + CHUNK
            assert headers["Upload-Offset"] == str(start + CHUNK)

        # A completes it with the last chunk as the body; the session is gone on both.
        rest = content[2 * CHUNK:]
        done = a.json("PUT", f"{session}?digest=sha256:{sha256(content)}", raw=rest,
                      status=201)
        assert (done["path"], done["sha256"], done["size"]) == (
            "model.bin", sha256(content), len(content))
        for client in (a, b):
            code, _, data = client.call("GET", session)
            assert code == 404 and json.loads(data)["error"]["code"] == "upload_not_found"

        b.json("PUT", f"{base}/files/config.json", raw=config, status=201,
               headers={"Content-Type": "application/json"})
        finalized = a.json("POST", f"{base}/finalize", status=(200, 202))
        assert finalized["number"] == 1
        version = wait_until_ready(b, base)
        files = {f["path"]: f for f in b.json("GET", f"{base}/files")["files"]}
        assert {path: f["sha256"] for path, f in files.items()} == {
            "model.bin": sha256(content), "config.json": sha256(config)}

        # Plain downloads through both processes give the bytes pushed through the other.
        for client in (a, b):
            code, headers, data = client.call("GET", f"{base}/files/model.bin")
            assert code == 200 and sha256(data) == sha256(content)
            assert headers["ETag"] == f'"{sha256(content)}"'
            code, _, data = client.call("GET", f"{base}/files/model.bin",
                                        headers={"Range": f"bytes={CHUNK - 10}-{CHUNK + 9}"})
            assert code == 206 and data == content[CHUNK - 10:CHUNK + 10]
    finally:
        a.close()
        b.close()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM upload_sessions")).scalar_one() == 0

    # The light client pulls through B what A and B received.
    with LightClient(servers[1].url, timeout=60) as light:
        pulled = light.pull("weights/1", tmp_path / "pulled")
    assert (pulled.model, pulled.version, pulled.digest) == ("weights", 1, version["digest"])
    assert sorted(pulled.downloaded_files) == ["config.json", "model.bin"]
    assert sha256((tmp_path / "pulled" / "model.bin").read_bytes()) == sha256(content)
    assert (tmp_path / "pulled" / "config.json").read_bytes() == config
    # The bytes are in the S3 bucket, under the content keys of the processes' prefix.
    assert stored_digests(settings) == {sha256(content), sha256(config)}
    # Each process counted the file bytes it received and sent itself, by backend.  The chunk
    # each one refused as out of order was never read.
    assert transferred(servers[0]) == {"upload": CHUNK + len(rest),
                                       "download": len(content) + 20}
    assert transferred(servers[1]) == {"upload": CHUNK + len(config),
                                       "download": 2 * len(content) + 20 + len(config)}


def transferred(server: LiveServer) -> dict[str, float]:
    """The process's ``modelreg_transfer_bytes_total`` of the S3 backend, by direction."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r'modelreg_transfer_bytes_total\{(.*)\} (\S+)', line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            assert labels["backend"] == "s3", line
            found[labels["direction"]] = float(match.group(2))
    return found


def stored_digests(settings: dict[str, str]) -> set[str]:
    """The digests of the blobs in the bucket (moto answers unsigned listings)."""
    prefix = settings["modelreg.storage.s3.prefix"].strip("/") + "/sha256/"
    query = urllib.parse.urlencode({"list-type": "2", "prefix": prefix})
    url = (f"{settings['modelreg.storage.s3.endpoint_url']}/"
           f"{settings['modelreg.storage.s3.bucket']}?{query}")
    with urllib.request.urlopen(url, timeout=30) as response:
        listing = ElementTree.fromstring(response.read())
    keys = [element.text or "" for element in listing.iter()
            if element.tag.endswith("}Key") or element.tag == "Key"]
    return {key.rsplit("/", 1)[1] for key in keys}


def test_alias_moves_racing_from_both_processes_leave_one_consistent_winner(servers, engine):
    a, b = clients(servers)
    base = f"{API}/models/race"
    try:
        a.json("POST", f"{API}/models", {"name": "race"}, status=201)
        scanned = 0
        for number in range(1, 5):  # created on one process, filled and finalized on the other
            creator, other = (a, b) if number % 2 else (b, a)
            creator.json("POST", f"{base}/versions", {}, status=201)
            other.json("PUT", f"{base}/versions/{number}/files/model.bin",
                       raw=f"weights {number}".encode(), status=201)
            finalized = creator.json("POST", f"{base}/versions/{number}/finalize",
                                     status=(200, 202))
            scanned += finalized["status"] == "validating"
        for number in range(1, 5):
            wait_until_ready(a, f"{base}/versions/{number}")
        # The embedded workers of both processes share the job queue: each scan (when a
        # scanner is installed) was claimed once, by one of them.
        with engine.connect() as conn:
            jobs = conn.execute(sa.text(
                "SELECT j.status, j.attempts FROM jobs j WHERE j.kind = 'scan_version' "
                "AND j.created_at >= (SELECT created_at FROM models WHERE name = 'race')"
            )).all()
        assert [tuple(job) for job in jobs] == [("done", 1)] * scanned

        moves = [(servers[i % 2], "PUT", f"{base}/aliases/champion", {"version": i % 4 + 1})
                 for i in range(32)]
        answers = all_at_once(moves)
        assert all(code in (200, 201) for code, _ in answers), unexpected(
            answers, (200, 201), *servers)
        assert sum(code == 201 for code, _ in answers) == 1, "the alias is created once"

        alias = a.json("GET", f"{base}/aliases/champion")
        assert b.json("GET", f"{base}/aliases/champion")["version"] == alias["version"]
        history = b.json("GET", f"{base}/aliases/champion/history?page_size=100")
        # Resolving through the alias gives the winner's bytes on both processes.
        for client in (a, b):
            code, _, data = client.call("GET", f"{base}/versions/champion/files/model.bin")
            assert (code, data) == (200, f"weights {alias['version']}".encode())
    finally:
        a.close()
        b.close()

    moves = history["history"]  # newest first
    assert history["next_page_token"] is None
    assert 1 <= len(moves) <= 32
    assert moves[0]["to_version"] == alias["version"], (alias, moves)
    assert moves[-1]["from_version"] is None, moves
    for newer, older in itertools.pairwise(moves):
        assert newer["from_version"] == older["to_version"], moves
        assert newer["from_version"] != newer["to_version"], moves


# ----------------------------------------------------------------------------- webhooks


class HookReceiver:
    """A webhook receiver on 127.0.0.1 that checks every signature (as the plugin's README
    tells receivers to) and records what it got, in order of arrival.

    ``refuse`` maps an event type to how many times to answer its first deliveries with
    ``503`` and ``Retry-After: 1`` before accepting it.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.refuse: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        #: ``(event id, body, signature verified, status answered)`` in order of arrival.
        self.received: list[tuple[str, dict[str, Any], bool, int]] = []
        #: When each event's deliveries arrived (``time.monotonic()``), in order.
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.handle(self.headers, body)
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close() joins the handler threads
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, name="hook-receiver")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> HookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def handle(self, headers: Any, body: bytes) -> int:
        """Record one request; the status to answer."""
        event_id = headers.get("Webhook-Id", "")
        timestamp = headers.get("Webhook-Timestamp", "")
        message = f"{event_id}.{timestamp}.".encode() + body
        expected = "v1=" + hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        verified = (hmac.compare_digest(expected, headers.get("Webhook-Signature", ""))
                    and abs(time.time() - int(timestamp or 0)) < 300)
        document = json.loads(body)
        with self.lock:
            kind = document.get("type", "")
            status = 200 if verified else 401
            if verified and self.refused.get(event_id, 0) < self.refuse.get(kind, 0):
                self.refused[event_id] = self.refused.get(event_id, 0) + 1
                status = 503
            self.received.append((event_id, document, verified, status))
            self.times.setdefault(event_id, []).append(time.monotonic())
        return status

    def accepted(self, model: str) -> list[str]:
        """The ids of ``model``'s events answered with 2xx, in order of arrival, every
        redelivery (an id seen before) dropped."""
        with self.lock:
            ids = [event_id for event_id, body, _, status in self.received
                   if body.get("model") == model and status < 300]
        return list(dict.fromkeys(ids))

    def arrivals(self, event_id: str) -> list[int]:
        """The statuses answered to the deliveries of one event, in order."""
        with self.lock:
            return [status for got, _, _, status in self.received if got == event_id]


@pytest.fixture(scope="module")
def admin_token(database: TestDatabase) -> str:
    """A token of a global admin (the webhook API is for global admins only)."""
    app = make_app({"sqlalchemy.url": database.url})
    try:
        return add_principal(app, "hook-admin", admin=True)
    finally:
        app.registry["db_engine"].dispose()


@contextmanager
def subscription(client: LiveClient, token: str) -> Iterator[tuple[int, HookReceiver]]:
    """A receiver on loopback and a subscription to every event, created through
    ``client``'s process; both gone afterwards (the subscription with its log)."""
    secret = "scale-out-" + os.urandom(12).hex()
    with HookReceiver(secret) as receiver:
        sub = client.json("POST", f"{API}/webhooks", {"url": receiver.url, "secret": secret},
                          status=201, headers=bearer(token))
        assert "secret" not in sub
        try:
            yield sub["id"], receiver
        finally:
            client.json("DELETE", f"{API}/webhooks/{sub['id']}", status=204,
                        headers=bearer(token))


def mutate(clients: tuple[LiveClient, LiveClient], name: str) -> None:
    """A scripted series of mutations of model ``name``, each request on the other process
    than the one before."""
    turn = itertools.cycle(clients)
    m = f"{API}/models/{name}"

    def call(method: str, path: str, body: Any = None, *, status: int | tuple[int, ...] = 200,
             raw: bytes | None = None) -> Any:
        return next(turn).json(method, path, body, status=status, raw=raw)

    call("POST", f"{API}/models", {"name": name}, status=201)
    for number in (1, 2):
        call("POST", f"{m}/versions", {"description": f"v{number}"}, status=201)
        call("PUT", f"{m}/versions/{number}/files/model.bin",
             raw=f"{name} weights {number}".encode(), status=201)
        call("POST", f"{m}/versions/{number}/finalize", status=(200, 202))
        wait_until_ready(next(turn), f"{m}/versions/{number}")
        call("PUT", f"{m}/aliases/champion", {"version": number}, status=(200, 201))
        call("PUT", f"{m}/tags/round", {"value": str(number)})
    call("PATCH", m, {"description": "moved twice"})
    call("DELETE", f"{m}/tags/round", status=204)
    call("DELETE", f"{m}/aliases/champion", status=204)
    call("DELETE", m, status=204)


def outbox_of(engine: sa.Engine, model: str) -> list[tuple[str, str, bool]]:
    """``(event id, type, delivered)`` of the model's outbox events, in outbox order."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT event_id, type, delivered_at IS NOT NULL FROM outbox WHERE model = :m "
            "ORDER BY id"), {"m": model}).all()
    return [tuple(row) for row in rows]


def wait_for_events(engine: sa.Engine, receiver: HookReceiver, models: list[str],
                    timeout: float = TIMEOUT) -> dict[str, list[tuple[str, str, bool]]]:
    """The outbox of each model once every event is delivered and the receiver accepted
    each of them."""
    deadline = time.monotonic() + timeout
    while True:
        outboxes = {model: outbox_of(engine, model) for model in models}
        done = all(
            all(delivered for _, _, delivered in events)
            and set(receiver.accepted(model)) >= {event_id for event_id, _, _ in events}
            for model, events in outboxes.items())
        if done:
            return outboxes
        assert time.monotonic() < deadline, (
            f"events not delivered in {timeout:g} s: {outboxes}\nreceived: "
            f"{receiver.received}")
        time.sleep(0.1)


def test_webhook_events_from_both_processes_arrive_once_each_in_order_per_model(
        servers, engine, admin_token):
    """Two models mutated in parallel, each request on the other process than the last: the
    embedded workers of both processes hand the outbox to the plugin, which sends every
    event once, signed, in the order of its model's outbox."""
    a, b = clients(servers)
    try:
        with subscription(a, admin_token) as (sub, receiver):
            failures: list[BaseException] = []

            def second_model() -> None:
                c, d = clients(servers)
                try:
                    mutate((d, c), "hooked-b")  # starts on B
                except BaseException as exc:  # reported by the main thread
                    failures.append(exc)
                finally:
                    c.close()
                    d.close()

            thread = threading.Thread(target=second_model, name="second-model")
            thread.start()
            try:
                mutate((a, b), "hooked-a")  # starts on A
            finally:
                thread.join(TIMEOUT)
            assert not thread.is_alive() and not failures, failures
            outboxes = wait_for_events(engine, receiver, ["hooked-a", "hooked-b"])
            time.sleep(1)  # room for a duplicate to show up

            assert receiver.received and all(verified for _, _, verified, _ in receiver.received)
            for model, events in outboxes.items():
                types = [kind for _, kind, _ in events]
                assert types[0] == "model.created" and types[-1] == "model.deleted", types
                for kind in ("version.created", "version.finalized", "alias.set",
                             "alias.moved", "model.tag_set", "model.updated",
                             "model.tag_deleted", "alias.deleted"):
                    assert kind in types, (kind, types)
                # Every event, once, in the model's order; nothing was sent twice.
                assert receiver.accepted(model) == [event_id for event_id, _, _ in events]
                for event_id, kind, _ in events:
                    assert receiver.arrivals(event_id) == [200], (kind, receiver.received)

            # The delivery log says the same through either process.
            logs = [client.json("GET", f"{API}/webhooks/{sub}/deliveries?limit=500",
                                headers=bearer(admin_token)) for client in (a, b)]
            assert logs[0] == logs[1]
            mine = [d for d in logs[0]["deliveries"] if d["model"] in outboxes]
            assert {d["event_id"] for d in mine} == {
                event_id for events in outboxes.values() for event_id, _, _ in events}
            assert all((d["status"], d["attempts"]) == ("delivered", 1) for d in mine), mine
    finally:
        a.close()
        b.close()


def test_webhook_alias_events_of_moves_racing_from_both_processes_form_one_chain(
        servers, engine, admin_token):
    """Alias moves racing from both processes: the receiver gets their events in the order
    the moves were made, so each event's ``before`` is the ``after`` of the one before it and
    the last one names the alias's final version."""
    a, b = clients(servers)
    base = f"{API}/models/hooked-race"
    try:
        with subscription(a, admin_token) as (_, receiver):
            a.json("POST", f"{API}/models", {"name": "hooked-race"}, status=201)
            for number in (1, 2, 3):
                creator, other = (a, b) if number % 2 else (b, a)
                creator.json("POST", f"{base}/versions", {}, status=201)
                other.json("PUT", f"{base}/versions/{number}/files/model.bin",
                           raw=f"race {number}".encode(), status=201)
                creator.json("POST", f"{base}/versions/{number}/finalize", status=(200, 202))
            for number in (1, 2, 3):
                wait_until_ready(a, f"{base}/versions/{number}")
            moves = [(servers[i % 2], "PUT", f"{base}/aliases/champion",
                      {"version": (i * 7) % 3 + 1}) for i in range(24)]
            answers = all_at_once(moves)
            assert all(code in (200, 201) for code, _ in answers), unexpected(
            answers, (200, 201), *servers)
            final = b.json("GET", f"{base}/aliases/champion")["version"]
            outboxes = wait_for_events(engine, receiver, ["hooked-race"])
            events = outboxes["hooked-race"]
            assert receiver.accepted("hooked-race") == [event_id for event_id, _, _ in events]
            with receiver.lock:
                bodies = {event_id: body for event_id, body, _, status in receiver.received
                          if status < 300}
            chain = [bodies[event_id]["data"] for event_id, kind, _ in events
                     if kind in ("alias.set", "alias.moved")]
            assert chain[0]["before"] is None, chain
            for older, newer in itertools.pairwise(chain):
                assert newer["before"] == older["after"], chain
            assert chain[-1]["after"] == {"version": final}, chain
    finally:
        a.close()
        b.close()


def test_a_refused_webhook_delivery_is_retried_by_either_process_and_logged_once(
        servers, engine, admin_token):
    """The receiver answers 503 (``Retry-After: 1``) twice to the finalization event: it is
    retried, delivered once accepted, the model's later events wait for it, and the log of
    its three attempts reads the same through both processes."""
    a, b = clients(servers)
    try:
        with subscription(b, admin_token) as (sub, receiver):
            receiver.refuse["version.finalized"] = 2
            mutate((a, b), "hooked-refused")
            outboxes = wait_for_events(engine, receiver, ["hooked-refused"])
            events = outboxes["hooked-refused"]
            assert receiver.accepted("hooked-refused") == [event_id for event_id, _, _ in events]
            finalized = [event_id for event_id, kind, _ in events
                         if kind == "version.finalized"]
            assert len(finalized) == 2
            for event_id in finalized:
                assert receiver.arrivals(event_id) == [503, 503, 200]
                # Retry-After: 1 held, whichever process sent the next attempt.
                gaps = [later - earlier for earlier, later
                        in itertools.pairwise(receiver.times[event_id])]
                assert min(gaps) >= 0.95, gaps
            for event_id, kind, _ in events:
                if kind != "version.finalized":
                    assert receiver.arrivals(event_id) == [200], (kind, receiver.received)

            listed = a.json("GET", f"{API}/webhooks/{sub}/deliveries?limit=500",
                            headers=bearer(admin_token))["deliveries"]
            retried = [d for d in listed if d["event_id"] in finalized]
            assert [(d["status"], d["attempts"], d["last_status_code"]) for d in retried] \
                == [("delivered", 3, 200)] * 2
            for delivery in retried:
                seen = [client.json("GET", f"{API}/webhooks/{sub}/deliveries/{delivery['id']}",
                                    headers=bearer(admin_token)) for client in (a, b)]
                assert seen[0] == seen[1]
                assert [t["status_code"] for t in seen[0]["attempt_log"]] == [503, 503, 200]
                assert [t["retry_after"] for t in seen[0]["attempt_log"]] == [1, 1, None]
    finally:
        a.close()
        b.close()


def test_failed_authentications_on_one_process_throttle_the_client_on_the_other(
        servers, database, engine):
    """The counts live in the database (``auth_failures``): failures sent alternately to
    both processes add up, and the block holds on both — for a valid token too."""
    app = make_app({"sqlalchemy.url": database.url})
    try:
        token = add_principal(app, "alice", grants=[("*", "write")])
    finally:
        app.registry["db_engine"].dispose()
    a, b = clients(servers)
    bad = {"Authorization": f"Bearer {BAD_TOKEN}"}
    good = {"Authorization": f"Bearer {token}"}
    try:
        assert b.json("GET", f"{API}/models", headers=good)["models"] is not None
        for index in range(MAX_FAILURES):
            client = (a, b)[index % 2]
            code, _, data = client.call("GET", f"{API}/models", headers=bad)
            assert code == 401, (client.server.url, data)
        for client in (a, b):
            for headers in (bad, good):
                code, answer_headers, data = client.call("GET", f"{API}/models",
                                                         headers=headers)
                assert code == 429, (client.server.url, code, data)
                assert json.loads(data)["error"]["code"] == "too_many_failures"
                assert int(answer_headers["Retry-After"]) > 0
            # Requests without credentials are not the failing client's guesses.
            code, _, _ = client.call("GET", f"{API}/models")
            assert code == 200
    finally:
        a.close()
        b.close()
        with engine.begin() as conn:  # unblock loopback for whatever runs next
            conn.execute(sa.text("DELETE FROM auth_failures"))
