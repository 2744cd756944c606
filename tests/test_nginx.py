"""The shipped nginx configuration (deploy/nginx/modelreg.conf) in front of a real Waitress.

Debian's ``nginx`` runs as an unprivileged process on loopback ports chosen at random, with
its own prefix and temporary directories (:class:`modelreg.testing.nginx.NginxProxy`), in
front of the registry served by Waitress with ``production.ini``'s ``[server:main]``
settings and the forwarding settings the configuration's header comment names.  Without
nginx installed the tests skip, and fail with ``CI=true`` (``.ci/run`` installs it).

Clients connect from different loopback addresses (127.0.0.2, 127.0.0.3, ...): nginx limits
per address, and the registry must see each client's own address, not nginx's.
"""

from __future__ import annotations

import configparser
import hashlib
import http.client
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelreg.testing import TestDatabase, make_app, unavailable
from modelreg.testing.nginx import HOST, NginxProxy, nginx_binary
from modelreg.testing.server import LiveServer
from security_helpers import add_principal

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"
MiB = 1024 * 1024
#: The limits the shipped file sets, as the tests rely on them.
JSON_LIMIT = 1 * MiB
UPLOAD_LIMIT = 256 * MiB
CONNECTIONS_PER_CLIENT = 16
#: The registry's own address towards nginx, and the clients'.
ONE, TWO, THREE, FOUR = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


def _production_server_settings() -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "production.ini", encoding="utf-8")
    return {k: v for k, v in parser.items("server:main") if k not in ("use", "listen")}


@dataclass
class Stack:
    server: LiveServer
    proxy: NginxProxy
    token: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if nginx_binary() is None:
        unavailable("nginx is not installed (apt-get install nginx)")
    db = TestDatabase.create("sqlite")
    settings = {"sqlalchemy.url": db.url, "modelreg.auth.anonymous": "none",
                "modelreg.auth.allow_anonymous_write": "false",
                "modelreg.allowed_hosts": HOST}
    app = make_app(settings)
    try:
        token = add_principal(app, "root", admin=True)
    finally:
        app.registry["db_engine"].dispose()
    server_settings = _production_server_settings()
    threads = int(server_settings.pop("threads"))
    server_settings.update({"trusted_proxy": "127.0.0.1",
                            "trusted_proxy_headers": "x-forwarded-for x-forwarded-host "
                                                     "x-forwarded-proto",
                            "clear_untrusted_proxy_headers": "true"})
    try:
        with LiveServer(settings, threads=threads, server_settings=server_settings) as server:
            assert server.port is not None
            with NginxProxy(server.port) as proxy:
                yield Stack(server, proxy, token)
    finally:
        db.drop()


# ------------------------------------------------------------------------ raw client


def connect(stack: Stack, source: str = ONE, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((HOST, stack.proxy.port), timeout=timeout,
                                    source_address=(source, 0))


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> str:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)["error"]["code"]


