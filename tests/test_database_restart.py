"""PostgreSQL restarted under load: in-flight requests fail cleanly, the next ones succeed.

The test runs a private PostgreSQL instance (initdb and pg_ctl into a temporary directory, a
free port, trust authentication, its socket in that directory), never the shared server
other tests use.  A Waitress process serves the registry on it while writers create versions
and move an alias; the instance is restarted (``pg_ctl restart -m fast``) in the middle.
Every answer must be a success or a JSON 503, nothing may hang, nothing may be half-written
(gapless version numbers, one audit and one outbox event per change, an unbroken alias
history), and requests after the restart must succeed.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelreg.migrations import upgrade
from modelreg.testing import CORE_PLUGINS, make_plugin_manager, unavailable
from modelreg.testing.server import LiveServer, free_port

pytestmark = pytest.mark.server

API = "/api/v1"
MODEL = f"{API}/models/resilient"
WRITERS = 6
#: No request may take longer than this, however the database behaves.
REQUEST_TIMEOUT = 30.0
PG_TIMEOUT = 60


def _postgresql_bin() -> Path | None:
    """The directory of the newest PostgreSQL server binaries installed, if any."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


class PrivatePostgreSQL:
    """A throw-away PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port.

    As root, the server runs as the ``postgres`` system user (PostgreSQL refuses root).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.directory = Path(tempfile.mkdtemp(prefix="modelreg-pg-"))
        self.data = self.directory / "data"
        self.sockets = self.directory / "sockets"
        self.log = self.directory / "postgresql.log"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            self.sockets.mkdir()
            for path in (self.directory, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        else:
            self.sockets.mkdir()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/modelreg"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / tool), *args], user=self.user, capture_output=True, text=True,
            timeout=PG_TIMEOUT, check=False, cwd=self.directory)

    def _checked(self, tool: str, *args: str) -> None:
        done = self.run(tool, *args)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}\n{log}")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=50")
        self._checked("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w",
                      "-t", str(PG_TIMEOUT), "-o", options, *extra)

    def start(self) -> None:
        self._checked("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync")
        self._pg_ctl("start")
        admin = sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql("CREATE DATABASE modelreg")
        finally:
            admin.dispose()
        upgrade({"sqlalchemy.url": self.url}, make_plugin_manager(CORE_PLUGINS).hook)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def destroy(self) -> None:
        """Stop the server (immediately) and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            done = self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
            if done.returncode != 0 and (self.data / "postmaster.pid").exists():
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_postgresql() -> Iterator[PrivatePostgreSQL]:
    bindir = _postgresql_bin()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    instance = PrivatePostgreSQL(bindir)
    try:
        instance.start()
        yield instance
    finally:
        instance.destroy()


