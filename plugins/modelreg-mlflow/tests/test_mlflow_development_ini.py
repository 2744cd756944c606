"""The stock MLflow client's whole session against ``development.ini`` as shipped (SQLite,
every installed plugin from its entry point, the scanner with its embedded worker), only
its files moved to a temporary folder: what a team sees right after the README's first
command."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest
from mlflow_helpers import MODELREG, Server, mlflow_installed

from modelreg.testing import unavailable
from modelreg.testing.server import LiveServer

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[3]


def test_the_session_passes_against_development_ini(tmp_path: Path) -> None:
    if not mlflow_installed():
        unavailable("the MLflow client is not installed (mlflow-skinny, the test extra)")
    parser = configparser.ConfigParser(defaults={"here": str(tmp_path)})
    parser.read(ROOT / "development.ini", encoding="utf-8")
    settings = {k: v for k, v in parser.items("app:main") if k not in ("here", "use")}
    (tmp_path / "var").mkdir()
    ini = tmp_path / "upgrade.ini"
    ini.write_text("[app:main]\nuse = egg:modelreg\n"
                   + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    for command in (("db", "upgrade"), ("users", "add", "admin", "--admin")):
        done = subprocess.run([MODELREG, *command, str(ini)], capture_output=True,  # noqa: S603
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    made = subprocess.run([MODELREG, "tokens", "create", "admin", str(ini), "--scope",  # noqa: S603
                           "admin"], capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, made.stderr
    with LiveServer(settings, threads=8) as live:
        server = Server(live, {"admin": made.stdout.strip().split()[-1]})
        seen = server.client("session.py", args=[str(tmp_path / "work")], env={
            "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true"})
    # logged, registered three ways (each PENDING_REGISTRATION while the embedded worker
    # scans it, READY after), promoted, downloaded, loaded
    assert set(seen["statuses"]) <= {"PENDING_REGISTRATION", "READY"}
    assert len(seen["statuses"]) == 3
    assert seen["champion"] == "3"
    downloads = seen["downloads"]
    assert "MLmodel" in downloads["champion"]
    assert downloads["champion"] == downloads["v1"] == downloads["logged"]
    assert seen["data_download"]["big.bin"] == seen["big_sha256"]
    assert seen["prediction"] == [2, 4, 6]
