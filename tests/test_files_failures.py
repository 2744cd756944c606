"""Nothing half-written: storage faults, digest races, dropped clients and killed servers.

Storage faults come from a fault-injecting wrapper around the local store
(:mod:`faulty_store`); dropped connections and ``SIGKILL`` go through a real Waitress
(:class:`~modelreg.testing.server.LiveServer`) and raw sockets.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faulty_store import FaultyBlobStore, eio
from faulty_store import plugin as faulty_plugin
from files_support import file_url, rows, sha
from helpers import API, create_model, create_version, error_code
from modelreg.api import StorageFull
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from modelreg.testing.server import LiveServer
from openapi_checking import CheckedTestApp

M = "fraud-detector"
OCTETS = "application/octet-stream"
KiB, MiB = 1024, 1024 * 1024


@pytest.fixture(scope="module")
def faulty_wsgi(modelreg_database, tmp_path_factory) -> Iterator[Any]:
    app = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "modelreg.storage": "faulty",
        "modelreg.storage.faulty.path": str(tmp_path_factory.mktemp("faulty")),
        "modelreg.upload.min_chunk_size": str(64 * KiB),
    }, [*CORE_PLUGINS, faulty_plugin])
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def app(faulty_wsgi, openapi_checker) -> Iterator[CheckedTestApp]:
    test = CheckedTestApp(faulty_wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    test.checker = openapi_checker
    yield test
    store = faulty_wsgi.registry["modelreg.blob_store"]
    store.faults.clear()
    store.after_put = None
    clear_database(faulty_wsgi.registry["db_engine"])


@pytest.fixture
def store(faulty_wsgi) -> FaultyBlobStore:
    return faulty_wsgi.registry["modelreg.blob_store"]


@pytest.fixture
def draft(app) -> int:
    create_model(app, M)
    return create_version(app, M)["number"]


def temporary_files(root: Path) -> list[str]:
    return sorted(f"{area}/{name}" for area in ("tmp", "uploads")
                  for name in os.listdir(root / area))


def no_dangling_rows(app: Any, store: Any) -> None:
    """Every file's blob has a row, and every blob row's content is in the store."""
    blobs = {row["sha256"] for row in rows(app, "blobs")}
    for file in rows(app, "files"):
        assert file["sha256"] in blobs, file
    for sha256 in blobs:
        assert store.exists(sha256), sha256


# ------------------------------------------------------------------------ storage faults


@pytest.mark.parametrize("error, status, code", [
    (StorageFull("local storage is full while writing a blob"), 507, "insufficient_storage"),
    (eio(), 503, "storage_unavailable"),
])
def test_put_fault_mid_body_stores_nothing(app, store, draft, error, status, code):
    leftovers = temporary_files(store.root)
    data = os.urandom(3 * MiB)
    store.fail("put", error, after=MiB + 5)
    response = app.put(file_url(M, draft, "m.bin"), data, content_type=OCTETS, status=status)
    assert error_code(response) == code
    assert rows(app, "files") == [] and rows(app, "blobs") == []
    assert not store.exists(sha(data))
    assert temporary_files(store.root) == leftovers
    # The same request succeeds once the store recovers.
    app.put(file_url(M, draft, "m.bin"), data, content_type=OCTETS, status=201)
    assert app.get(file_url(M, draft, "m.bin")).body == data
    no_dangling_rows(app, store)


def test_begin_upload_fault_opens_no_session(app, store, draft):
    store.fail("begin_upload", StorageFull("full"))
    response = app.post_json(f"{API}/models/{M}/versions/{draft}/uploads", {"path": "a"},
                             status=507)
    assert error_code(response) == "insufficient_storage"
    assert rows(app, "upload_sessions") == []


def test_chunk_fault_keeps_the_offset_and_the_chunk_can_be_sent_again(app, store, draft):
    leftovers = temporary_files(store.root)
    data = os.urandom(64 * KiB + 100)
    location = app.post_json(f"{API}/models/{M}/versions/{draft}/uploads",
                             {"path": "big.bin"}, status=201).json["location"]
    app.patch(location, data[:64 * KiB], content_type=OCTETS, status=202)
    store.fail("upload_part", StorageFull("full"), after=10)
    response = app.patch(location, data[64 * KiB:], content_type=OCTETS,
                         headers={"Content-Range": f"{64 * KiB}-{len(data) - 1}"}, status=507)
    assert error_code(response) == "insufficient_storage"
    assert app.get(location).json["offset"] == 64 * KiB
    store.fail("upload_part", eio(), after=50)
    app.patch(location, data[64 * KiB:], content_type=OCTETS, status=503)
    assert app.get(location).json["offset"] == 64 * KiB
    app.patch(location, data[64 * KiB:], content_type=OCTETS, status=202)
    store.fail("complete_parts", eio())
    response = app.put(f"{location}?digest=sha256:{sha(data)}", b"", content_type=OCTETS,
                       status=503)
    assert error_code(response) == "storage_unavailable"
    assert rows(app, "files") == []
    app.put(f"{location}?digest=sha256:{sha(data)}", b"", content_type=OCTETS, status=201)
    assert app.get(file_url(M, draft, "big.bin")).body == data
    assert temporary_files(store.root) == leftovers
    no_dangling_rows(app, store)


def test_read_fault_is_a_json_503(app, store, draft):
    app.put(file_url(M, draft, "m.bin"), b"weights", content_type=OCTETS, status=201)
    store.fail("open", eio())
    response = app.get(file_url(M, draft, "m.bin"), status=503)
    assert error_code(response) == "storage_unavailable"
    assert response.headers["Retry-After"]


def test_blob_collected_before_it_was_recorded(app, store, draft):
    """Garbage collection took the blob between its upload and the file's transaction (the
    race the blob row's lock closes): the client is told to upload again; no row points at
    a missing blob."""
    data = b"collected meanwhile"
    store.after_put = lambda info: store.inner.delete(info.sha256)
    response = app.put(file_url(M, draft, "m.bin"), data, content_type=OCTETS, status=503)
    assert error_code(response) == "blob_missing"
    assert rows(app, "files") == []
    store.after_put = None
    app.put(file_url(M, draft, "m.bin"), data, content_type=OCTETS, status=201)
    no_dangling_rows(app, store)


# ------------------------------------------------------------ a real server, real sockets


@pytest.fixture
def server_settings(modelreg_database, tmp_path) -> dict[str, str]:
    return {"sqlalchemy.url": modelreg_database.url,
            "modelreg.storage.local.path": str(tmp_path / "blobs"),
            "modelreg.auth.anonymous": "write"}


def raw_request(port: int, head: str, body: bytes | None = None) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode() + (body or b""))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def request(port: int, method: str, path: str, body: bytes = b"",
            content_type: str = "application/json") -> tuple[int, bytes]:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
    return raw_request(port, head, body)


def make_draft(port: int) -> None:
    assert request(port, "POST", f"{API}/models", b'{"name": "fraud-detector"}')[0] == 201
    assert request(port, "POST", f"{API}/models/{M}/versions", b"{}")[0] == 201


def test_client_that_disconnects_mid_body_leaves_nothing(server_settings, engine_rows):
    with LiveServer(server_settings, threads=4) as server:
        make_draft(server.port)
        path = f"{API}/models/{M}/versions/1/files/m.bin"
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTETS}\r\n"
                              f"Content-Length: {20 * MiB}\r\n\r\n").encode())
                sock.sendall(b"x" * (3 * MiB))
        # A session's chunk cut off the same way.
        status, body = request(server.port, "POST", f"{API}/models/{M}/versions/1/uploads",
                               b'{"path": "big.bin"}')
        assert status == 201
        location = json.loads(body)["location"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall((f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTETS}\r\n"
                          f"Content-Length: {16 * MiB}\r\n\r\n").encode())
            sock.sendall(b"y" * MiB)
        time.sleep(0.5)
        status, body = request(server.port, "GET", location)
        assert status == 200 and b'"offset":0' in body
        assert request(server.port, "GET", f"{API}/models/{M}/versions/1/files/m.bin")[0] == 404
        assert request(server.port, "GET", "/healthz")[0] == 200
    root = Path(server_settings["modelreg.storage.local.path"])
    assert engine_rows("files") == [] and engine_rows("blobs") == []
    assert os.listdir(root / "tmp") == []
    assert [os.path.getsize(root / "uploads" / name) for name in os.listdir(root / "uploads")
            ] == [0]


@pytest.fixture
def engine_rows(modelreg_database) -> Iterator[Any]:
    """Rows of a table of the session's database; the database is emptied afterwards."""
    engine = modelreg_database.engine()

    def fetch(table: str) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.exec_driver_sql(f"SELECT * FROM {table}")]

    yield fetch
    clear_database(engine)


