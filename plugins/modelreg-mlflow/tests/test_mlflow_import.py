"""``modelreg import mlflow`` against a real MLflow server (the full ``mlflow`` package in
an environment of its own, cached in ``.venv/mlflow-server``; ``--workers 1`` on loopback),
seeded through the MLflow client: every model, version (numbers and gaps kept), tag, alias,
description and file arrives; a rerun copies nothing twice and moves aliases; an interrupted
import resumes; ``--dry-run`` changes nothing; an existing model is merged only with
``--merge``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow_helpers import MODELREG, Server

from modelreg.testing import in_ci, unavailable

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[3]
#: The MLflow server's own environment, kept between runs (CI starts without it).
SERVER_VENV = ROOT / ".venv" / "mlflow-server"
#: The full mlflow package (the server); 3.17.2, the newest whose dependencies the package
#: index holds in full (mlflow 3.18.0 needs mlflow-tracing 3.18.0).
MLFLOW = "mlflow==3.17.2"
MARKER = "mlflow.import.source"


def mlflow_server_environment() -> Path:
    """``.venv/mlflow-server/bin/mlflow``, installing it on first use (timed)."""
    binary = SERVER_VENV / "bin" / "mlflow"
    stamp = SERVER_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == MLFLOW and binary.exists():
        return binary
    started = time.monotonic()
    venv.create(SERVER_VENV, with_pip=True, clear=True)
    done = subprocess.run([str(SERVER_VENV / "bin" / "pip"), "install", "--quiet", MLFLOW],  # noqa: S603
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        if in_ci():
            pytest.fail(f"installing {MLFLOW} failed: {done.stderr[-2000:]}")
        unavailable(f"installing {MLFLOW} failed")
    stamp.write_text(MLFLOW)
    print(f"installed {MLFLOW} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback, proxying artifacts; its URL."""
    binary = mlflow_server_environment()
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (home / "server.log").open("wb")
    scratch = home / "tmp"  # its temporary files (a lock per store it opens) stay in here
    scratch.mkdir()
    process = subprocess.Popen(  # noqa: S603
        [str(binary), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=home,
        env={**os.environ, "TMPDIR": str(scratch)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start:\n"
                                   + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def seed(server: Server, source: str, stage: str) -> None:
    server.client("seed.py", None, args=[stage], env={"MLFLOW_TRACKING_URI": source,
                                                      "MLFLOW_REGISTRY_URI": source})


def importer(server: Server, source: str, *args: str, ok: bool = True
             ) -> dict[str, Any]:
    environ = {**os.environ, "MODELREG_URL": server.url,
               "MODELREG_TOKEN": server.tokens["admin"]}
    done = subprocess.run([MODELREG, "import", "mlflow", "--from", source, *args],  # noqa: S603
                          capture_output=True, text=True, timeout=600, env=environ)
    assert done.returncode == (0 if ok else 1), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class Api:
    """modelreg's REST API as the admin."""

    def __init__(self, server: Server) -> None:
        self.base = server.url + "/api/v1"
        self.headers = {"Authorization": f"Bearer {server.tokens['admin']}"}

    def get(self, path: str, status: int = 200) -> Any:
        response = requests.get(self.base + path, headers=self.headers, timeout=30)
        assert response.status_code == status, response.text
        return response.json() if status == 200 else None


def mlflow_digests(source: str, name: str, number: int) -> dict[str, str]:
    """sha256 of each file of an MLflow model version, read from MLflow's proxy."""
    uri = requests.get(f"{source}/api/2.0/mlflow/model-versions/get-download-uri",
                       params={"name": name, "version": str(number)},
                       timeout=30).json()["artifact_uri"]
    if uri.startswith("runs:/"):  # what MLflow answers for a version made from runs:/
        run_id, _, rest = uri[len("runs:/"):].partition("/")
        uri = requests.get(f"{source}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                           timeout=30).json()["run"]["info"]["artifact_uri"] + "/" + rest
    root = uri.split(":", 1)[1].strip("/")
    found: dict[str, str] = {}
    pending = [""]
    while pending:
        inner = pending.pop()
        listing = requests.get(f"{source}/api/2.0/mlflow-artifacts/artifacts",
                               params={"path": f"{root}/{inner}".rstrip("/")},
                               timeout=30).json().get("files", [])
        for entry in listing:
            relative = f"{inner}/{entry['path']}".lstrip("/")
            if entry["is_dir"]:
                pending.append(relative)
            else:
                data = requests.get(f"{source}/api/2.0/mlflow-artifacts/artifacts/"
                                    f"{root}/{relative}", timeout=60).content
                found[relative] = hashlib.sha256(data).hexdigest()
    return found


def modelreg_digests(api: Api, name: str, number: int) -> dict[str, str]:
    return {f["path"]: f["sha256"]
            for f in api.get(f"/models/{name}/versions/{number}/files")["files"]}


# The importer talks HTTP to both servers: one backend under modelreg is enough here
# (test_mlflow_client.py runs the plugin on every backend).
@pytest.mark.parametrize("mlflow_server", ["sqlite"], indirect=True)
def test_import_copies_resumes_and_reruns(mlflow_server: Server, mlflow_source: str,
                                          tmp_path: Path) -> None:
    api = Api(mlflow_server)
    seed(mlflow_server, mlflow_source, "first")
    # A model of the same name that modelreg holds already: merged only with --merge.
    requests.post(api.base + "/models", json={"name": "imp-b"}, headers=api.headers,
                  timeout=30).raise_for_status()

    dry = importer(mlflow_server, mlflow_source, "--models", "imp-*", "--dry-run")
    assert (dry["models"], dry["versions"]) == (1, 2)
    assert dry["bytes"] == 3 * 1024 * 1024 + 2 + 2 * 1024 * 1024 + 5
    assert [s.split(":")[0] for s in dry["skipped"]] == ["imp-b"]
    api.get("/models/imp-a", status=404)

    first = importer(mlflow_server, mlflow_source, "--models", "imp-*")
    assert (first["models"], first["versions"], first["failed"]) == (1, 2, [])
    assert first["bytes"] == dry["bytes"]
    api.get("/models/other-c", status=404)
    model = api.get("/models/imp-a")
    assert model["description"] == "model a"
    assert model["tags"] == {"team": "risk", MARKER: mlflow_source}
    assert model["aliases"] == {"prod": 3, "old": 1}
    versions = {v["number"]: v for v in api.get("/models/imp-a/versions")["versions"]}
    assert sorted(versions) == [1, 3]  # MLflow's gap kept
    assert {n: (v["status"], v["description"], v["tags"]) for n, v in versions.items()} == {
        1: ("ready", "first", {"quality": "ok"}), 3: ("ready", "third", {"quality": "best"})}
    for number in (1, 3):
        assert modelreg_digests(api, "imp-a", number) == mlflow_digests(mlflow_source,
                                                                         "imp-a", number)

    # What cannot be mapped is reported, and the exit status says so.
    refused = importer(mlflow_server, mlflow_source, "--models", "odd*", ok=False)
    assert refused["models"] == 0
    assert [f.split(":")[0] for f in refused["failed"]] == ["odd name"]

    merged = importer(mlflow_server, mlflow_source, "--models", "imp-*", "--merge")
    assert (merged["models"], merged["versions"], merged["skipped"]) == (0, 1, [])
    assert api.get("/models/imp-b")["description"] == "model b"
    assert modelreg_digests(api, "imp-b", 1) == mlflow_digests(mlflow_source, "imp-b", 1)

    again = importer(mlflow_server, mlflow_source, "--models", "imp-*", "--merge")
    assert (again["versions"], again["bytes"], again["aliases"]) == (0, 0, 0)

    # MLflow moves on: an alias moves, a version and a model with a 24 MiB file appear.
    seed(mlflow_server, mlflow_source, "more")
    # The import is killed mid-file, so its temporary directory is never removed: it goes
    # under this test's own directory, removed below.
    scratch = tmp_path / "killed-import"
    scratch.mkdir()
    environ = {**os.environ, "MODELREG_URL": mlflow_server.url,
               "MODELREG_TOKEN": mlflow_server.tokens["admin"], "TMPDIR": str(scratch)}
    process = subprocess.Popen(  # noqa: S603
        [MODELREG, "import", "mlflow", "--from", mlflow_source, "--models", "imp-*"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ)
    interrupted = False
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        response = requests.get(api.base + "/models/imp-big/versions/1", headers=api.headers,
                                timeout=30)
        if response.status_code == 200 and response.json()["status"] == "draft":
            process.send_signal(signal.SIGKILL)
            interrupted = True
            break
        time.sleep(0.02)
    process.communicate(timeout=60)
    shutil.rmtree(scratch)
    assert interrupted, "the import ended before it could be interrupted"
    assert api.get("/models/imp-big/versions/1")["status"] == "draft"

    resumed = importer(mlflow_server, mlflow_source, "--models", "imp-*")
    assert resumed["failed"] == []
    assert api.get("/models/imp-big/versions/1")["status"] == "ready"
    assert modelreg_digests(api, "imp-big", 1) == mlflow_digests(mlflow_source, "imp-big", 1)
    assert sorted(v["number"] for v in api.get("/models/imp-a/versions")["versions"]) == \
        [1, 3, 4]
    assert api.get("/models/imp-a")["aliases"] == {"prod": 1, "old": 1}
    final = importer(mlflow_server, mlflow_source, "--models", "imp-*")
    assert (final["versions"], final["bytes"], final["aliases"]) == (0, 0, 0)
