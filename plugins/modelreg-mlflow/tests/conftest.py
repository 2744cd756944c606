"""Fixtures of the MLflow plugin's tests: a live Waitress serving modelreg with this plugin
(tokens required) and principals made with the ``modelreg`` command (mlflow_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlflow_helpers import MAX_PUT, PLUGINS, Server, mlflow_installed, selected_backends

from modelreg.testing import TestDatabase, unavailable
from modelreg.testing.server import LiveServer


@pytest.fixture(scope="module", params=selected_backends())
def mlflow_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Modelreg with this plugin on a fresh database of each backend, tokens required, and
    three principals: ``admin`` (global admin), ``writer`` (write on ``team-*``),
    ``reader`` (read on everything)."""
    if not mlflow_installed():
        unavailable("the MLflow client is not installed (mlflow-skinny, the test extra)")
    try:
        db = TestDatabase.create(request.param, PLUGINS)
    except ConnectionError as exc:
        unavailable(str(exc))
    settings = {
        "sqlalchemy.url": db.url,
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("mlflow-blobs")),
        "modelreg.auth.anonymous": "none",
        "modelreg.upload.max_put_size": str(MAX_PUT),
        "modelreg.upload.min_chunk_size": str(256 * 1024),
        "retry.attempts": "3",
    }
    try:
        with LiveServer(settings, threads=8, plugins=PLUGINS) as live:
            server = Server(live, {})
            # Each command starts a Python process: run those that may run together at once.
            with ThreadPoolExecutor(5) as pool:
                list(pool.map(lambda args: server.cli(*args), [
                    ("users", "add", "admin", "--admin"), ("users", "add", "writer"),
                    ("users", "add", "reader")]))
                made = list(pool.map(lambda args: server.cli(*args), [
                    ("tokens", "create", "admin", "--scope", "admin"),
                    ("tokens", "create", "writer", "--scope", "write"),
                    ("tokens", "create", "reader", "--scope", "read"),
                    ("grants", "add", "writer", "team-*", "write"),
                    ("grants", "add", "reader", "*", "read")]))
            server.tokens.update(zip(("admin", "writer", "reader"), made[:3], strict=True))
            yield server
    finally:
        db.drop()
