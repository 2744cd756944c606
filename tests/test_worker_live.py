"""End to end: a real server with the installed ``modelreg-scan`` plugin, and the worker.

The server is ``pserve`` (plugins from entry points, as deployed); the worker is either the
``modelreg worker <ini> --once`` command on the server's own ini file, or a
:class:`~modelreg.worker.runner.Worker` in the test's process with the real scanner and an
event recorder registered.  Files are crafted byte by byte: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.api import hookimpl
from modelreg.testing import CORE_PLUGINS, TestDatabase, clear_database, make_app
from modelreg.testing.server import LiveServer
from modelreg.worker.runner import Worker

pytest.importorskip("modelreg_scan")

M = "bert-tiny"


def os_system_pickle() -> bytes:
    """A protocol 2 pickle that would call ``os.system("echo pwned")`` if loaded."""
    argument = b"echo pwned"
    return (b"\x80\x02" + b"cos\nsystem\n" + b"X" + struct.pack("<I", len(argument))
            + argument + b"\x85R.")


def clean_safetensors() -> bytes:
    """A 2x3 F32 tensor and a 3-element bias: 8-byte header length, JSON header, data."""
    header = json.dumps({
        "weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "bias": {"dtype": "F32", "shape": [3], "data_offsets": [24, 36]},
        "__metadata__": {"format": "pt"},
    }).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<9f", *range(9))


class Api:
    """JSON over HTTP to the live server."""

    def __init__(self, server: LiveServer) -> None:
        self.base = server.url + "/api/v1"

    def call(self, method: str, path: str, body: Any = None, data: bytes | None = None,
             status: int = 200) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                code, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read()
        assert code == status, f"{method} {path}: {code} {text[:500]!r}"
        return json.loads(text) if text else None

    def upload_and_finalize(self, files: dict[str, bytes]) -> int:
        status = self.call("GET", "/models")
        if M not in {model["name"] for model in status["models"]}:
            self.call("POST", "/models", {"name": M}, status=201)
        number = self.call("POST", f"/models/{M}/versions", {}, status=201)["number"]
        for path, data in files.items():
            self.call("PUT", f"/models/{M}/versions/{number}/files/{path}", data=data,
                      status=201)
        answer = self.call("POST", f"/models/{M}/versions/{number}/finalize", status=202)
        assert answer["status"] == "validating"
        return number

    def version(self, number: int) -> dict[str, Any]:
        return self.call("GET", f"/models/{M}/versions/{number}")

    def findings(self, number: int) -> list[dict[str, Any]]:
        return self.call("GET", f"/models/{M}/versions/{number}/findings")["findings"]


@pytest.fixture(scope="module")
def database(modelreg_database: TestDatabase) -> TestDatabase:
    return modelreg_database


@pytest.fixture(scope="module")
def live(database: TestDatabase, tmp_path_factory) -> Iterator[LiveServer]:
    settings = {"sqlalchemy.url": database.url, "retry.attempts": "3",
                "modelreg.storage.local.path": str(tmp_path_factory.mktemp("live-blobs"))}
    with LiveServer(settings, threads=4) as server:
        yield server


@pytest.fixture
def api(live: LiveServer, database: TestDatabase) -> Iterator[Api]:
    yield Api(live)
    engine = database.engine()
    clear_database(engine)
    engine.dispose()


def run_worker_command(live: LiveServer) -> str:
    exe = Path(sys.executable).parent / "modelreg"
    result = subprocess.run([str(exe), "worker", str(live.directory / "server.ini"), "--once"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_pickle_that_would_run_code_is_rejected_naming_file_and_import(api, live):
    number = api.upload_and_finalize({"config.json": b"{}",
                                      "pytorch_model.bin": os_system_pickle()})
    assert api.version(number)["status"] == "validating"
    run_worker_command(live)
    done = api.version(number)
    assert done["status"] == "rejected"
    assert done["digest"] is None
    assert any("pytorch_model.bin" in p["message"] for p in done["problems"])
    found = [f for f in api.findings(number) if f["severity"] == "error"]
    assert found, api.findings(number)
    assert {f["path"] for f in found} == {"pytorch_model.bin"}
    assert any(f["details"].get("module") == "os" and f["details"].get("name") == "system"
               for f in found)
    assert any("os" in f["message"] and "system" in f["message"] for f in found)
    # a rejected version can hold no alias
    api.call("PUT", f"/models/{M}/aliases/prod", {"version": number}, status=409)


def test_a_clean_safetensors_model_becomes_ready(api, live):
    number = api.upload_and_finalize({"model.safetensors": clean_safetensors(),
                                      "config.json": b'{"hidden": 3}'})
    run_worker_command(live)
    done = api.version(number)
    assert done["status"] == "ready", done
    assert done["digest"].startswith("sha256:")
    summary = [f for f in api.findings(number) if f["code"] == "safetensors_summary"]
    assert [f["severity"] for f in summary] == ["info"]
    api.call("PUT", f"/models/{M}/aliases/prod", {"version": number}, status=201)
    assert api.version(number)["aliases"] == ["prod"]


class Recorder:
    """Records events; fails the first delivery of each ``version.finalized`` event."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.failed: set[str] = set()

    @hookimpl
    def modelreg_on_event(self, event: Any) -> None:
        if event.type == "version.finalized" and event.id not in self.failed:
            self.failed.add(event.id)
            raise RuntimeError("receiver down")
        self.events.append(event)


def test_a_scanner_that_fails_rejects_and_events_reach_on_event_in_order(
    api, live, database
):
    recorder = Recorder()
    settings = {"sqlalchemy.url": database.url, "retry.attempts": "3",
                "modelreg.storage.local.path": live.settings["modelreg.storage.local.path"]}
    # the real scanner's subprocess cannot finish in a millisecond: it fails, closed
    registry = make_app(settings, [*CORE_PLUGINS, "modelreg_scan.plugin", recorder]).registry
    crashing = Worker.from_registry(registry, {"modelreg.scan.timeout": "0.001"})
    worker = Worker.from_registry(registry)
    try:
        failing = api.upload_and_finalize({"model.safetensors": clean_safetensors()})
        crashing.run_once()
        done = api.version(failing)
        assert done["status"] == "rejected"
        assert [p["code"] for p in done["problems"]] == ["scanner_failed"]

        fine = api.upload_and_finalize({"model.safetensors": clean_safetensors()})
        worker.run_once()
        assert api.version(fine)["status"] == "ready"
        types = [e.type for e in recorder.events]
        # version.finalized failed once: it and everything after it wait for the retry
        assert "version.finalized" not in types
        assert len(recorder.failed) == 1
        engine = database.engine()
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE outbox SET next_attempt_at = NULL")
        engine.dispose()
        worker.run_once()
        types = [e.type for e in recorder.events]
        assert types == [
            "model.created",
            "version.created", "file.added", "version.validating", "version.rejected",
            "version.created", "file.added", "version.validating", "version.finalized",
        ]
        assert all(e.model == M for e in recorder.events)
        assert len({e.id for e in recorder.events}) == len(types)
        assert recorder.events[-1].id in recorder.failed  # the same id, delivered again
    finally:
        crashing.close()
        worker.close()
        registry["db_engine"].dispose()
