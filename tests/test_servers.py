"""The same app under gunicorn (gthread workers) and under uvicorn through a2wsgi.

Each test starts the server as a real process on a free loopback port, with two worker
processes over the session's database, runs the smoke flow over HTTP (create a model and a
version, upload a file, finalize, set and resolve an alias, download, search, health and
readiness), then stops it.  The packages come with the ``test`` extra, so nothing here skips
for lack of them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelreg.testing import TestDatabase, clear_database
from modelreg.testing.server import LiveServer, free_port, serve_in_thread

pytestmark = pytest.mark.server

API = "/api/v1"
TIMEOUT = 60.0


class Client:
    """One keep-alive HTTP connection to a server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        """Send a request (JSON ``body`` or ``raw`` bytes); the response's body is read."""
        headers = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        response.body = response.read()  # type: ignore[attr-defined]
        return response

    def json(self, method: str, path: str, body: Any = None, *, status: int = 200,
             raw: bytes | None = None) -> Any:
        response = self.call(method, path, body, raw=raw)
        text = response.body.decode("utf-8", "replace")  # type: ignore[attr-defined]
        assert response.status == status, f"{method} {path}: {response.status} {text}"
        return json.loads(text) if text else None

    def close(self) -> None:
        self.conn.close()


def wait_while_validating(client: Client, path: str) -> dict[str, Any]:
    """The version at ``path`` once no scanner runs on it (the embedded worker scans when a
    scanner plugin is installed: finalize then answers 202 ``validating``)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        version = client.json("GET", path)
        if version["status"] != "validating" or time.monotonic() > deadline:
            return version
        time.sleep(0.1)


def smoke(port: int) -> None:
    """The smoke flow: every kind of request a deployment serves, once."""
    client = Client(port)
    try:
        assert client.json("GET", "/healthz")["status"] == "ok"
        echoed = client.call("GET", "/healthz", headers={"X-Request-ID": "smoke-1"})
        assert echoed.getheader("X-Request-ID") == "smoke-1"
        ready = client.json("GET", "/readyz")
        assert ready["status"] == "ok", ready
        client.json("POST", f"{API}/models", {"name": "smoke", "tags": {"team": "ops"}},
                    status=201)
        base = f"{API}/models/smoke"
        assert client.json("POST", f"{base}/versions", {}, status=201)["number"] == 1
        weights = b"weights of the smoke model" * 1000
        stored = client.json("PUT", f"{base}/versions/1/files/model.bin", raw=weights,
                             status=201)
        assert stored["sha256"] == hashlib.sha256(weights).hexdigest(), stored
        finalized = client.call("POST", f"{base}/versions/1/finalize")
        assert finalized.status in (200, 202), finalized.body  # type: ignore[attr-defined]
        assert wait_while_validating(client, f"{base}/versions/1")["status"] == "ready"
        client.json("PUT", f"{base}/aliases/champion", {"version": 1}, status=201)
        alias = client.json("GET", f"{base}/aliases/champion")
        assert alias["version"] == 1, alias
        download = client.call("GET", f"{base}/versions/champion/files/model.bin")
        assert download.status == 200
        assert download.body == weights  # type: ignore[attr-defined]
        found = client.json("GET", f"{API}/models?filter=tag.team%20%3D%20'ops'")
        assert [m["name"] for m in found["models"]] == ["smoke"], found
        missing = client.call("GET", f"{API}/models/nothing-here")
        assert missing.status == 404
        assert json.loads(missing.body)["error"]["code"] == "model_not_found"  # type: ignore[attr-defined]
    finally:
        client.close()


@pytest.fixture
def server_settings(modelreg_settings: dict[str, Any], modelreg_database: TestDatabase,
                    tmp_path) -> Iterator[dict[str, str]]:
    """Settings of the session's database; the database is emptied afterwards."""
    settings = {key: str(value) for key, value in modelreg_settings.items()
                if isinstance(value, str | int | float | bool)}
    settings["modelreg.storage.local.path"] = str(tmp_path / "blobs")
    # as in development.ini: versions finalized while a scanner is installed get scanned
    settings["modelreg.worker.embedded"] = "true"
    settings["modelreg.worker.poll_interval"] = "0.2"
    yield settings
    engine = sa.create_engine(modelreg_database.url)
    try:
        clear_database(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_smoke_flow_under_other_servers(server, server_settings):
    with LiveServer(server_settings, threads=4, server=server, workers=2) as live:
        smoke(live.port)
        process = live.process
    assert process is not None and process.poll() is not None


def test_asgi_factory_needs_an_ini(monkeypatch):
    from modelreg.asgi import create_app

    monkeypatch.delenv("MODELREG_INI", raising=False)
    with pytest.raises(RuntimeError, match="MODELREG_INI"):
        create_app()
    monkeypatch.setenv("MODELREG_INI", "/nonexistent/production.ini")
    with pytest.raises(RuntimeError, match="no such file"):
        create_app()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_asgi_factory_turns_off_nagle_on_the_inherited_server_socket():
    """uvicorn --workers hands each worker a socket bound with protocol 0, on which asyncio
    leaves Nagle's algorithm on (every keep-alive response then waits ~40 ms for a delayed
    ACK); the factory sets TCP_NODELAY on it, and the connections it accepts inherit it.
    Connected sockets (the database's, a client's) are left alone."""
    import socket

    from modelreg.asgi import nodelay_on_server_sockets

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_listener:
        server.bind(("127.0.0.1", 0))  # bound as uvicorn's supervisor binds it: proto 0
        other_listener.bind(("127.0.0.1", 0))
        other_listener.listen()
        with socket.create_connection(other_listener.getsockname()) as client:
            peer, _ = other_listener.accept()
            with peer:
                open_fds = len(list(Path("/proc/self/fd").iterdir()))
                assert nodelay_on_server_sockets() >= 2
                assert len(list(Path("/proc/self/fd").iterdir())) == open_fds  # none leaked
                assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        server.listen()
        with socket.create_connection(server.getsockname()):
            accepted, _ = server.accept()
            with accepted:
                assert accepted.proto == 0
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def _scrape(port: int) -> str:
    client = Client(port)
    try:
        response = client.call("GET", "/metrics")
        assert response.status == 200, response.body  # type: ignore[attr-defined]
        return response.body.decode()  # type: ignore[attr-defined]
    finally:
        client.close()


#: The route the metrics test counts: it depends on nothing (no database, no storage), and
#: nothing else requests it (LiveServer's start-up polls ``/healthz``, and a poll that timed
#: out may still be counted late).
COUNTED = "/api/v1/openapi.json"


def _counted(text: str) -> float:
    line = 'modelreg_http_requests_total{method="GET",route="openapi",status="200"} '
    return sum(float(row[len(line):]) for row in text.splitlines() if row.startswith(line))


def test_metrics_add_up_across_gunicorn_workers(server_settings, tmp_path):
    """prometheus_client's multiprocess mode: each worker writes its counts to the shared
    directory, and a scrape of any worker reports the sum.  gunicorn runs with the sample
    config of the docs, whose hooks prepare the directory.

    The counted route depends on nothing (see :data:`COUNTED`): an earlier version counted
    ``/readyz``, whose answer depends on the database (503 when it refuses a connection, as
    MariaDB does with ``Too many connections`` when a loaded full run holds them all), so
    it could fail for a reason that is not this test's.  Every answer must still be 200, and
    a failure carries the end of the server's log.
    """
    directory = tmp_path / "prometheus"  # made by the config's on_starting hook
    settings = {**server_settings, "modelreg.metrics.enabled": "true",
                "modelreg.metrics.public": "true"}
    clients, each = 8, 5
    config = Path(__file__).resolve().parent.parent / "docs" / "gunicorn.conf.py"
    with LiveServer(settings, threads=2, server="gunicorn", workers=2,
                    environ={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
                    arguments=["-c", str(config)]) as live:
        before = _counted(_scrape(live.port))
        answers: list[tuple[int, bytes]] = []

        def hammer() -> None:
            for _ in range(each):
                client = Client(live.port)  # a new connection each time: any worker
                try:
                    response = client.call("GET", COUNTED)
                    answers.append((response.status, response.body))  # type: ignore[attr-defined]
                except Exception as exc:  # reported below, with the server's log
                    answers.append((0, repr(exc).encode()))
                finally:
                    client.close()

        threads = [threading.Thread(target=hammer) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert len(answers) == clients * each
        assert [(status, body[:300]) for status, body in answers if status != 200] == []
        for _ in range(4):  # whichever worker answers the scrape
            assert _counted(_scrape(live.port)) - before == clients * each
    workers = {path.stem.rsplit("_", 1)[1] for path in directory.glob("counter_*.db")}
    assert len(workers) == 2, workers


# ------------------------------------------------------------- modelreg's Waitress


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("ini", ["production.ini", "development.ini"])
def test_the_shipped_ini_files_serve_with_modelregs_waitress(ini):
    """Their [server:main] is modelreg's Waitress runner, with the framing guard."""
    import configparser

    parser = configparser.RawConfigParser()
    parser.read(ROOT / ini, encoding="utf-8")
    assert parser.get("server:main", "use") == "egg:modelreg#waitress"


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.1:0 127.0.0.1:0"])
def test_the_framing_guard_is_on_for_waitress_3_0(monkeypatch, listen):
    """On every listening socket, one or several."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.server import BaseWSGIServer

    from modelreg import servers

    monkeypatch.setattr(servers, "waitress_version", lambda: "3.0.2")
    socket_map: dict[int, Any] = {}
    server = servers.create_server(_hello, listen=listen, threads=1, map=socket_map)
    listeners = [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]
    try:
        assert len(listeners) == len(listen.split())
        for listener in listeners:
            channel = listener.channel_class
            assert issubclass(channel, HTTPChannel) and channel is not HTTPChannel
            assert issubclass(channel.parser_class, HTTPRequestParser)
            assert channel.parser_class.__name__ == "FramingGuardParser"
    finally:
        for listener in listeners:
            listener.close()
        server.task_dispatcher.shutdown()


@pytest.mark.parametrize("version", ["3.1.0", "2.1.4", "4.0"])
def test_the_framing_guard_stays_out_of_other_waitress_releases(monkeypatch, caplog, version):
    """The parser subclass is written against Waitress 3.0.x's internals: on another release
    the stock Waitress serves, and the log says the guard is off and what to do."""
    from waitress.channel import HTTPChannel

    from modelreg import servers

    monkeypatch.setattr(servers, "waitress_version", lambda: version)
    with caplog.at_level("WARNING", logger="modelreg.servers"):
        server = servers.create_server(_hello, listen="127.0.0.1:0", threads=1)
    try:
        assert server.channel_class is HTTPChannel
    finally:
        server.close()
        server.task_dispatcher.shutdown()
    assert any(f"Waitress {version} is not 3.0.x" in r.getMessage()
               and "deploy/nginx/modelreg.conf" in r.getMessage()
               and "read turns (reads_at_once) are off" in r.getMessage()
               for r in caplog.records)


class _ListeningFromTheEnvironment(LiveServer):
    """A server whose ini names one port and whose MODELREG_LISTEN names another (the one it
    is waited for on)."""

    def ini_text(self) -> str:
        self.ini_port = free_port()
        self.environ["MODELREG_LISTEN"] = f"127.0.0.1:{self.port}"
        return super().ini_text().replace(f"listen = 127.0.0.1:{self.port}",
                                          f"listen = 127.0.0.1:{self.ini_port}")


@pytest.mark.server
def test_modelreg_listen_replaces_the_ini_listen_address(server_settings):
    """What `python3 dev.py serve --port` and the container image rely on."""
    with _ListeningFromTheEnvironment(server_settings, threads=2) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.ini_port), timeout=2).close()


def test_dev_py_serve_says_when_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, str(ROOT / "dev.py"), "serve", "--port",
                               str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {port} is taken" in done.stderr
    assert f"python3 dev.py serve --port {port + 1}" in done.stderr
    usage = subprocess.run([sys.executable, str(ROOT / "dev.py"), "serve", "--port", "x"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 1 and "usage: python3 dev.py serve [--port N]" in usage.stderr


# ----------------------------------------------------------------------------- cpus


@pytest.mark.parametrize(("text", "cpus"), [
    ("0", {0}), (" 1 ", {1}), ("0,2-3", {0, 2, 3}), ("1-1", {1}), ("", None), ("  ", None),
])
def test_cpus_are_read_in_tasksets_list_syntax(text, cpus):
    from modelreg.servers import parse_cpus

    assert parse_cpus(text) == (None if cpus is None else frozenset(cpus))


@pytest.mark.parametrize("text", ["a", "3-1", "1-", "-1", "0;1", "0,,1"])
def test_cpus_that_are_not_a_list_are_refused_at_start(text):
    from modelreg.servers import parse_cpus

    with pytest.raises(ValueError, match="a list of CPU numbers and ranges"):
        parse_cpus(text)


def test_cpus_the_process_may_not_use_are_refused_at_start():
    from modelreg.servers import CpuPin

    with pytest.raises(ValueError, match="CPU 4095 is not one this process may run on"):
        CpuPin(frozenset({4095}))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning shows only where the process may run on two CPUs or more")
def test_cpus_keep_waitress_threads_on_them_and_let_uploads_run_anywhere(monkeypatch):
    """A request without a spooled body runs on the pinned CPU, an upload on every CPU the
    process may use; Waitress's loop stays pinned, the test's thread never was."""
    from modelreg import servers

    monkeypatch.setattr(servers, "waitress_version", lambda: "3.0.2")
    allowed = os.sched_getaffinity(0)
    first = min(allowed)
    seen: list[tuple[str, set[int]]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        seen.append((environ["REQUEST_METHOD"], os.sched_getaffinity(0)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [hashlib.sha256(body).hexdigest().encode()]

    server = serve_in_thread(app, listen="127.0.0.1:0", threads=2, cpus=str(first),
                             inbuf_overflow=4096)
    thread = server.modelreg_thread
    try:
        port = server.socket.getsockname()[1]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for method, body in (("GET", None), ("PUT", b"x" * 100_000), ("POST", b"{}"),
                             ("GET", None)):
            connection.request(method, "/", body=body)
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == hashlib.sha256(body or b"").hexdigest().encode()
        connection.close()
        assert seen == [("GET", {first}), ("PUT", allowed), ("POST", {first}),
                        ("GET", {first})]
        loop = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
        assert f"Cpus_allowed_list:\t{first}\n" in loop
        assert os.sched_getaffinity(0) == allowed
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        thread.join(10)


def test_modelreg_cpus_replaces_the_ini_cpus(monkeypatch):
    """One ini for several units, each on its own CPU."""
    import waitress

    from modelreg import servers

    served: dict[str, Any] = {}
    monkeypatch.setattr(waitress, "serve", lambda app, **settings: served.update(settings))
    monkeypatch.setenv("MODELREG_CPUS", "1")
    servers.serve_paste(_hello, {}, listen="127.0.0.1:0", cpus="0")
    assert served["cpus"] == "1"
    monkeypatch.delenv("MODELREG_CPUS")
    served.clear()
    servers.serve_paste(_hello, {}, listen="127.0.0.1:0", cpus="0")
    assert served["cpus"] == "0"


@pytest.mark.server
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning shows only where the process may run on two CPUs or more")
def test_pserve_runs_waitress_on_the_cpus_of_its_ini(server_settings):
    """Through PasteDeploy and `egg:modelreg#waitress`, as `pserve production.ini` runs."""
    first = min(os.sched_getaffinity(0))
    with LiveServer(server_settings, threads=3, server_settings={"cpus": str(first)}) as live:
        connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
        pid = live.process.pid
        lists = [Path(f"/proc/{pid}/task/{tid}/status").read_text().split(
                     "Cpus_allowed_list:\t")[1].split("\n")[0]
                 for tid in sorted(os.listdir(f"/proc/{pid}/task"))]
        main = Path(f"/proc/{pid}/status").read_text()
    assert f"Cpus_allowed_list:\t{first}\n" in main  # Waitress's loop
    assert lists.count(str(first)) >= 1 + 3  # the loop and its three request threads