def test_server_killed_mid_upload_leaves_no_file_and_restarts(server_settings, engine_rows):
    root = Path(server_settings["modelreg.storage.local.path"])
    size = 200 * MiB
    block = os.urandom(MiB)
    server = LiveServer(server_settings, threads=4,
                        server_settings={"max_request_body_size": str(1024 * MiB)})
    server.start()
    try:
        make_draft(server.port)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall((f"PUT {API}/models/{M}/versions/1/files/m.bin HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Type: {OCTETS}\r\nContent-Length: {size}\r\n\r\n").encode())
        for _ in range(size // MiB):
            sock.sendall(block)
        # Kill the server while the app writes the body into the store.
        deadline = time.monotonic() + 60
        while not os.listdir(root / "tmp"):
            assert time.monotonic() < deadline, "the upload never reached the store"
            time.sleep(0.001)
        server.process.kill()
        server.process.wait(10)
        sock.close()
    finally:
        server.stop()
    assert engine_rows("files") == []
    with LiveServer(server_settings, threads=4) as again:
        status, body = request(again.port, "GET", f"{API}/models/{M}/versions/1/files")
        assert status == 200 and b'"files":[]' in body
        assert request(again.port, "GET", f"{API}/models/{M}/versions/1/files/m.bin")[0] == 404
        status, _ = request(again.port, "PUT", f"{API}/models/{M}/versions/1/files/m.bin",
                            b"after the crash", OCTETS)
        assert status == 201
        status, body = request(again.port, "GET", f"{API}/models/{M}/versions/1/files/m.bin")
        assert (status, body) == (200, b"after the crash")
    for file in engine_rows("files"):
        assert file["sha256"] == sha(b"after the crash")



def test_parts_acknowledged_before_a_crash_complete_after_the_restart(server_settings,
                                                                       engine_rows):
    """A part the server answered 201 for survives the server's process being killed: after
    a restart the session still holds it, the other parts come (out of order) and the
    upload completes with the right bytes."""
    part_size = 8 * MiB
    data = os.urandom(3 * part_size + 1000)
    pieces = {n: data[(n - 1) * part_size:n * part_size] for n in (1, 2, 3, 4)}

    def put_part(port: int, location: str, n: int) -> int:
        head = (f"PUT {location}/parts/{n}?digest=sha256:{sha(pieces[n])} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nConnection: close\r\nContent-Type: {OCTETS}\r\n"
                f"Content-Length: {len(pieces[n])}\r\n\r\n")
        return raw_request(port, head, pieces[n])[0]

    server = LiveServer(server_settings, threads=4)
    server.start()
    try:
        make_draft(server.port)
        status, body = request(server.port, "POST", f"{API}/models/{M}/versions/1/uploads",
                               json.dumps({"path": "m.bin", "size": len(data),
                                           "part_size": part_size}).encode())
        assert status == 201
        location = json.loads(body)["location"]
        assert put_part(server.port, location, 3) == 201
        assert put_part(server.port, location, 1) == 201
        server.process.kill()  # no clean shutdown: what was acknowledged must be on disk
        server.process.wait(10)
    finally:
        server.stop()
    with LiveServer(server_settings, threads=4) as again:
        status, body = request(again.port, "GET", location)
        assert status == 200
        assert [p["number"] for p in json.loads(body)["parts"]] == [1, 3]
        assert put_part(again.port, location, 4) == 201
        assert put_part(again.port, location, 2) == 201
        status, body = request(again.port, "PUT", f"{location}?digest=sha256:{sha(data)}",
                               b"", OCTETS)
        assert status == 201, body
        status, body = request(again.port, "GET", f"{API}/models/{M}/versions/1/files/m.bin")
        assert (status, body) == (200, data)
    root = Path(server_settings["modelreg.storage.local.path"])
    assert os.listdir(root / "uploads") == [] and os.listdir(root / "tmp") == []
    (blob,) = (root / "blobs" / "sha256").rglob(sha(data))
    assert blob.read_bytes() == data


HOSTILE_PATHS = [
    "../../etc/passwd", "a/../../b", "%2e%2e/%2e%2e/etc/passwd", "a%2F..%2F..%2Fb",
    "..%5c..%5cwindows", "a%5Cb", "a%00b", "%2Fetc%2Fpasswd", "/etc/passwd", "a//b",
    "%252e%252e/x", "a/%2E/b", "new%0d%0aline", ("x" * 600),
]


def test_hostile_file_paths_through_a_real_server(server_settings, engine_rows):
    """The raw request line, as a hostile client writes it: Waitress decodes the URL once,
    the registry refuses what that gives (422), nothing is stored, the server carries on."""
    with LiveServer(server_settings, threads=4) as server:
        make_draft(server.port)
        for path in HOSTILE_PATHS:
            url = f"{API}/models/{M}/versions/1/files/{path}"
            for method, body in (("PUT", b"evil"), ("GET", b""), ("DELETE", b"")):
                status, answer = request(server.port, method, url, body, OCTETS)
                assert status == 422, (method, path, status, answer)
                assert json.loads(answer)["error"]["code"] == "invalid_path", answer
        assert request(server.port, "GET", "/healthz")[0] == 200
    root = Path(server_settings["modelreg.storage.local.path"])
    assert engine_rows("files") == [] and engine_rows("blobs") == []
    assert not any((root / "blobs" / "sha256").iterdir())


def test_downloads_through_waitress_file_wrapper(server_settings, engine_rows):
    """Local files are sent through Waitress's ``wsgi.file_wrapper``: whole, ranges, HEAD."""
    data = os.urandom(3 * MiB + 17)
    url = f"{API}/models/{M}/versions/1/files/w.bin"
    with LiveServer(server_settings, threads=4) as server:
        make_draft(server.port)
        assert request(server.port, "PUT", url, data, OCTETS)[0] == 201
        assert request(server.port, "GET", url) == (200, data)
        head = (f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Range: bytes={MiB - 5}-{2 * MiB + 4}\r\n\r\n")
        assert raw_request(server.port, head) == (206, data[MiB - 5:2 * MiB + 5])
        head = f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nRange: bytes=-17\r\n\r\n"
        assert raw_request(server.port, head) == (206, data[-17:])
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(f"HEAD {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        headers, _, body = answer.partition(b"\r\n\r\n")
        assert headers.startswith(b"HTTP/1.1 200") and body == b""
        assert f"Content-Length: {len(data)}".encode() in headers