class Client:
    """A keep-alive connection that records every answer as ``(status, body)``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None
             ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        headers = {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        text = response.read()
        parsed = json.loads(text) if text else None
        return response.status, parsed, dict(response.getheaders())

    def close(self) -> None:
        self.conn.close()

    def ok(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        status, parsed, _ = self.call(method, path, body, raw)
        assert status in (200, 201), f"{method} {path}: {status} {parsed}"
        return parsed


def _ready_version(client: Client) -> int:
    number = client.ok("POST", f"{MODEL}/versions", {})["number"]
    client.ok("PUT", f"{MODEL}/versions/{number}/files/model.bin", raw=b"weights")
    status, version, _ = client.call("POST", f"{MODEL}/versions/{number}/finalize")
    assert status in (200, 202), version  # 202: a scanner is installed
    deadline = time.monotonic() + 60
    while version["status"] == "validating" and time.monotonic() < deadline:
        time.sleep(0.1)  # the embedded worker scans it
        version = client.ok("GET", f"{MODEL}/versions/{number}")
    assert version["status"] == "ready", version
    return number


def test_postgresql_restart_under_load(private_postgresql, tmp_path):
    settings = {
        "sqlalchemy.url": private_postgresql.url,
        "sqlalchemy.pool_size": "8",
        "sqlalchemy.max_overflow": "2",
        "sqlalchemy.pool_pre_ping": "true",
        "sqlalchemy.pool_timeout": "10",
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "write",
        "modelreg.storage.local.path": str(tmp_path / "blobs"),
        # as in development.ini: versions finalized while a scanner is installed get scanned
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
    }
    with LiveServer(settings, threads=8) as server:
        setup = Client(server.port)
        setup.ok("POST", f"{API}/models", {"name": "resilient"})
        ready = [_ready_version(setup), _ready_version(setup)]
        setup.close()

        answers: list[tuple[str, int, Any, dict[str, str]]] = []
        created: list[int] = []
        lock = threading.Lock()
        stop = threading.Event()
        broken: list[BaseException] = []

        def writer(index: int) -> None:
            client = Client(server.port)
            turn = 0
            try:
                while not stop.is_set():
                    turn += 1
                    if turn % 2:
                        what = "create"
                        status, body, headers = client.call("POST", f"{MODEL}/versions", {})
                    else:
                        what = "alias"
                        target = ready[(index + turn) % len(ready)]
                        status, body, headers = client.call(
                            "PUT", f"{MODEL}/aliases/champion", {"version": target})
                    with lock:
                        answers.append((what, status, body, headers))
                        if what == "create" and status == 201:
                            created.append(body["number"])
            except BaseException as exc:  # a hang (timeout) or a dropped connection
                broken.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        with lock:
            before_restart = len(answers)
        private_postgresql.restart()
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT * 2)
        assert not any(thread.is_alive() for thread in threads), "a request hung"
        assert not broken, f"requests failed without an answer: {broken!r}"

        # Every answer: a success or a JSON 503 the client may retry.
        assert before_restart > 0 and len(answers) > before_restart
        wrong = [(what, status, body) for what, status, body, _ in answers
                 if status not in (200, 201, 503)]
        assert not wrong, wrong[:5]
        refused = [(body, headers) for _, status, body, headers in answers if status == 503]
        assert refused, "the restart went unnoticed: no request was in flight"
        for body, headers in refused:
            assert set(body) == {"error"} and body["error"]["code"] in (
                "database_unavailable", "unavailable"), body
            assert headers.get("Retry-After") == "1"

        # After the restart, requests succeed again, at once.
        after = Client(server.port)
        for _ in range(5):
            created.append(after.ok("POST", f"{MODEL}/versions", {})["number"])
            after.ok("PUT", f"{MODEL}/aliases/champion", {"version": ready[0]})
        assert after.ok("GET", "/readyz")["status"] == "ok"
        after.close()

    # Nothing half-written.
    engine = sa.create_engine(private_postgresql.url)
    try:
        with engine.connect() as conn:
            check_consistency(conn, created)
    finally:
        engine.dispose()


def check_consistency(conn: sa.Connection, created: list[int]) -> None:
    """Versions gapless, each with its audit event, one outbox event per audit event, and an
    unbroken alias history ending at the alias."""
    next_version = conn.scalar(sa.text("SELECT next_version FROM models WHERE name = 'resilient'"))
    numbers = list(conn.scalars(sa.text(
        "SELECT v.number FROM versions v JOIN models m ON m.id = v.model_id "
        "WHERE m.name = 'resilient' ORDER BY v.number")))
    assert numbers == list(range(1, next_version)), "version numbers have gaps"
    assert len(set(created)) == len(created), "a number was handed out twice"
    assert set(created) <= set(numbers), "a version answered 201 is missing"
    audited = set(conn.scalars(sa.text(
        "SELECT target FROM audit_events WHERE action = 'version.created'")))
    assert audited == {f"resilient/{n}" for n in numbers}, "versions and audit events differ"
    audit_count = conn.scalar(sa.text("SELECT count(*) FROM audit_events"))
    outbox_count = conn.scalar(sa.text("SELECT count(*) FROM outbox"))
    assert audit_count == outbox_count, "a change without its outbox event"
    history = conn.execute(sa.text(
        "SELECT from_version, to_version FROM alias_history WHERE alias = 'champion' "
        "ORDER BY id")).all()
    moves = conn.scalar(sa.text(
        "SELECT count(*) FROM audit_events WHERE action IN ('alias.set', 'alias.moved')"))
    assert len(history) == moves, "alias moves and their audit events differ"
    previous = None
    for from_version, to_version in history:
        assert from_version == previous, history
        previous = to_version
    current = conn.scalar(sa.text(
        "SELECT v.number FROM aliases a JOIN versions v ON v.id = a.version_id "
        "WHERE a.name = 'champion'"))
    assert current == previous, "the alias is not where its history ends"


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_an_unreachable_database_answers_json_503(scheme, tmp_path):
    """Reads and writes against a database that is down: 503 with Retry-After, not 500."""
    import webtest

    from modelreg.testing import make_app

    url = f"{scheme}://nobody@127.0.0.1:{free_port()}/nothing"
    app = make_app({"sqlalchemy.url": url, "modelreg.auth.anonymous": "write",
                    "modelreg.storage.local.path": str(tmp_path)})
    try:
        test = webtest.TestApp(app)
        for response in (test.get(f"{API}/models", status=503),
                         test.post_json(f"{API}/models", {"name": "m"}, status=503)):
            assert response.json["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
        # The OpenAPI document says so (it is served without the database).
        paths = test.get(f"{API}/openapi.json").json["paths"]
        assert "503" in paths[f"{API}/models"]["post"]["responses"]
    finally:
        app.registry["db_engine"].dispose()


@pytest.mark.parametrize("ping_after", [0.0, 3600.0], ids=["pinged", "retried"])
def test_a_restart_between_requests_fails_no_request(private_postgresql, tmp_path, monkeypatch,
                                                     ping_after):
    """The database restarts between two requests: the second one succeeds, whether its
    pooled connection is pinged first (it lay idle long enough) or not (used a moment ago:
    its first statement finds the connection lost, and the request is run again)."""
    import webtest

    from modelreg import db
    from modelreg.testing import make_app

    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", ping_after)
    app = make_app({"sqlalchemy.url": private_postgresql.url, "retry.attempts": "3",
                    "modelreg.auth.anonymous": "write",
                    "modelreg.storage.local.path": str(tmp_path / "blobs")})
    engine = app.registry["db_engine"]
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping",
                        lambda conn: pings.append(conn) or real_ping(conn))
    try:
        test = webtest.TestApp(app)
        test.post_json(f"{API}/models", {"name": "m"}, status=201)
        test.post_json(f"{API}/models/m/versions", {}, status=201)
        private_postgresql.restart()
        assert test.post_json(f"{API}/models/m/versions", {}, status=201).json["number"] == 2
        assert test.get(f"{API}/models/m/versions/2", status=200).json["number"] == 2
        assert bool(pings) == (ping_after == 0.0)
    finally:
        engine.dispose()
