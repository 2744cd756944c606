"""Malformed HTTP framing and slow clients, over raw sockets, against a real Waitress.

The server runs with the ``[server:main]`` settings of ``production.ini`` (its
``channel_timeout``, ``max_request_header_size``, ``max_request_body_size``, buffers and
thread count; only the address differs) and the app with production's access rules (no
anonymous access at all) and JSON limit.  A second server, identical but for a
``channel_timeout`` of 2 seconds, shows that stalled connections are cut off.

Each test sends bytes no well-behaved client sends and asserts the status line that comes
back (Waitress's own plain-text answer for what it refuses before the app, the app's JSON
error for the rest), that the database is as it was, and that the server still serves.

What Waitress does, as these tests pin it down (Waitress >= 3.0.2):

* two ``Content-Length`` headers (even equal ones), a negative or signed one: ``400``;
* ``Content-Length`` with ``Transfer-Encoding: chunked``: Waitress 3.0.2 alone frames it as
  chunked, hides the ``Transfer-Encoding`` from the app and keeps the connection open, where
  RFC 9112 §6.1 says a server must close it (request smuggling behind a proxy that frames by
  ``Content-Length``).  modelreg's Waitress (``egg:modelreg#waitress``,
  :class:`modelreg.servers.FramingGuardParser`) answers a JSON ``400 ambiguous_framing``
  and closes the connection; requests pipelined behind it are never processed.  So is
  ``Transfer-Encoding`` in an HTTP/1.0 request;
* chunk sizes that are not hexadecimal (``zz``, ``-5``, ``0x5``) or chunks not ended by CR
  LF: ``400``; a huge chunk size is read until ``max_request_body_size``, and a client that
  stops sending is cut off after ``channel_timeout``;
* trailers are read and dropped: they never become request headers;
* a header section over ``max_request_header_size`` (a long header or a long request line):
  ``431``;
* a body over the app's ``modelreg.api.max_json_body``, with or without ``Content-Length``:
  the app's JSON ``413``; a declared ``Content-Length`` over ``max_request_body_size``:
  a JSON ``413 payload_too_large`` before any byte of the body is read;
* slow clients are read by Waitress's event loop, not by the worker threads: twice as many
  clients dribbling their headers a byte at a time as there are threads do not delay a
  normal request on another connection.
"""

from __future__ import annotations

import configparser
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelreg.testing import TestDatabase, make_app
from modelreg.testing.server import LiveServer
from security_helpers import add_principal
from state_helpers import database_state, reflect

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"
#: A request on a free connection must be answered within this many seconds (a server
#: blocked by the slow clients would take the tens of seconds they need to finish).
PROMPT = 5.0


def _production() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "production.ini", encoding="utf-8")
    return parser


PRODUCTION = _production()
#: production.ini's [server:main], but the address (LiveServer picks a free local port).
SERVER_SETTINGS = {
    key: value for key, value in PRODUCTION.items("server:main") if key not in ("use", "listen")
}
MAX_JSON_BODY = int(PRODUCTION.get("app:main", "modelreg.api.max_json_body"))
#: Every body limit of the app in production.ini: JSON bodies, single-request uploads.
APP_BODY_LIMITS = {
    key: int(value) for key, value in PRODUCTION.items("app:main")
    if key in ("modelreg.api.max_json_body", "modelreg.upload.max_put_size")
}
MAX_REQUEST_BODY = int(SERVER_SETTINGS["max_request_body_size"])
MAX_HEADER = int(SERVER_SETTINGS["max_request_header_size"])


def test_production_sets_waitress_limits_above_the_apps():
    """The settings the tests run with: Waitress's limits explicit in production.ini, its
    body limit the largest body the app accepts (modelreg.limits), and stalled clients cut
    off after a bounded time."""
    for key in ("channel_timeout", "max_request_header_size", "max_request_body_size",
                "connection_limit", "threads"):
        assert key in SERVER_SETTINGS, f"production.ini sets no {key} in [server:main]"
    assert "modelreg.api.max_json_body" in APP_BODY_LIMITS
    for key, limit in APP_BODY_LIMITS.items():
        assert limit < MAX_REQUEST_BODY, f"{key} is not below max_request_body_size"
    # ...and no higher than the largest request a route takes: Waitress refuses a declared
    # body over it from the header, where the app would only see it once spooled.
    assert MAX_REQUEST_BODY == max(APP_BODY_LIMITS.values()) + 1
    assert 0 < int(SERVER_SETTINGS["channel_timeout"]) <= 300
    assert 8 * 1024 <= MAX_HEADER <= 256 * 1024
    assert SERVER_SETTINGS.get("expose_tracebacks", "false").lower() == "false"


