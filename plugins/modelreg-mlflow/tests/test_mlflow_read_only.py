"""The MLflow views declared read-only (``modelreg.api.add_read_only_view``): exactly the
``GET``s that only read the database run outside pyramid_tm, and they answer as before
(test_mlflow_client.py runs the real client over them, on a live Waitress taking read turns)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import webtest
from mlflow_helpers import PLUGINS, selected_backends

from modelreg.testing import (
    TestDatabase,
    TransactionRecorder,
    make_app,
    routes_with_views,
    unavailable,
)

API, AJAX = "/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
#: The GET paths (under both prefixes) that only read the database.  Not the experiments'
#: (they create the Default experiment on first use) nor ``model-versions/search`` (its
#: body is not bounded like a page).
READ_ONLY_PATHS = {
    "registered-models/get", "registered-models/search",
    "registered-models/get-latest-versions", "registered-models/alias",
    "model-versions/get", "model-versions/get-download-uri",
    "runs/get", "metrics/get-history", "logged-models/{model_id}", "artifacts/list",
}
READ_ONLY = ({f"mlflow.{prefix}.{path}" for prefix in ("api", "ajax")
              for path in READ_ONLY_PATHS} | {"mlflow.artifacts"})


@pytest.fixture(scope="module", params=selected_backends())
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[webtest.TestApp, TransactionRecorder]]:
    """The app in this process (anonymous callers may write), with the recorder."""
    try:
        db = TestDatabase.create(request.param, PLUGINS)
    except ConnectionError as exc:
        unavailable(str(exc))
    recorder = TransactionRecorder()
    settings = {"sqlalchemy.url": db.url, "retry.attempts": "3",
                "modelreg.storage.local.path": str(tmp_path_factory.mktemp("ro-blobs")),
                "modelreg.auth.anonymous": "write"}
    app = make_app(settings, (*PLUGINS, recorder))
    try:
        yield webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"}), recorder
    finally:
        app.registry["db_engine"].dispose()
        db.drop()


def test_exactly_the_read_only_views_run_outside_pyramid_tm(recorded) -> None:
    client, recorder = recorded
    client.post_json(API + "registered-models/create", {"name": "ro-model"})
    run = client.post_json(API + "runs/create", {"experiment_id": "0"}).json["run"]
    run_id = run["info"]["run_id"]
    client.post_json(API + "runs/log-metric", {"run_id": run_id, "key": "auc", "value": 0.9,
                                               "timestamp": 1, "step": 0})
    gets = {
        "registered-models/get": ("?name=ro-model", 200),
        "registered-models/search": ("", 200),
        "registered-models/get-latest-versions": ("?name=ro-model", 200),
        "registered-models/alias": ("?name=ro-model&alias=champion", 404),
        "model-versions/get": ("?name=ro-model&version=1", 404),
        "model-versions/get-download-uri": ("?name=ro-model&version=1", 404),
        "model-versions/search": ("", 200),
        "experiments/get": ("?experiment_id=0", 200),
        "experiments/get-by-name": ("?experiment_name=Default", 200),
        "experiments/search": ("", 200),
        "runs/get": (f"?run_id={run_id}", 200),
        "metrics/get-history": (f"?run_id={run_id}&metric_key=auc", 200),
        "logged-models/{model_id}": ("m-" + "0" * 32, 404),
        "artifacts/list": (f"?run_id={run_id}", 200),
    }
    recorder.seen.clear()
    for prefix in (API, AJAX):
        for path, (query, status) in gets.items():
            url = prefix + (path.replace("{model_id}", query) if "{" in path else path + query)
            client.get(url, status=status)
    client.get(ARTIFACTS + "?path=", status=200)
    client.get(ARTIFACTS + "/0/" + run_id + "/artifacts/none.txt", status=404)
    seen_routes = {name for name, _, _ in recorder.seen}
    assert seen_routes == routes_with_views(client.app, "mlflow.")  # every GET is decided on here
    assert {name for name, _, active in recorder.seen if not active} == READ_ONLY
    # HEAD with GET; writes stay in pyramid_tm
    recorder.seen.clear()
    client.head(API + "runs/get?run_id=" + run_id, status=200)
    client.post_json(API + "registered-models/get-latest-versions", {"name": "ro-model"})
    assert recorder.seen == [("mlflow.api.runs/get", "HEAD", False),
                             ("mlflow.api.registered-models/get-latest-versions", "POST",
                              True)]


def test_a_read_only_view_answers_outside_pyramid_tm(recorded) -> None:
    client, recorder = recorded
    client.post_json(API + "registered-models/create", {"name": "ro-answers",
                                                        "description": "read"})
    recorder.seen.clear()
    answer = client.get(API + "registered-models/get?name=ro-answers").json
    assert answer["registered_model"]["description"] == "read"
    assert recorder.seen == [("mlflow.api.registered-models/get", "GET", False)]
    missing = client.get(API + "registered-models/get?name=nothing", status=404).json
    assert missing["error_code"] == "RESOURCE_DOES_NOT_EXIST"
