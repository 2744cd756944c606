"""Metrics, request ids, the access log, JSON logs, readiness and the pool-size warning."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import webtest

from faulty_store import eio
from faulty_store import plugin as faulty_plugin
from helpers import API, error_code
from modelreg import main
from modelreg.db import get_engine
from modelreg.logs import JSONFormatter
from modelreg.metrics import count_bytes, count_storage_error, metered
from modelreg.servers import check_pool_size
from modelreg.storage.errors import StorageError
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from modelreg.testing.server import LiveServer, free_port
from security_helpers import add_principal, bearer

METRICS_TOKEN = "scrape-secret-0123456789abcdef"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition, or ``None`` if absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        if metric.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if found == labels:
            return float(value)
    return None


@pytest.fixture
def build(modelreg_database, tmp_path) -> Iterator[Any]:
    """Build apps over the session's database with extra settings; all cleaned up after."""
    apps = []

    def factory(**extra: str) -> webtest.TestApp:
        settings = {"sqlalchemy.url": modelreg_database.url,
                    "modelreg.storage.local.path": str(tmp_path / "blobs"), **extra}
        app = make_app(settings)
        apps.append(app)
        return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})

    yield factory
    for app in apps:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


# ------------------------------------------------------------------------------- metrics


def test_metrics_are_off_by_default(build):
    app = build()
    response = app.get("/metrics", status=404)
    assert error_code(response) == "not_found"


def test_metrics_count_requests_by_route_and_status(build):
    app = build(**{"modelreg.metrics.enabled": "true", "modelreg.metrics.public": "true",
                   "modelreg.auth.anonymous": "write"})
    app.post_json(f"{API}/models", {"name": "counted"}, status=201)
    app.post_json(f"{API}/models", {"name": "counted"}, status=409)
    app.get(f"{API}/models/counted", status=200)
    app.get("/no/such/route", status=404)
    response = app.get("/metrics", status=200)
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    assert sample(text, "modelreg_http_requests_total",
                  route="api.models", method="POST", status="201") == 1
    assert sample(text, "modelreg_http_requests_total",
                  route="api.models", method="POST", status="409") == 1
    assert sample(text, "modelreg_http_requests_total",
                  route="api.model", method="GET", status="200") == 1
    assert sample(text, "modelreg_http_requests_total",
                  route="unmatched", method="GET", status="404") == 1
    assert sample(text, "modelreg_http_request_duration_seconds_count",
                  route="api.models", method="POST") == 2
    # Each mutation queued one event that no worker delivered yet.
    assert sample(text, "modelreg_outbox_pending") == 1
    assert sample(text, "modelreg_transfer_bytes_total", direction="upload",
                  backend="local") == 0


def test_byte_and_storage_error_counters(build):
    app = build(**{"modelreg.metrics.enabled": "true", "modelreg.metrics.public": "true"})
    registry = app.app.registry
    count_bytes("upload", 1000, registry)
    count_bytes("download", 10, registry)
    count_bytes("download", 5, registry)
    count_storage_error(StorageError("bucket unreachable"), registry)
    with pytest.raises(ValueError, match="direction"):
        count_bytes("sideways", 1, registry)
    text = app.get("/metrics").text
    assert sample(text, "modelreg_transfer_bytes_total", direction="upload",
                  backend="local") == 1000
    assert sample(text, "modelreg_transfer_bytes_total", direction="download",
                  backend="local") == 15
    assert sample(text, "modelreg_blob_store_errors_total", error="StorageError") == 1
    # Outside a request and with metrics off, counting is a no-op.
    count_bytes("upload", 1)
    count_bytes("upload", 1, build().app.registry)


def transferred(app: webtest.TestApp | str) -> dict[str, float | None]:
    """The transfer counters of the local backend, scraped from a test app or a URL."""
    if isinstance(app, str):
        with urllib.request.urlopen(app + "/metrics", timeout=30) as response:
            text = response.read().decode()
    else:
        text = app.get("/metrics").text
    return {direction: sample(text, "modelreg_transfer_bytes_total", direction=direction,
                              backend="local") for direction in ("upload", "download")}