# ----------------------------------------------------------------------------- servers


@dataclass
class Served:
    """A running server, the admin's token and what the tests compare the database with."""

    server: LiveServer
    token: str
    engine: sa.Engine
    metadata: sa.MetaData

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def state(self) -> dict[str, list]:
        return database_state(self.engine, self.metadata)


@pytest.fixture(scope="module")
def database() -> Iterator[TestDatabase]:
    """A SQLite database of the module's own: framing is Waitress's business, not the
    database's."""
    db = TestDatabase.create("sqlite")
    yield db
    db.drop()


def _app_settings(database: TestDatabase) -> dict[str, str]:
    return {
        "sqlalchemy.url": database.url,
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "none",
        "modelreg.auth.allow_anonymous_write": "false",
        "modelreg.api.max_json_body": str(MAX_JSON_BODY),
    }


@pytest.fixture(scope="module")
def admin_token(database: TestDatabase) -> str:
    app = make_app(_app_settings(database))
    try:
        return add_principal(app, "root", admin=True)
    finally:
        app.registry["db_engine"].dispose()


def _serve(database: TestDatabase, token: str, **overrides: str) -> Iterator[Served]:
    settings = {**SERVER_SETTINGS, **overrides}
    threads = int(settings.pop("threads"))
    engine = database.engine()
    with LiveServer(_app_settings(database), threads=threads,
                    server_settings=settings) as server:
        yield Served(server, token, engine, reflect(engine))


@pytest.fixture(scope="module")
def served(database, admin_token) -> Iterator[Served]:
    """The registry behind Waitress with production.ini's [server:main] settings."""
    yield from _serve(database, admin_token)


@pytest.fixture(scope="module")
def impatient(database, admin_token) -> Iterator[Served]:
    """The same, but stalled connections are cut off after 2 s instead of 120 s."""
    yield from _serve(database, admin_token, channel_timeout="2", cleanup_interval="1")


