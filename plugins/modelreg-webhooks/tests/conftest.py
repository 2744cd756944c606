"""Fixtures of the webhook tests: databases (SQLite, PostgreSQL) migrated with the plugin's
branch, an admin caller, a real HTTP receiver on 127.0.0.1 that verifies every signature,
and the ``modelreg worker`` command on an ini file of the same database."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import webtest
from modelreg_webhooks import delivery
from modelreg_webhooks.tables import attempts, deliveries, subscriptions

from modelreg.api import hookimpl
from modelreg.testing import CORE_PLUGINS, TestDatabase, make_app, unavailable

ADMIN = "root"
SECRET = "a-test-secret-of-enough-length"  # noqa: S105 (a test value)
MODELREG = str(Path(sys.executable).parent / "modelreg")


class HeaderAuth:
    """Test-only authentication: the principal named by ``X-Test-Principal``."""

    @hookimpl
    def modelreg_authenticate(self, request: Any) -> str | None:
        """The principal of the test header, if any."""
        return request.headers.get("X-Test-Principal")


@pytest.fixture(scope="session")
def webhooks_plugins() -> tuple[Any, ...]:
    """The core, this plugin, and the test header authentication.

    The fixtures here have names of their own (not the kit's ``modelreg_*``), so that a run
    of the whole repository, where other directories override the kit's, keeps them apart.
    """
    return (*CORE_PLUGINS, "modelreg_webhooks.plugin", HeaderAuth())


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def webhooks_database(request: pytest.FixtureRequest,
                      webhooks_plugins: tuple[Any, ...]) -> Iterator[TestDatabase]:
    """A migrated database (core and webhooks branches) on each backend."""
    try:
        db = TestDatabase.create(request.param, webhooks_plugins)
    except ConnectionError as exc:
        unavailable(str(exc))
    yield db
    db.drop()


WEBHOOK_SETTINGS = {
    "modelreg.webhooks.allow_private": "true",
    "modelreg.webhooks.timeout": "5",
    "modelreg.webhooks.backoff_base": "0.1",
    "modelreg.webhooks.max_attempts": "4",
    "modelreg.worker.poll_interval": "0.2",
}


@pytest.fixture(scope="session")
def webhooks_settings(webhooks_database: TestDatabase,
                      tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The kit's settings and the plugin's: private targets allowed, fast retries."""
    return {
        "sqlalchemy.url": webhooks_database.url,
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("webhook-blobs")),
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "write",
        **WEBHOOK_SETTINGS,
    }


@pytest.fixture(scope="session")
def webhooks_app(webhooks_settings: dict[str, Any],
                 webhooks_plugins: tuple[Any, ...]) -> Iterator[Any]:
    """The WSGI app (through the kit's ``make_app``); its connections closed afterwards."""
    app = make_app(webhooks_settings, webhooks_plugins)
    yield app
    app.registry["db_engine"].dispose()


@dataclass
class Deployment:
    """The database's ini file, for the ``modelreg`` commands (the worker)."""

    directory: Path
    settings: dict[str, Any]

    def ini(self, **extra: str) -> Path:
        """Write an ini file with the settings and ``extra``; return its path."""
        values = {"use": "egg:modelreg", **self.settings, **extra}
        lines = ["[app:main]"] + [f"{k} = {str(v).replace('%', '%%')}"
                                  for k, v in values.items()]
        path = self.directory / f"registry-{len(list(self.directory.iterdir()))}.ini"
        path.write_text("\n".join(lines) + "\n")
        return path

    def worker_once(self, ini: Path | None = None) -> None:
        """``modelreg worker <ini> --once``."""
        command = [MODELREG, "worker", str(ini or self.ini()), "--once"]
        result = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                                timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]

    @contextmanager
    def worker(self, ini: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
        """``modelreg worker <ini>`` running until the block ends (then SIGTERM)."""
        command = [MODELREG, "worker", str(ini or self.ini())]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL,  # noqa: S603
                                   stderr=subprocess.DEVNULL)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="session")
def deployment(webhooks_settings: dict[str, Any],
               tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """The ini files of the session's database, and its global admin ``root``."""
    deploy = Deployment(tmp_path_factory.mktemp("webhook-ini"), webhooks_settings)
    command = [MODELREG, "users", "add", ADMIN, str(deploy.ini()), "--admin"]
    result = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return deploy


@pytest.fixture(scope="session")
def plugin_engine(webhooks_settings: dict[str, Any]) -> Iterator[sa.Engine]:
    """The plugin's own engine; its connections are closed after the session."""
    yield delivery.get_engine(webhooks_settings)
    delivery.dispose_engines()


@pytest.fixture
def admin(webhooks_app: Any, deployment: Deployment,
          plugin_engine: sa.Engine) -> Iterator[webtest.TestApp]:
    """A WebTest app acting as the global admin; the webhook tables are emptied after."""
    yield webtest.TestApp(webhooks_app, extra_environ={"REMOTE_ADDR": "127.0.0.1",
                                                        "HTTP_X_TEST_PRINCIPAL": ADMIN})
    with plugin_engine.begin() as conn:
        for table in (attempts, deliveries, subscriptions):
            conn.execute(table.delete())


@dataclass
class Received:
    """One request the receiver got."""

    event_id: str
    timestamp: str
    body: dict[str, Any]
    verified: bool
    at: float
    status: int = 200


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that checks every signature against ``secret``.

    ``script`` holds the answers ``(status, headers)`` to give, in order (then 200);
    ``hold`` (when set) is called with each request and may block, to simulate a slow
    receiver.
    """

    secret: str = SECRET
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hold: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def verify(self, event_id: str, timestamp: str, body: bytes, signature: str) -> bool:
        """The check a receiver does (see the README)."""
        expected = hmac.new(self.secret.encode(), f"{event_id}.{timestamp}.".encode() + body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, f"v1={expected}")

    def handle(self, headers: Any, body: bytes) -> tuple[int, dict[str, str]]:
        """Record a request, and the answer to give."""
        event_id = headers.get("Webhook-Id", "")
        timestamp = headers.get("Webhook-Timestamp", "")
        entry = Received(event_id, timestamp, json.loads(body),
                         self.verify(event_id, timestamp, body,
                                     headers.get("Webhook-Signature", "")),
                         time.monotonic())
        with self.lock:
            status, extra = self.script.pop(0) if self.script else (200, {})
            entry.status = status
            self.received.append(entry)
        if self.hold is not None:
            self.hold(entry)
        return status, extra

    def unique(self) -> list[Received]:
        """The requests, redeliveries (same id) dropped, in order of first arrival."""
        seen: dict[str, Received] = {}
        with self.lock:
            for entry in self.received:
                if entry.status < 300:
                    seen.setdefault(entry.event_id, entry)
        return sorted(seen.values(), key=lambda e: e.at)

    def wait(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``condition()`` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; received {self.received}"
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running :class:`Receiver`; stopped (thread joined) after the test."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, extra = state.handle(self.headers, body)
            try:
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the sender went away (a killed worker)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False  # server_close() joins the handler threads
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        state.hold = None
        server.shutdown()
        server.server_close()
        thread.join(10)