def receive(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class Client:
    """One keep-alive connection through nginx from ``source``."""

    def __init__(self, stack: Stack, source: str = ONE) -> None:
        self.stack = stack
        self.conn = http.client.HTTPConnection(HOST, stack.proxy.port, timeout=30,
                                               source_address=(source, 0))

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {self.stack.token}", **(headers or {})}
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=raw, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method: str, path: str, body: Any = None, *, status: int,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        got, _, data = self.call(method, path, body, raw=raw, headers=headers)
        assert got == status, (method, path, got, data[:500])
        return json.loads(data) if data else None

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------------------ tests


def test_uploads_and_downloads_work_through_it(stack):
    """A model, a version, a 3 MiB file in one PUT and another through an upload session
    (both over the 1 MiB of JSON routes), finalize, downloads whole and by range; the audit
    log names the client's address (127.0.0.2), which only X-Forwarded-For carried."""
    client = Client(stack)
    try:
        client.json("POST", f"{API}/models", {"name": "through-nginx"}, status=201)
        base = f"{API}/models/through-nginx/versions"
        client.json("POST", base, {}, status=201)
        weights = hashlib.sha256(b"w").digest() * (3 * MiB // 32)
        stored = client.json("PUT", f"{base}/1/files/model.bin", raw=weights, status=201,
                             headers={"Content-Type": "application/octet-stream"})
        assert stored["sha256"] == hashlib.sha256(weights).hexdigest()
        session = client.json("POST", f"{base}/1/uploads", {"path": "big/part.bin"},
                              status=201)
        chunk = bytes(range(256)) * (2 * MiB // 256)
        digest = hashlib.sha256(chunk).hexdigest()
        client.json("PUT", f"{API}/uploads/{session['id']}?digest=sha256:{digest}", raw=chunk,
                    status=201, headers={"Content-Type": "application/octet-stream"})
        status, _, _ = client.call("POST", f"{base}/1/finalize")
        assert status in (200, 202)
        status, headers, data = client.call("GET", f"{base}/1/files/model.bin")
        assert status == 200 and data == weights and int(headers["content-length"]) == len(
            weights)
        status, _, data = client.call("GET", f"{base}/1/files/big/part.bin",
                                      headers={"Range": "bytes=1000-1999"})
        assert status == 206 and data == chunk[1000:2000]
        events = client.json("GET", f"{API}/audit?model=through-nginx", status=200)["events"]
        assert events and {event["client_addr"] for event in events} == {ONE}, events
    finally:
        client.close()


@pytest.mark.parametrize("route", ["upload", "json"])
@pytest.mark.parametrize("expect", [True, False])
def test_an_oversized_body_gets_413_from_its_header_unsent(stack, route, expect):
    """A body declared over the route's limit is refused before a byte of it is sent: the
    413 answers the header section alone (no ``100 Continue`` first), in JSON."""
    if route == "upload":
        path, length = f"{API}/models/m/versions/1/files/weights.bin", 300_000_000
    else:
        path, length = f"{API}/models", JSON_LIMIT + 1
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Length": str(length),
               "Content-Type": "application/octet-stream"}
    if expect:
        headers["Expect"] = "100-continue"
    started = time.monotonic()
    with connect(stack, TWO) as sock:
        sock.sendall(head("PUT" if route == "upload" else "POST", path, headers))
        answer = receive(sock)
    assert answer.status == 413 and answer.error_code() == "payload_too_large", answer
    assert time.monotonic() - started < 2
    assert stack.proxy.temp_files() == []


def test_a_body_just_under_the_upload_limit_is_not_refused_by_nginx(stack):
    """The upload routes take up to max_put_size: a declared 256 MiB body gets ``100
    Continue`` (here refused by the app afterwards for another reason, not by nginx's
    size check)."""
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Length": str(UPLOAD_LIMIT),
               "Content-Type": "application/octet-stream", "Expect": "100-continue"}
    with connect(stack, TWO) as sock:
        sock.sendall(head("PUT", f"{API}/models/none/versions/1/files/w.bin", headers))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n")


def test_a_wrong_host_is_closed_unanswered_and_unread(stack):
    """Any Host but the registry's: the connection is closed without an answer, the body
    never read, Waitress never involved."""
    with connect(stack, TWO) as sock:
        sock.sendall(b"PUT /api/v1/models/m/versions/1/files/x HTTP/1.1\r\nHost: evil.example"
                     b"\r\nContent-Length: 209715200\r\n\r\n" + b"\0" * 65536)
        assert closed(sock)
    assert stack.proxy.temp_files() == []


@pytest.mark.parametrize("order", ["cl-first", "te-first", "http/1.0"])
def test_content_length_with_transfer_encoding_is_refused_and_nothing_follows(stack, order):
    """nginx refuses both framings at once, and Transfer-Encoding in HTTP/1.0 (400), and
    closes: the request pipelined behind it never reaches the registry."""
    second_body = json.dumps({"name": f"smuggled-{order.replace('/', '')}"}).encode()
    second = head("POST", f"{API}/models", {"Authorization": f"Bearer {stack.token}",
                                             "Content-Type": "application/json",
                                             "Content-Length": str(len(second_body))})
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(second_body), second_body)
    framing = ({"Content-Length": str(len(body)), "Transfer-Encoding": "chunked"}
               if order == "cl-first" else
               {"Transfer-Encoding": "chunked", "Content-Length": str(len(body))})
    first = head("POST", f"{API}/models", {"Authorization": f"Bearer {stack.token}",
                                            "Content-Type": "application/json", **framing})
    if order == "http/1.0":
        first = first.replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\nConnection: keep-alive\r\n", 1)
    with connect(stack, TWO) as sock:
        sock.sendall(first + body + second + second_body)
        answer = receive(sock)
        assert answer.status == 400 and answer.error_code() == "bad_request", answer
        assert closed(sock)
    client = Client(stack, TWO)
    try:
        client.json("GET", f"{API}/models/smuggled-{order.replace('/', '')}", status=404)
    finally:
        client.close()


def test_a_flood_of_connections_from_one_client_is_limited(stack):
    """One address opens 24 connections, each a request whose body never finishes: 16 are
    held (by nginx: the JSON body is buffered there, Waitress sees none), the rest are
    answered 429 at once; another address is served meanwhile."""
    flood = 24
    socks = [connect(stack, THREE, timeout=5) for _ in range(flood)]
    try:
        body_head = head("POST", f"{API}/models", {"Content-Type": "application/json",
                                                   "Content-Length": "100"})
        for sock in socks:
            sock.sendall(body_head + b'{"name": ')
        time.sleep(0.5)
        answered, _, _ = select.select(socks, [], [], 0)
        refused = 0
        for sock in answered:
            answer = receive(sock)
            assert answer.status == 429 and answer.error_code() == "too_many_requests", answer
            assert answer.headers.get("retry-after") == "1"
            refused += 1
        assert refused == flood - CONNECTIONS_PER_CLIENT
        started = time.monotonic()
        client = Client(stack, FOUR)
        try:
            client.json("GET", "/healthz", status=200)
        finally:
            client.close()
        assert time.monotonic() - started < 1
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_do_not_lock_others_out(stack):
    """More idle connections than Waitress's connection_limit, from one address: nginx
    holds them (none reaches Waitress before it sends a request), and another client is
    answered at once."""
    limit = int(_production_server_settings()["connection_limit"])
    socks = [connect(stack, THREE, timeout=5) for _ in range(limit + 20)]
    try:
        started = time.monotonic()
        client = Client(stack, FOUR)
        try:
            client.json("GET", "/healthz", status=200)
        finally:
            client.close()
        assert time.monotonic() - started < 1
    finally:
        for sock in socks:
            sock.close()