def test_file_bytes_are_counted_by_direction(build):
    """Bodies of file uploads and upload chunks count as received, file bodies sent as
    sent; headers-only answers (HEAD, 304, refusals before the body) count nothing."""
    app = build(**{"modelreg.metrics.enabled": "true", "modelreg.metrics.public": "true",
                   "modelreg.auth.anonymous": "write", "modelreg.upload.min_chunk_size": "4"})
    base = f"{API}/models/bytes/versions/1"
    app.post_json(f"{API}/models", {"name": "bytes"}, status=201)
    app.post_json(f"{API}/models/bytes/versions", {}, status=201)
    weights = b"0123456789" * 1000
    app.put(f"{base}/files/model.bin", weights, status=201,
            headers={"Content-Type": "application/octet-stream"})
    assert transferred(app) == {"upload": 10_000, "download": 0}

    session = app.post_json(f"{base}/uploads", {"path": "big.bin"}, status=201).json
    app.patch(session["location"], b"abcdefgh", status=202,
              headers={"Content-Type": "application/octet-stream"})
    app.put(f"{session['location']}?digest=sha256:{hashlib.sha256(b'abcdefghij').hexdigest()}",
            b"ij", status=201, headers={"Content-Type": "application/octet-stream"})
    assert transferred(app) == {"upload": 10_010, "download": 0}

    assert app.get(f"{base}/files/model.bin").body == weights
    app.get(f"{base}/files/model.bin", headers={"Range": "bytes=100-199"}, status=206)
    app.head(f"{base}/files/model.bin", status=200)
    etag = f'"{hashlib.sha256(weights).hexdigest()}"'
    app.get(f"{base}/files/model.bin", headers={"If-None-Match": etag}, status=304)
    app.get(f"{base}/files/big.bin", status=200)
    assert transferred(app) == {"upload": 10_010, "download": 10_110}


def test_bytes_read_again_after_seeking_back_count_once(build):
    app = build(**{"modelreg.metrics.enabled": "true", "modelreg.metrics.public": "true"})
    stream = metered(io.BytesIO(bytes(100)), "download", app.app.registry)
    assert len(stream.read(30)) == 30
    assert stream.seek(10) == 10  # as Waitress does when the socket took only 10 bytes
    assert len(stream.read(40)) == 40
    assert stream.readinto(bytearray(20)) == 20
    assert stream.tell() == 70
    stream.close()
    assert transferred(app) == {"upload": 0, "download": 70}
    # With metrics off the stream is not wrapped at all.
    plain = io.BytesIO()
    assert metered(plain, "upload", build().app.registry) is plain


@pytest.mark.server
def test_file_bytes_are_counted_once_under_waitress(modelreg_database, tmp_path):
    """Waitress sends local files through its ``wsgi.file_wrapper``, which seeks back and
    forth and reads again what the socket did not take: each byte counts once, whole files
    and ranges alike."""
    settings = {"sqlalchemy.url": modelreg_database.url,
                "modelreg.storage.local.path": str(tmp_path / "blobs"),
                "modelreg.metrics.enabled": "true", "modelreg.metrics.public": "true"}
    weights = bytes(range(256)) * 12_288  # 3 MiB: several blocks of the file wrapper
    base = f"{API}/models/sent/versions/1"
    try:
        with LiveServer(settings, threads=2) as server:
            def call(method: str, path: str, body: bytes | None = None,
                     headers: dict[str, str] | None = None) -> bytes:
                request = urllib.request.Request(server.url + path, data=body, method=method,
                                                 headers=headers or {})
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.read()

            call("POST", f"{API}/models", b'{"name": "sent"}',
                 {"Content-Type": "application/json"})
            call("POST", f"{API}/models/sent/versions", b"{}",
                 {"Content-Type": "application/json"})
            call("PUT", f"{base}/files/model.bin", weights,
                 {"Content-Type": "application/octet-stream"})
            assert call("GET", f"{base}/files/model.bin") == weights
            part = call("GET", f"{base}/files/model.bin",
                        headers={"Range": "bytes=1048576-2097151"})
            assert part == weights[1048576:2097152]
            assert transferred(server.url) == {"upload": len(weights),
                                               "download": len(weights) + 1048576}
    finally:
        engine = get_engine({"sqlalchemy.url": modelreg_database.url})
        try:
            clear_database(engine)
        finally:
            engine.dispose()


