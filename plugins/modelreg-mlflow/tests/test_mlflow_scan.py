"""MLflow model versions come out finalized with the scanner on (modelreg-scan, the
embedded worker): a models-from-code pyfunc becomes READY; a pickled pyfunc is refused by
the default scan policy and reports FAILED_REGISTRATION with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_helpers import PLUGINS, Server, mlflow_installed

from modelreg.testing import TestDatabase, unavailable
from modelreg.testing.server import LiveServer

pytestmark = pytest.mark.server
SCAN_PLUGINS = (*PLUGINS, "modelreg_scan.plugin")


@pytest.fixture(scope="module")
def scanned_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Modelreg with this plugin and the scanner, its worker embedded, open to anyone."""
    if not mlflow_installed():
        unavailable("the MLflow client is not installed (mlflow-skinny, the test extra)")
    db = TestDatabase.create("sqlite", SCAN_PLUGINS)
    settings = {
        "sqlalchemy.url": db.url,
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("mlflow-scan-blobs")),
        "modelreg.auth.anonymous": "write",
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.2",
        "modelreg.scan.reject": "error",
        "retry.attempts": "3",
    }
    try:
        with LiveServer(settings, threads=8, plugins=SCAN_PLUGINS) as live:
            yield Server(live, {})
    finally:
        db.drop()


def test_pickles_are_refused_and_models_from_code_pass(scanned_server: Server,
                                                       tmp_path: Path) -> None:
    seen = scanned_server.client("scanned.py", None, args=[str(tmp_path)])
    assert seen["code_version"] == "1"
    assert seen["code_status"] == "READY"
    assert seen["prediction"] == [8]
    assert seen["pickle_status"] == "FAILED_REGISTRATION"
    assert "pickle" in seen["pickle_message"]
    assert seen["pickle_error"] != "no error"
