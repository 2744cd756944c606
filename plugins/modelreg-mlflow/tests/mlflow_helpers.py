"""Helpers of the MLflow plugin's tests (a module of its own name: every plugin's tests have
a ``conftest``): the live server with its principals' tokens, a runner of MLflow client
scripts in subprocesses (the client reads its settings from the environment at import),
the backends to run on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg.testing import BACKENDS, CORE_PLUGINS
from modelreg.testing.server import LiveServer

HERE = Path(__file__).parent
CLIENTS = HERE / "clients"
MODELREG = str(Path(sys.executable).parent / "modelreg")
#: The single-request limit of the test server: files above it need ``mpu``.
MAX_PUT = 1024 * 1024
PLUGINS = (*CORE_PLUGINS, "modelreg_mlflow.plugin")


def mlflow_installed() -> bool:
    """Whether the MLflow client (``mlflow-skinny``, the core's test extra) is installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Server:
    """The live server with the tokens of its principals."""

    live: LiveServer
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        """The base URL (MLflow's tracking URI)."""
        return self.live.url

    def cli(self, *args: str) -> str:
        """Run ``modelreg ARGS… server.ini``; its standard output."""
        assert self.live.directory is not None
        done = subprocess.run([MODELREG, *args, str(self.live.directory / "server.ini")],  # noqa: S603
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def client(self, script: str, principal: str | None = "admin", *,
               env: dict[str, str] | None = None, args: list[str] | None = None,
               cwd: Path | None = None, expect_ok: bool = True) -> dict[str, Any]:
        """Run ``tests/clients/SCRIPT`` with the MLflow client as ``principal``; the JSON
        object it prints last."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        environ.update({
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_REGISTRY_URI": self.url,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
            "GIT_PYTHON_REFRESH": "quiet",
        })
        if principal is not None:
            environ["MLFLOW_TRACKING_TOKEN"] = self.tokens[principal]
        environ.update(env or {})
        # The client's own scratch files (a logged model's staging directory, its
        # tracking store's init lock) go to a directory removed when it ends.
        with tempfile.TemporaryDirectory(prefix="modelreg-mlflow-client-") as scratch:
            environ["TMPDIR"] = scratch
            done = subprocess.run(  # noqa: S603
                [sys.executable, str(CLIENTS / script), *(args or [])], capture_output=True,
                text=True, timeout=600, env=environ, cwd=str(cwd) if cwd else None)
        if expect_ok:
            assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{script} printed no result:\n{done.stdout}\n{done.stderr}"
        return json.loads(lines[-1])


def selected_backends() -> list[str]:
    """``MODELREG_TEST_BACKENDS`` (comma-separated), as the core's tests take it; else
    every backend."""
    wanted = os.environ.get("MODELREG_TEST_BACKENDS")
    return [b.strip() for b in wanted.split(",")] if wanted else list(BACKENDS)