# ------------------------------------------------------------------------- raw client


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    version: int

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)

    def error_code(self) -> str:
        return self.json()["error"]["code"]


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def send(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may answer and close before it has all of it."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def receive(sock: socket.socket) -> Answer:
    """Read one response from ``sock``."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return Answer(response.status, response.reason, headers, body, response.version)


def exchange(port: int, data: bytes) -> Answer:
    """Send ``data`` on a new connection and read one response."""
    with connect(port) as sock:
        send(sock, data)
        return receive(sock)


def request(method: str, path: str, *, headers: dict[str, str] | None = None,
            body: bytes = b"", extra: str = "") -> bytes:
    """The bytes of a request; ``extra`` is added verbatim to the header section."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    head = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return head.encode("latin-1") + body


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    """A chunked body of ``chunks`` ending in ``trailer`` (header lines, each CR LF ended)."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return out + b"0\r\n" + trailer + b"\r\n"


def bearer(served: Served) -> dict[str, str]:
    return {"Authorization": f"Bearer {served.token}"}


def assert_still_serving(served: Served) -> None:
    started = time.monotonic()
    answer = exchange(served.port, request("GET", "/healthz"))
    assert answer.status == 200, answer
    answer = exchange(served.port, request("GET", f"{API}/models", headers=bearer(served)))
    assert answer.status == 200, answer
    assert time.monotonic() - started < 2 * PROMPT


@pytest.fixture
def unchanged(served: Served) -> Iterator[None]:
    """The test must leave the database as it found it and the server serving."""
    before = served.state()
    yield
    assert_still_serving(served)
    assert served.state() == before


def create_body(name: str) -> bytes:
    return json.dumps({"name": name}).encode()


def json_headers(served: Served, length: int | None = None) -> dict[str, str]:
    headers = {**bearer(served), "Content-Type": "application/json"}
    if length is not None:
        headers["Content-Length"] = str(length)
    return headers


# --------------------------------------------------------------------- Content-Length


@pytest.mark.parametrize("lengths", ["{n}|{m}", "{m}|{n}", "{n}|{n}", "{n}, {m}"])
def test_repeated_content_length_is_400(served, unchanged, lengths):
    """Two Content-Length values, either of which would frame a valid request to create a
    model (the body is padded with spaces): the server must not pick one."""
    body = create_body("dup-cl")
    values = lengths.format(n=len(body), m=len(body) + 6).split("|")
    extra = "".join(f"Content-Length: {value}\r\n" for value in values)
    answer = exchange(served.port, request("POST", f"{API}/models", body=body + b" " * 6,
                                           headers={**bearer(served),
                                                    "Content-Type": "application/json"},
                                           extra=extra))
    assert (answer.status, answer.reason) == (400, "Bad Request")
    assert answer.headers.get("connection") == "close"


@pytest.mark.parametrize("length", ["-1", "+5", "0x10", "1e3", " ", "5 5", "99999999999999999999"])
def test_invalid_content_length_is_400_or_413(served, unchanged, length):
    answer = exchange(served.port, request("POST", f"{API}/models", body=b"{}",
                                           headers={**json_headers(served),
                                                    "Content-Length": length}))
    expected = 413 if length.isdigit() else 400
    assert answer.status == expected, answer


def test_content_length_over_the_servers_limit_is_refused_unread(served, unchanged):
    """A declared body over max_request_body_size is refused from its header, before a byte
    of it is sent, with modelreg's JSON error."""
    with connect(served.port) as sock:
        send(sock, request("POST", f"{API}/models",
                           headers=json_headers(served, MAX_REQUEST_BODY + 1)))
        answer = receive(sock)
    assert answer.status == 413 and answer.error_code() == "payload_too_large", answer
    assert answer.json()["error"]["details"] == {"max_request_body_size": MAX_REQUEST_BODY}


@pytest.mark.parametrize("expect", [False, True])
def test_an_upload_over_the_largest_request_is_refused_from_its_header(served, unchanged,
                                                                        expect):
    """A 300 MB PUT of a file, unauthenticated: the JSON 413 answers its header section alone
    (with ``Expect: 100-continue``, no ``100 Continue`` before it), so no byte of the body is
    sent, read or spooled."""
    headers = {"Content-Length": "300000000", "Content-Type": "application/octet-stream"}
    if expect:
        headers["Expect"] = "100-continue"
    with connect(served.port, timeout=5.0) as sock:
        send(sock, request("PUT", f"{API}/models/m/versions/1/files/weights.bin",
                           headers=headers))
        answer = receive(sock)
    assert answer.status == 413 and answer.error_code() == "payload_too_large", answer


def test_expect_100_continue_within_the_limit_is_continued(served, unchanged):
    """A body the server will read gets ``100 Continue`` and is then judged by the app (here
    a name no model may have, so nothing changes)."""
    body = create_body("../etc")
    with connect(served.port) as sock:
        send(sock, request("POST", f"{API}/models", headers={
            **json_headers(served, len(body)), "Expect": "100-continue"}))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        send(sock, body)
        answer = receive(sock)
    assert answer.status == 422 and answer.error_code() == "invalid_name", answer


# --------------------------------------------------------------- Content-Length + chunked


def test_content_length_with_chunked_is_refused_and_the_connection_closed(served, unchanged):
    """Both framings at once: a JSON 400 and the connection closed (RFC 9112 §6.1).  The
    request is refused (no token), so nothing changes whichever framing a server chose."""
    body = chunked(b'{"name": ', b'"te-wins"}')
    data = request("POST", f"{API}/models", body=body,
                   headers={"Content-Type": "application/json", "Content-Length": "5",
                            "Transfer-Encoding": "chunked"})
    with connect(served.port) as sock:
        send(sock, data)
        answer = receive(sock)
        assert answer.status == 400 and answer.error_code() == "ambiguous_framing", answer
        assert answer.headers.get("connection") == "close"
        assert _closed(sock), "the server kept the connection open"


def _smuggling(served: Served, head: bytes, name: str) -> bytes:
    """``head`` (a request line and headers saying both Content-Length and chunked), a chunked
    body, and a second, valid request to create the model ``name`` pipelined behind it; the
    Content-Length covers the whole chunked body, as a front end framing by it would see."""
    second = request("POST", f"{API}/models", body=create_body(name),
                     headers=json_headers(served, len(create_body(name))))
    body = chunked(create_body(name + "-first"))
    return head.replace(b"{length}", str(len(body)).encode()) + body + second


@pytest.mark.parametrize("order", ["cl-first", "te-first", "http/1.0"])
def test_a_request_pipelined_behind_ambiguous_framing_is_never_processed(served, unchanged,
                                                                          order):
    """A request with both Content-Length and Transfer-Encoding (or Transfer-Encoding in
    HTTP/1.0), followed on the same connection by a second request that would create a
    model: the first is answered 400 and the connection closed; the second never runs (no
    model, and no second answer).  Plain Waitress 3.0.2 creates it."""
    auth = f"Authorization: Bearer {served.token}\r\nContent-Type: application/json\r\n"
    framing = {"cl-first": "Content-Length: {length}\r\nTransfer-Encoding: chunked\r\n",
               "te-first": "Transfer-Encoding: chunked\r\nContent-Length: {length}\r\n",
               "http/1.0": "Transfer-Encoding: chunked\r\nContent-Length: {length}\r\n"
                           "Connection: keep-alive\r\n"}[order]
    version = "HTTP/1.0" if order == "http/1.0" else "HTTP/1.1"
    head = (f"POST {API}/models {version}\r\nHost: 127.0.0.1\r\n{auth}{framing}\r\n"
            ).encode()
    name = f"smuggled-{order.replace('/', '').replace('.', '')}"
    with connect(served.port) as sock:
        send(sock, _smuggling(served, head, name))
        answer = receive(sock)
        assert answer.status == 400 and answer.error_code() == "ambiguous_framing", answer
        assert answer.headers.get("connection") == "close"
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest == b"", f"a second answer came on the connection: {rest[:200]!r}"
    answer = exchange(served.port, request("GET", f"{API}/models/{name}",
                                           headers=bearer(served)))
    assert answer.status == 404, answer


@pytest.mark.parametrize("encoding", ["gzip", "gzip, chunked", "chunked, gzip", "identity",
                                      "chunked\x0b"])
def test_unsupported_transfer_encodings_are_refused(served, unchanged, encoding):
    data = request("POST", f"{API}/models", body=chunked(create_body("te")),
                   headers={**json_headers(served), "Transfer-Encoding": encoding})
    answer = exchange(served.port, data)
    assert answer.status in (400, 501), answer
    assert answer.headers.get("connection") == "close"


# ----------------------------------------------------------------------- chunk sizes


@pytest.mark.parametrize("size", [b"zz", b"-5", b"0x5", b"5 5", b"+5", b" ", b"5;\x00",
                                  b"\xff"])
def test_invalid_chunk_sizes_are_400(served, unchanged, size):
    body = size + b"\r\n" + create_body("chunk") + b"\r\n0\r\n\r\n"
    data = request("POST", f"{API}/models", body=body,
                   headers={**json_headers(served), "Transfer-Encoding": "chunked"})
    answer = exchange(served.port, data)
    assert (answer.status, answer.reason) == (400, "Bad Request"), answer
    assert answer.headers.get("connection") == "close"


def test_chunks_not_ended_by_crlf_are_400(served, unchanged):
    body = b"5\r\n" + b'{"a":1}' + b"0\r\n\r\n"  # a chunk of 5 bytes followed by 2 more
    data = request("POST", f"{API}/models", body=body,
                   headers={**json_headers(served), "Transfer-Encoding": "chunked"})
    answer = exchange(served.port, data)
    assert answer.status == 400, answer


def test_a_huge_chunk_size_holds_no_thread(served, unchanged):
    """A chunk of 2**96 bytes announced and never sent: the request never reaches the app,
    and the server answers everyone else meanwhile."""
    data = request("POST", f"{API}/models", body=b"f" * 24 + b"\r\n" + create_body("huge"),
                   headers={**json_headers(served), "Transfer-Encoding": "chunked"})
    with connect(served.port, timeout=1.0) as sock:
        send(sock, data)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing to answer yet: the chunk is not complete
        assert_still_serving(served)


def test_a_stalled_chunked_upload_is_cut_off(impatient):
    with connect(impatient.port, timeout=15.0) as sock:
        send(sock, request("POST", f"{API}/models", body=b"f" * 24 + b"\r\nabc",
                           headers={**json_headers(impatient), "Transfer-Encoding": "chunked"}))
        started = time.monotonic()
        assert _closed(sock), "the server kept a stalled connection open"
        assert time.monotonic() - started < 10
    assert_still_serving(impatient)


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closes ``sock`` (without answering) before the socket's timeout."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# -------------------------------------------------------------------------- trailers


@pytest.mark.parametrize("trailer", [
    b"Authorization: Bearer {token}\r\n",
    b"Bad Trailer\r\n",
    b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    b"X-Trailer: " + b"t" * 30_000 + b"\r\n",
])
def test_trailers_are_dropped(served, unchanged, trailer):
    """A chunked body's trailer section, well-formed or not, never becomes request headers:
    an admin's token in the trailer authenticates nothing."""
    trailer = trailer.replace(b"{token}", served.token.encode())
    data = request("POST", f"{API}/models",
                   body=chunked(create_body("trailer-admin"), trailer=trailer),
                   headers={"Content-Type": "application/json",
                            "Transfer-Encoding": "chunked"})
    answer = exchange(served.port, data)
    if answer.status == 400 and "json" not in answer.headers.get("content-type", ""):
        return  # refusing a malformed trailer is right too
    assert answer.status == 401 and answer.error_code() == "unauthorized", answer


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("where", ["header", "request line", "many headers"])
def test_header_sections_over_the_limit_are_431(served, unchanged, where):
    if where == "header":
        data = request("GET", f"{API}/models", headers={"X-Long": "a" * (MAX_HEADER + 10)})
    elif where == "request line":
        data = request("GET", f"{API}/models/" + "a" * (MAX_HEADER + 10))
    else:
        data = request("GET", f"{API}/models",
                       headers={f"X-H{i}": "v" * 60 for i in range(MAX_HEADER // 60)})
    answer = exchange(served.port, data)
    assert (answer.status, answer.reason) == (431, "Request Header Fields Too Large"), answer


def test_a_header_section_just_under_the_limit_reaches_the_app(served, unchanged):
    data = request("GET", f"{API}/models",
                   headers={**bearer(served), "X-Long": "a" * (MAX_HEADER - 1000)})
    assert exchange(served.port, data).status == 200


@pytest.mark.parametrize("line", [b"X-A: a\x00b", b"X A: b", b"X-A : b", b"\x01X: b",
                                  b"X-A: a\rb", b": b"])
def test_malformed_header_lines_are_400(served, unchanged, line):
    data = (b"POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line + b"\r\n"
            + b"Authorization: Bearer " + served.token.encode() + b"\r\n"
            + b"Content-Type: application/json\r\nContent-Length: 19\r\n\r\n"
            + create_body("bad-hdr"))
    answer = exchange(served.port, data)
    assert (answer.status, answer.reason) == (400, "Bad Request"), answer


def test_undecodable_paths_and_queries_are_json_400(served, unchanged):
    """Bytes that are not UTF-8 once percent-decoded reach the app, which refuses them; raw
    8-bit bytes in the request line never get past Waitress."""
    for target in (f"{API}/models/%ff%fe", f"{API}/models/%c0%ae%c0%ae/versions",
                   f"{API}/models?filter=%ff", f"{API}/models?page_token=%ed%a0%80"):
        answer = exchange(served.port, request("GET", target, headers=bearer(served)))
        assert answer.status == 400 and answer.error_code() == "invalid_encoding", (target,
                                                                                     answer)
    answer = exchange(served.port, b"GET /api/v1/models/\xff HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer.status == 400, answer


# ------------------------------------------------------------------------ large bodies


def test_a_body_over_the_apps_limit_with_content_length_is_a_json_413(served, unchanged):
    body = json.dumps({"name": "big", "description": "x" * MAX_JSON_BODY}).encode()
    answer = exchange(served.port, request("POST", f"{API}/models", body=body,
                                           headers=json_headers(served, len(body))))
    assert answer.status == 413 and answer.error_code() == "payload_too_large", answer


def test_a_chunked_body_over_the_apps_limit_is_a_json_413(served, unchanged):
    body = json.dumps({"name": "big", "description": "x" * MAX_JSON_BODY}).encode()
    pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    answer = exchange(served.port, request("POST", f"{API}/models", body=chunked(*pieces),
                                           headers={**json_headers(served),
                                                    "Transfer-Encoding": "chunked"}))
    assert answer.status == 413 and answer.error_code() == "payload_too_large", answer


def test_a_body_at_the_apps_limit_is_parsed(served, unchanged):
    """The limit is the app's, exactly: one byte under it is read and judged on its JSON."""
    name = "at-the-limit"
    padding = MAX_JSON_BODY - len(json.dumps({"name": name, "description": ""}))
    body = json.dumps({"name": name, "description": "x" * padding}).encode()
    assert len(body) == MAX_JSON_BODY
    answer = exchange(served.port, request("POST", f"{API}/models", body=body,
                                           headers=json_headers(served, len(body))))
    # The description is over its own rule (10,000 characters): a 422 about it, not a 413.
    assert answer.status == 422 and answer.error_code() == "invalid_body", answer


# ----------------------------------------------------------------------- slow clients


class Dribbler(threading.Thread):
    """Sends ``data`` one byte every ``interval`` seconds on its own connection, until
    stopped or done."""

    def __init__(self, port: int, data: bytes, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port, timeout=30.0)
        self.data = data
        self.interval = interval
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        try:
            for byte in self.data:
                if self.stopped.wait(self.interval):
                    return
                self.sock.sendall(bytes([byte]))
                self.sent += 1
        except OSError:
            return

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.sock.close()


@pytest.fixture
def dribblers() -> Iterator[list[Dribbler]]:
    started: list[Dribbler] = []
    yield started
    for dribbler in started:
        dribbler.stop()


def _timed_request(served: Served) -> float:
    started = time.monotonic()
    answer = exchange(served.port, request("GET", f"{API}/models", headers=bearer(served)))
    assert answer.status == 200, answer
    return time.monotonic() - started


@pytest.mark.parametrize("part", ["headers", "body"])
def test_slow_clients_do_not_block_others(served, unchanged, dribblers, part):
    """Twice as many clients as worker threads send their request a byte every 0.2 s; a
    normal request on another connection is answered promptly all along."""
    threads = int(SERVER_SETTINGS["threads"])
    body = json.dumps({"name": "slowloris", "description": "x" * 200}).encode()
    head = request("POST", f"{API}/models", headers=json_headers(served, len(body)))
    for _ in range(2 * threads):
        if part == "headers":
            dribbler = Dribbler(served.port, head + body)
        else:
            dribbler = Dribbler(served.port, body)
            dribbler.sock.sendall(head)
        dribblers.append(dribbler)
        dribbler.start()
    time.sleep(1.0)
    for _ in range(3):
        assert _timed_request(served) < PROMPT
        time.sleep(0.5)
    assert all(d.is_alive() and d.sent > 3 for d in dribblers), "a dribbler stopped early"
    assert all(d.sent < len(d.data) for d in dribblers), "a dribbler finished its request"


def test_a_stalled_client_is_cut_off_after_the_channel_timeout(impatient):
    """A client that sends part of its headers and then nothing is disconnected."""
    with connect(impatient.port, timeout=15.0) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        assert _closed(sock), "the server kept a stalled connection open"
        assert time.monotonic() - started < 10
    assert_still_serving(impatient)


def test_an_idle_keep_alive_connection_is_cut_off(impatient):
    with connect(impatient.port, timeout=15.0) as sock:
        send(sock, request("GET", "/healthz"))
        assert receive(sock).status == 200
        assert _closed(sock), "the server kept an idle connection open"