def test_metrics_need_the_scrape_token_or_a_global_admin(build):
    app = build(**{"modelreg.metrics.enabled": "true", "modelreg.metrics.token": METRICS_TOKEN,
                   "modelreg.auth.anonymous": "read"})
    wsgi = app.app
    admin = add_principal(wsgi, "root", admin=True)
    writer = add_principal(wsgi, "writer", grants=[("*", "admin")])
    response = app.get("/metrics", status=401)
    assert error_code(response) == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = app.get("/metrics", headers=bearer("not-the-" + METRICS_TOKEN), status=401)
    error_code(response)
    response = app.get("/metrics", headers=bearer(writer), status=403)
    assert error_code(response) == "forbidden"
    assert "modelreg_http_requests_total" in app.get("/metrics", headers=bearer(admin)).text
    scraped = app.get("/metrics", headers=bearer(METRICS_TOKEN), status=200)
    assert "modelreg_outbox_pending" in scraped.text
    # Only GET.
    app.post("/metrics", headers=bearer(METRICS_TOKEN), status=405)


def test_a_short_metrics_token_stops_start_up(modelreg_database):
    with pytest.raises(RuntimeError, match="too short"):
        make_app({"sqlalchemy.url": modelreg_database.url, "modelreg.metrics.enabled": "true",
                  "modelreg.metrics.token": "short"})


# -------------------------------------------------------------------- request ids and logs


def _access_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "modelreg.access"]


def test_request_id_is_echoed_and_in_every_log_line(build, caplog):
    app = build(**{"modelreg.auth.anonymous": "write"})
    caplog.set_level(logging.INFO, logger="modelreg")
    response = app.post_json(f"{API}/models", {"name": "traced"},
                             headers={"X-Request-ID": "client-id.42"}, status=201)
    assert response.headers["X-Request-ID"] == "client-id.42"
    (record,) = _access_records(caplog)
    line = json.loads(JSONFormatter().format(record))
    assert line["request_id"] == "client-id.42"
    assert line["logger"] == "modelreg.access"
    assert line["method"] == "POST" and line["path"] == f"{API}/models"
    assert line["status"] == 201 and line["principal"] is None
    assert line["duration_ms"] >= 0 and line["bytes"] == len(response.body)
    assert line["time"].endswith("Z")
    # Every record made during the request carries the id, whoever logs it.
    assert all(r.request_id == "client-id.42" for r in caplog.records)


def test_request_id_is_generated_for_errors_and_insane_ids(build, caplog):
    app = build(**{"modelreg.auth.anonymous": "none"})
    caplog.set_level(logging.INFO, logger="modelreg.access")
    for sent in (None, "two words", "x" * 129, "new\u00e9line"):
        headers = {"X-Request-ID": sent} if sent is not None else {}
        response = app.get(f"{API}/models", headers=headers, status=401)
        generated = response.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
        assert _access_records(caplog)[-1].request_id == generated
    # 404 from the router, refused bodies: every response has one.
    assert app.get("/nowhere", status=404).headers["X-Request-ID"]
    assert app.get("/healthz").headers["X-Request-ID"]


def test_access_log_names_the_principal(build, caplog):
    app = build(**{"modelreg.auth.anonymous": "none"})
    token = add_principal(app.app, "alice", grants=[("*", "read")])
    caplog.set_level(logging.INFO, logger="modelreg.access")
    app.get(f"{API}/models", headers=bearer(token), status=200)
    record = _access_records(caplog)[-1]
    assert record.principal == "alice" and record.status == 200
    assert "alice" in record.getMessage()