def test_the_request_rate_per_client_is_limited(stack):
    """300 requests as fast as one connection sends them: past the burst, 429s; another
    address is not affected."""
    client = Client(stack, FOUR)
    statuses = []
    try:
        for _ in range(300):
            status, _, data = client.call("GET", "/healthz")
            statuses.append(status)
            if status == 429:
                assert json.loads(data)["error"]["code"] == "too_many_requests"
    finally:
        client.close()
    assert set(statuses) == {200, 429} and statuses.count(200) >= 100, statuses
    other = Client(stack, ONE)
    try:
        other.json("GET", "/healthz", status=200)
    finally:
        other.close()


def test_nginx_leaves_nothing_behind(stack):
    """A proxy of its own, used for an upload and a refused one, then stopped: its processes
    are gone, its port is free, its directory and temporary files removed."""
    assert stack.server.port is not None
    proxy = NginxProxy(stack.server.port)
    with proxy:
        directory, master, workers = proxy.directory, proxy.process, list(proxy.worker_pids)
        assert directory is not None and master is not None and workers
        conn = http.client.HTTPConnection(HOST, proxy.port, timeout=10)
        conn.request("PUT", f"{API}/models/m/versions/1/files/x", body=b"x" * (2 * MiB),
                     headers={"Authorization": "Bearer nothing"})
        assert conn.getresponse().status == 401
        conn.close()
    assert master.poll() is not None
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "nginx" not in Path(
            f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"), pid
    assert not directory.exists()
    with socket.socket() as probe:
        probe.bind((HOST, proxy.port))  # free again


def test_failed_authentication_is_throttled_per_client_behind_it(stack):
    """Throttling counts failures by the address Waitress takes from nginx's X-Forwarded-For:
    the client that guessed tokens is blocked, another one behind the same nginx is not."""
    guesser, bystander = "127.0.0.6", "127.0.0.7"
    conn = http.client.HTTPConnection(HOST, stack.proxy.port, timeout=10,
                                      source_address=(guesser, 0))
    statuses = []
    try:
        for _ in range(11):  # production's default: blocked after 10 failures in 60 s
            conn.request("GET", f"{API}/models",
                         headers={"Authorization": "Bearer mr_0123456789abcdef_" + "x" * 43,
                                  "X-Forwarded-For": bystander})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    assert statuses == [401] * 10 + [429], statuses
    client = Client(stack, bystander)
    try:
        client.json("GET", f"{API}/models", status=200)
    finally:
        client.close()


def test_expect_100_continue_within_the_limit_goes_through(stack):
    """A client that waits for ``100 Continue`` gets it from nginx, sends its body, and the
    registry answers (Waitress sees no Expect of its own)."""
    body = json.dumps({"name": "expected"}).encode()
    with connect(stack, TWO) as sock:
        sock.sendall(head("POST", f"{API}/models", {
            "Authorization": f"Bearer {stack.token}", "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Expect": "100-continue"}))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = receive(sock)
    assert answer.status == 201, answer


def _nginx_size(value: str) -> int:
    units = {"k": 1024, "m": MiB, "g": 1024 * MiB}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def test_the_configuration_follows_production_ini():
    """The shipped file's body limits are production.ini's (1 MiB for JSON routes, the
    single-request upload size for the upload routes), its upstream keep-alive ends before
    Waitress's channel_timeout, and docs/security.md states the figures production.ini
    sets."""
    conf = (ROOT / "deploy" / "nginx" / "modelreg.conf").read_text()
    sizes = [_nginx_size(v) for v in re.findall(r"client_max_body_size (\w+);", conf)]
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "production.ini", encoding="utf-8")
    app = dict(parser.items("app:main"))
    # the upload routes: a file's PUT, upload-session chunks, modelreg-hf's LFS upload URLs
    assert sizes == [int(app["modelreg.api.max_json_body"])] + [
        int(app["modelreg.upload.max_put_size"])] * 3
    server = _production_server_settings()
    keepalive = re.search(r"upstream modelreg \{[^}]*keepalive_timeout (\d+)s;", conf)
    assert keepalive and int(keepalive.group(1)) < int(server["channel_timeout"])
    assert f"limit_conn modelreg_conn {CONNECTIONS_PER_CLIENT};" in conf
    doc = (ROOT / "docs" / "security.md").read_text()
    limit, timeout = server["connection_limit"], server["channel_timeout"]
    assert f"| connections | {limit} (`connection_limit`)" in doc
    assert f"closed after `channel_timeout` ({timeout} s" in doc
    body_mib = (int(server["max_request_body_size"]) - 1) // MiB
    assert f"{limit} \N{MULTIPLICATION SIGN} {body_mib} MiB" in doc
