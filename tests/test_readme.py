"""The README's promises, run as a reader would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelreg.testing import clear_database
from modelreg.testing.server import LiveServer, free_port
from modelreg_client import Client

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.server


def tour_block() -> str:
    """The shell block of "A five-minute tour", exactly as a reader would paste it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A five-minute tour", 1)[1]
    return re.search(r"```console\n(.*?)```", section, re.S).group(1)


def test_the_tour_pasted_as_one_block_runs_without_an_error(modelreg_settings: dict[str, Any],
                                                            modelreg_database, tmp_path):
    settings = {key: str(value) for key, value in modelreg_settings.items()
                if isinstance(value, str | int | float | bool)}
    settings.update({"modelreg.storage.local.path": str(tmp_path / "blobs"),
                     # as development.ini: scans run in the app's own worker thread
                     "modelreg.worker.embedded": "true",
                     "modelreg.worker.poll_interval": "0.2"})
    work = tmp_path / "reader"
    work.mkdir()
    try:
        with LiveServer(settings, threads=4) as server:
            block = tour_block().replace("localhost:6543", f"127.0.0.1:{server.port}")
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=work,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert '"error":{' not in done.stdout.replace(" ", ""), done.stdout
            with urllib.request.urlopen(
                    f"{server.url}/api/v1/models/fraud-detector/versions/champion") as answer:
                version = json.load(answer)
            assert (version["number"], version["status"]) == (1, "ready")
        assert (work / "config.json").read_text() == '{"hidden": 64}\n'
    finally:
        engine = sa.create_engine(modelreg_database.url)
        clear_database(engine)
        engine.dispose()


def test_a_push_under_pserve_production_ini_alone_becomes_ready(tmp_path):
    """README, "Running in production": the database migrated, a token made, `pserve
    production.ini` and nothing else, and a pushed version becomes ready (its scan runs in the
    app's own worker thread)."""
    bin_dir = Path(sys.executable).parent
    shutil.copy(ROOT / "production.ini", tmp_path / "production.ini")  # %(here)s: tmp_path
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("MODELREG_")}  # no test-suite defaults: the ini alone
    env.update(MODELREG_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.sqlite'}",
               MODELREG_LISTEN=f"127.0.0.1:{port}")

    def modelreg(*args: str) -> str:
        done = subprocess.run([bin_dir / "modelreg", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    modelreg("db", "upgrade", "production.ini")
    modelreg("users", "add", "ci", "production.ini", "--admin")
    token = modelreg("tokens", "create", "ci", "production.ini", "--scope", "admin").split()[-1]
    assert token.startswith("mr_")
    log = open(tmp_path / "pserve.log", "wb")
    server = subprocess.Popen([bin_dir / "pserve", "production.ini"], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "pserve.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "pserve.log").read_text()
                time.sleep(0.2)
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text('{"layers": 2}')
        (model / "weights.safetensors").write_bytes(b"not really weights")
        with Client(f"http://127.0.0.1:{port}", token, state_dir=tmp_path / "state") as client:
            pushed = client.push(model, "fraud-detector", wait=60)
        assert pushed.version.status == "ready", pushed.version
    finally:
        server.terminate()
        server.wait(30)
        log.close()