@contextlib.contextmanager
def _waitress(app: Any) -> Iterator[int]:
    """A real Waitress serving ``app`` in this process (so that caplog sees its log); the
    port."""
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        server.task_dispatcher.shutdown()
        server.close()
        thread.join(10)


def _start_download(port: int, path: str) -> tuple[socket.socket, bytes]:
    """Send a GET; return the socket and what was read: the headers and some of the body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received or len(received) < 65536:
        chunk = sock.recv(65536)
        assert chunk, received[:300]
        received += chunk
    return sock, received


def _access_line(caplog, path: str) -> logging.LogRecord:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [r for r in _access_records(caplog) if r.path == path]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no access-log line for {path}")


@pytest.mark.server
def test_a_download_that_fails_mid_stream_is_not_logged_as_200(build, backend, caplog):
    """Under a real Waitress, a blob truncated while it is sent: the client gets fewer bytes
    than ``Content-Length`` and a closed connection (never a hang), and the access-log line
    says 500 with the bytes read, not 200.  A client that hangs up early is logged 499; a
    whole download 200."""
    if backend != "sqlite":
        pytest.skip("streaming a blob involves no database: SQLite is enough")
    app = build(**{"modelreg.auth.anonymous": "write"})
    size = 32 * 1024 * 1024
    app.post_json(f"{API}/models", {"name": "big"}, status=201)
    app.post_json(f"{API}/models/big/versions", {}, status=201)
    content = bytes(range(256)) * (size // 256)
    app.put(f"{API}/models/big/versions/1/files/w.bin", content,
            content_type="application/octet-stream", status=201)
    blob = Path(app.app.registry["modelreg.blob_store"].file_path(
        hashlib.sha256(content).hexdigest()))
    original = blob.read_bytes()
    url = f"{API}/models/big/versions/1/files/w.bin"
    caplog.set_level(logging.INFO, logger="modelreg.access")
    with _waitress(app.app) as port:
        sock, received = _start_download(port, url)
        blob.chmod(0o644)
        with blob.open("r+b") as file:  # the store's file shrinks under the download
            file.truncate(1024 * 1024)
        with sock:
            while chunk := sock.recv(1 << 20):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in head
        assert len(body) < size
        record = _access_line(caplog, url)
        assert record.status == 500 and record.bytes < size, record.getMessage()
        assert re.fullmatch(r"[0-9a-f]{32}", record.request_id)

        blob.write_bytes(original)
        caplog.clear()
        sock, received = _start_download(port, url)
        sock.close()  # the client goes away
        record = _access_line(caplog, url)
        assert record.status == 499 and record.bytes < size, record.getMessage()

        caplog.clear()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=60) as response:
            assert response.read() == content
        record = _access_line(caplog, url)
        assert (record.status, record.bytes) == (200, size), record.getMessage()


def test_a_stream_that_raises_part_way_is_logged_500(build, caplog):
    """A blob store whose stream raises after some bytes (a network store failing): the
    line says 500, not the 206 the response started with."""
    app = build(**{"modelreg.auth.anonymous": "write"})
    app.post_json(f"{API}/models", {"name": "flaky"}, status=201)
    app.post_json(f"{API}/models/flaky/versions", {}, status=201)
    app.put(f"{API}/models/flaky/versions/1/files/w.bin", b"x" * 3_000_000,
            content_type="application/octet-stream", status=201)
    store = app.app.registry["modelreg.blob_store"]
    opened = store.open

    class Failing(io.RawIOBase):
        def __init__(self, stream: Any) -> None:
            self.stream, self.reads = stream, 0

        def read(self, size: int | None = -1) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise StorageError("the store went away")
            return self.stream.read(size)

        def close(self) -> None:
            self.stream.close()

    caplog.set_level(logging.INFO, logger="modelreg.access")
    url = f"{API}/models/flaky/versions/1/files/w.bin"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "open", lambda *a, **k: Failing(opened(*a, **k)))
        patch.setattr(store, "file_path", lambda sha256: None)
        with pytest.raises(StorageError):
            app.get(url, headers={"Range": "bytes=1-"})
    record = _access_line(caplog, url)
    assert record.status == 500 and record.bytes == 1024 * 1024, record.getMessage()


def test_json_formatter_writes_exceptions_and_extras():
    logger = logging.getLogger("modelreg.tests.json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed %s",
                                   ("here",), exc_info=__import__("sys").exc_info(),
                                   extra={"model": "fraud"})
    line = json.loads(JSONFormatter().format(record))
    assert line["message"] == "failed here" and line["level"] == "ERROR"
    assert line["model"] == "fraud" and line["request_id"] == "-"
    assert "RuntimeError: boom" in line["exception"]


# -------------------------------------------------------------------------------- readyz


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    app = make_app({"sqlalchemy.url": url, "modelreg.storage.local.path": str(tmp_path)})
    try:
        body = webtest.TestApp(app).get("/readyz", status=503).json
        assert body == {"status": "unavailable",
                        "checks": {"database": "error: OperationalError", "storage": "ok"},
                        "error": {"code": "not_ready", "message": "not ready: database",
                                  "details": {"checks": ["database"]}}}
        # Liveness does not depend on the database.
        assert webtest.TestApp(app).get("/healthz").json["status"] == "ok"
    finally:
        app.registry["db_engine"].dispose()


@pytest.mark.parametrize("damage", ["removed", "replaced_by_a_file"])
def test_readyz_is_503_when_storage_is_not_usable(build, tmp_path, damage):
    app = build()
    assert app.get("/readyz").json["checks"] == {"database": "ok", "storage": "ok"}
    blobs = tmp_path / "blobs"
    shutil.rmtree(blobs)
    if damage == "replaced_by_a_file":
        blobs.write_bytes(b"not a directory")
    body = app.get("/readyz", status=503).json
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["storage"].startswith("error: ")
    assert str(tmp_path) not in json.dumps(body)  # no paths to the client


def test_readyz_is_503_when_the_store_check_fails_unexpectedly(modelreg_database, tmp_path,
                                                               caplog):
    """A plugin's store may raise something else than StorageError (a client library's own
    error): the store is not ready all the same (503), never a 500."""
    app = make_app({"sqlalchemy.url": modelreg_database.url, "modelreg.storage": "faulty",
                    "modelreg.storage.faulty.path": str(tmp_path / "faulty")},
                   [*CORE_PLUGINS, faulty_plugin])
    try:
        store = app.registry["modelreg.blob_store"]
        test = webtest.TestApp(app)
        store.fail("check", RuntimeError(f"connection pool of {tmp_path} is closed"))
        with caplog.at_level(logging.WARNING, logger="modelreg.ops"):
            body = test.get("/readyz", status=503).json
        assert body["checks"] == {"database": "ok", "storage": "error: RuntimeError"}
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["details"] == {"checks": ["storage"]}
        assert str(tmp_path) not in json.dumps(body)
        assert "failed unexpectedly" in caplog.text and "RuntimeError" in caplog.text
        store.fail("check", eio())  # the expected kind, for comparison
        assert test.get("/readyz", status=503).json["checks"]["storage"] == "error: StorageError"
        assert test.get("/readyz", status=200).json["status"] == "ok"
    finally:
        app.registry["db_engine"].dispose()


def test_readyz_is_503_when_the_driver_fails_unexpectedly(tmp_path):
    """A driver error that is no DB-API error (SQLAlchemy passes those through unwrapped, as
    a bug of a driver under load would be): the database is not ready, 503, not 500."""
    app = make_app({"sqlalchemy.url": f"sqlite:///{tmp_path / 'registry.sqlite'}",
                    "modelreg.storage.local.path": str(tmp_path / "blobs")})
    engine = app.registry["db_engine"]
    failing = []

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        if failing:
            raise struct.error("unpack requires a buffer of 4 bytes")

    try:
        sqlalchemy.event.listen(engine, "do_connect", connect)
        test = webtest.TestApp(app)
        assert test.get("/readyz").json["checks"]["database"] == "ok"
        failing.append(True)
        engine.dispose()  # the next check opens a new connection
        body = test.get("/readyz", status=503).json
        assert body["checks"] == {"database": "error: error", "storage": "ok"}
        assert body["error"]["code"] == "not_ready"
    finally:
        engine.dispose()


def readyz_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("modelreg-readyz-")]


def test_readyz_answers_503_in_time_when_the_pool_is_saturated(build):
    """Every connection of the pool held by other threads: ``/readyz`` names the database
    check that timed out after ``modelreg.readyz.timeout`` (not the pool's 30 s
    ``pool_timeout``), probes do not pile up threads, and it is ready once a connection is
    free again."""
    app = build(**{"sqlalchemy.pool_size": "2", "sqlalchemy.max_overflow": "0",
                   "sqlalchemy.pool_timeout": "30", "modelreg.readyz.timeout": "1"})
    engine = app.app.registry["db_engine"]
    assert app.get("/readyz").json["checks"] == {"database": "ok", "storage": "ok"}
    release = threading.Event()
    held = threading.Barrier(3, timeout=30)

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            held.wait()
            release.wait(60)

    holders = [threading.Thread(target=hold, name=f"holder-{i}") for i in range(2)]
    for thread in holders:
        thread.start()
    try:
        held.wait()
        for _ in range(3):  # the load balancer keeps asking
            started = time.monotonic()
            response = app.get("/readyz", status=503)
            elapsed = time.monotonic() - started
            assert 0.9 <= elapsed < 2.5, elapsed
            assert response.json["status"] == "unavailable"
            assert response.json["checks"] == {"database": "timeout", "storage": "ok"}
            assert response.json["error"] == {
                "code": "readiness_timeout", "message": "no answer within 1 s from: database",
                "details": {"checks": ["database"], "timeout": 1.0}}
        # One database check waits for the pool, however many probes came.
        assert [t.name for t in readyz_threads()].count("modelreg-readyz-database") == 1
    finally:
        release.set()
        for thread in holders:
            thread.join(30)
    deadline = time.monotonic() + 10
    while (response := app.get("/readyz", expect_errors=True)).status_code != 200:
        assert time.monotonic() < deadline, response.json
        time.sleep(0.1)
    assert response.json == {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}


class FreezingProxy:
    """A TCP proxy on 127.0.0.1 in front of a database server that can stop passing bytes
    (a database that hangs, or a network that drops packets without resetting), and
    start again."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.closed = False
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="proxy")
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            self.sockets += [client, server]
            self._start(self._pump, client, server)
            self._start(self._pump, server, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()  # frozen: hold what came until it flows again
                if self.closed:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(10)


def test_readyz_answers_503_in_time_when_the_database_hangs(modelreg_database, tmp_path):
    """The database server stops answering mid-connection (no reset, no refusal: the ping
    hangs): ``/readyz`` says so within ``modelreg.readyz.timeout``; it is ready again once
    the server answers."""
    if modelreg_database.backend == "sqlite":
        pytest.skip("an SQLite database has no connection that could hang")
    url = sqlalchemy.engine.make_url(modelreg_database.url)
    proxy = FreezingProxy(url.host or "127.0.0.1", url.port or 5432)
    app = make_app({"sqlalchemy.url": url.set(host="127.0.0.1", port=proxy.port)
                    .render_as_string(hide_password=False),
                    "modelreg.storage.local.path": str(tmp_path / "blobs"),
                    "modelreg.readyz.timeout": "1.5"})
    test = webtest.TestApp(app)
    try:
        assert test.get("/readyz").json["checks"] == {"database": "ok", "storage": "ok"}
        proxy.flowing.clear()
        started = time.monotonic()
        body = test.get("/readyz", status=503).json
        assert 1.4 <= time.monotonic() - started < 3, time.monotonic() - started
        assert body["checks"] == {"database": "timeout", "storage": "ok"}
        assert body["error"]["code"] == "readiness_timeout"
        assert body["error"]["details"]["checks"] == ["database"]
        # Liveness does not depend on the database.
        assert test.get("/healthz").json["status"] == "ok"
        proxy.flowing.set()
        deadline = time.monotonic() + 10
        while (response := test.get("/readyz", expect_errors=True)).status_code != 200:
            assert time.monotonic() < deadline, response.json
            time.sleep(0.1)
    finally:
        proxy.close()
        app.registry["db_engine"].dispose()
    deadline = time.monotonic() + 10
    while readyz_threads():  # the check in flight ended with its connection
        assert time.monotonic() < deadline, readyz_threads()
        time.sleep(0.05)


def test_readyz_timeout_setting_is_checked_at_start_up(modelreg_database, tmp_path):
    for wrong in ("0", "-1", "soon", "301"):
        with pytest.raises(ValueError, match=r"modelreg\.readyz\.timeout"):
            make_app({"sqlalchemy.url": modelreg_database.url,
                      "modelreg.storage.local.path": str(tmp_path),
                      "modelreg.readyz.timeout": wrong})


# ------------------------------------------------------------------------- pool sizing


def test_pool_smaller_than_the_threads_warns_at_start_up(modelreg_database, tmp_path, caplog,
                                                         monkeypatch):
    monkeypatch.delenv("MODELREG_SERVER_THREADS", raising=False)
    ini = Path(tmp_path / "server.ini")
    ini.write_text("[server:main]\nuse = egg:waitress#main\nthreads = 16\n")
    settings = {"sqlalchemy.url": modelreg_database.url, "sqlalchemy.pool_size": "4",
                "sqlalchemy.max_overflow": "2",
                "modelreg.storage.local.path": str(tmp_path / "blobs")}
    caplog.set_level(logging.WARNING, logger="modelreg.servers")
    app = main({"__file__": str(ini), "here": str(tmp_path)}, **settings)
    app.registry["db_engine"].dispose()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "modelreg.servers"]
    assert "at most 6 connections" in warning and "16 threads" in warning
    # The environment (gunicorn's raw_env, the ASGI adapter) wins over the ini's threads.
    caplog.clear()
    monkeypatch.setenv("MODELREG_SERVER_THREADS", "6")
    app = main({"__file__": str(ini), "here": str(tmp_path)}, **settings)
    app.registry["db_engine"].dispose()
    assert not [r for r in caplog.records if r.name == "modelreg.servers"]


def test_pool_check_needs_both_numbers(modelreg_database):
    engine = get_engine({"sqlalchemy.url": modelreg_database.url})
    try:
        assert check_pool_size(engine, {}, None) is None
        assert check_pool_size(engine, {}, 10_000) is not None or (
            modelreg_database.backend == "sqlite" and engine.pool.__class__.__name__ != "QueuePool")
    finally:
        engine.dispose()


@pytest.mark.parametrize("formatter", ["generic", "json"])
def test_production_ini_logging_writes_request_ids(tmp_path, formatter):
    """The ini's logging sections as a server loads them, in a process of their own."""
    root = Path(__file__).resolve().parent.parent
    ini = tmp_path / "production.ini"
    text = (root / "production.ini").read_text()
    ini.write_text(text.replace("formatter = generic", f"formatter = {formatter}"))
    code = (
        "import logging, logging.config, sys\n"
        f"logging.config.fileConfig({str(ini)!r})\n"
        "logging.getLogger('modelreg.startup').warning('before any request')\n"
        "from modelreg.logs import _current, install_record_factory\n"
        "install_record_factory()\n"
        "_current.set('req-7')\n"
        "logging.getLogger('modelreg.view').warning('in a request')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    if formatter == "json":
        first, second = (json.loads(line) for line in lines)
        assert first["request_id"] == "-" and first["message"] == "before any request"
        assert second["request_id"] == "req-7" and second["logger"] == "modelreg.view"
    else:
        assert "[-] before any request" in lines[0]
        assert "[req-7] in a request" in lines[1]
