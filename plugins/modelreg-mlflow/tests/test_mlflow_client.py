"""The stock MLflow client (``mlflow-skinny``, pinned in the core's test extra) against a
live Waitress serving modelreg with this plugin: log, register, promote, search, download,
load, delete, rename; MLflow's error codes; permissions through this API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from mlflow_helpers import Server

pytestmark = pytest.mark.server

MPU = {
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(1024 * 1024),
    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(512 * 1024),
}


def test_log_register_promote_search_download_load(mlflow_server: Server,
                                                   tmp_path: Path) -> None:
    seen = mlflow_server.client("session.py", args=[str(tmp_path)], env=MPU)

    assert seen["run"]["params"] == {"alpha": "0.5", "layers": "3"}
    assert seen["run"]["metrics"] == {"loss": 0.4, "acc": 0.8}
    assert seen["run"]["tag"] == "fraud"
    assert seen["run"]["status"] == "FINISHED"
    assert seen["run"]["experiment"] == "demo"
    assert seen["run_artifacts"] == ["data/big.bin", "data/notes.txt"]
    # big.bin (3 MiB) is over the server's 1 MiB request limit: it can only have come in
    # parts (test_a_file_over_the_request_limit_needs_multipart_upload shows the refusal).

    assert seen["first_version"] == "1"
    assert seen["versions"] == ["2", "3", "1"]
    assert seen["statuses"] == ["READY", "READY", "READY"]
    assert seen["third_run_id"] == seen["run_id"]
    assert seen["copied"] == ["team-copy", "1", "READY"]

    assert seen["champion"] == "3"
    assert seen["model"] == {"description": "doubles numbers", "tags": {"owner": "ml"},
                             "aliases": {"champion": "3", "challenger": "1"},
                             "latest": ["3"]}
    assert seen["search_like"] == ["team-copy", "team-data", "team-demo"]
    assert seen["search_tag"] == ["team-demo"]
    assert seen["search_versions"] == ["3"]
    assert seen["search_by_run"] == [1, 1, 1, 2, 3]  # team-copy/1 keeps the run
    assert seen["ordered"] == ["team-demo", "team-data", "team-copy"]
    assert seen["versions_ordered"] == ["1", "2", "3"]
    assert seen["paged"] == [1, True]

    downloads = seen["downloads"]
    assert "MLmodel" in downloads["champion"]
    assert downloads["champion"] == downloads["v1"] == downloads["logged"]
    assert seen["data_download"]["big.bin"] == seen["big_sha256"]
    assert seen["copy_download"] == downloads["v1"]
    assert seen["prediction"] == [2, 4, 6]
    assert seen["prediction_v1"] == [10]

    assert seen["errors"] == {
        "exists": "RESOURCE_ALREADY_EXISTS",
        "no_model": "RESOURCE_DOES_NOT_EXIST",
        "no_version": "RESOURCE_DOES_NOT_EXIST",
        "outside_source": "INVALID_PARAMETER_VALUE",
        "file_source": "INVALID_PARAMETER_VALUE",
        "stage": "INVALID_PARAMETER_VALUE",
        "bad_filter": "INVALID_PARAMETER_VALUE",
        "no_experiment": "RESOURCE_DOES_NOT_EXIST",
    }
    assert "points outside this modelreg server" in seen["outside_message"]

    assert seen["deleted_alias"] == "RESOURCE_DOES_NOT_EXIST"
    assert seen["deleted_version"] == "RESOURCE_DOES_NOT_EXIST"
    assert seen["after_delete"] == [1, 3]
    assert seen["renamed"] == "team-data-renamed"
    assert seen["old_name"] == "RESOURCE_DOES_NOT_EXIST"
    assert seen["deleted_model"] == "RESOURCE_DOES_NOT_EXIST"

    # What was done through MLflow's API is in modelreg's alias history and audit log.
    api = mlflow_server.url + "/api/v1"
    admin = {"Authorization": f"Bearer {mlflow_server.tokens['admin']}"}
    moves = requests.get(f"{api}/models/team-demo/aliases/champion/history", headers=admin,
                         timeout=30).json()["history"]
    assert [(m["from_version"], m["to_version"], m["actor"]) for m in moves] == [
        (1, 3, "admin"), (None, 1, "admin")]
    events = requests.get(f"{api}/audit", params={"model": "team-demo", "page_size": 200},
                          headers=admin, timeout=30).json()["events"]
    actions = {e["action"] for e in events}
    assert {"model.created", "version.created", "alias.set", "alias.moved",
            "alias.deleted", "version.deleted", "model.tag_set"} <= actions
    tracking = requests.get(f"{api}/audit", params={"target": seen["run_id"]},
                            headers=admin, timeout=30).json()["events"]
    assert [(e["action"], e["actor"]) for e in tracking] == [("mlflow.run_created", "admin")]


def test_permissions_and_credentials_through_mlflow(mlflow_server: Server,
                                                    tmp_path: Path) -> None:
    """A reader reads but cannot register, log or create; a writer on ``team-*`` creates
    and registers there only and cannot delete (admin); no token is UNAUTHENTICATED; the
    token as basic auth's password (MLFLOW_TRACKING_PASSWORD) works too."""
    admin = mlflow_server.client("calls.py", args=[str(tmp_path), "0" * 32, "start_run"])
    assert admin == {"start_run": "ok"}
    # The run of the session test (same module-scoped server), with files under data/.
    run_id = mlflow_server.client("latest_run.py",
                                  env={"FILTER": "attributes.run_name = 'first'"})["run_id"]
    base = [str(tmp_path), run_id]

    reader = mlflow_server.client("calls.py", "reader", args=[
        *base, "search", "get_demo", "get_run", "create_team", "register_demo", "start_run"])
    assert reader == {"search": "ok", "get_demo": "ok", "get_run": "ok",
                      "create_team": "PERMISSION_DENIED", "register_demo": "PERMISSION_DENIED",
                      "start_run": "PERMISSION_DENIED"}

    writer = mlflow_server.client("calls.py", "writer", args=[
        *base, "create_team", "create_other", "register_team_w", "alias_team_w",
        "register_demo", "delete_team_w", "start_run"])
    assert writer == {"create_team": "ok", "create_other": "PERMISSION_DENIED",
                      "register_team_w": "ok", "alias_team_w": "ok",
                      "register_demo": "ok", "delete_team_w": "PERMISSION_DENIED",
                      "start_run": "ok"}

    anonymous = mlflow_server.client("calls.py", None, args=[*base, "search", "get_demo"])
    assert anonymous == {"search": "UNAUTHENTICATED", "get_demo": "UNAUTHENTICATED"}

    # The UI's prefix answers too; unknown endpoints answer in MLflow's shape.
    token = {"Authorization": f"Bearer {mlflow_server.tokens['reader']}"}
    ajax = requests.get(f"{mlflow_server.url}/ajax-api/2.0/mlflow/registered-models/get",
                        params={"name": "team-demo"}, headers=token, timeout=30)
    assert ajax.status_code == 200
    assert ajax.json()["registered_model"]["name"] == "team-demo"
    unknown = requests.get(f"{mlflow_server.url}/api/2.0/mlflow/traces/batchGet",
                           headers=token, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"

    basic = mlflow_server.client("calls.py", None, args=[*base, "get_demo"], env={
        "MLFLOW_TRACKING_USERNAME": "reader",
        "MLFLOW_TRACKING_PASSWORD": mlflow_server.tokens["reader"]})
    assert basic == {"get_demo": "ok"}


def test_a_file_over_the_request_limit_needs_multipart_upload(mlflow_server: Server,
                                                              tmp_path: Path) -> None:
    """Without MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD a file over one request's limit is
    refused with 413 and a message naming the variable; with it, it goes through."""
    refused = mlflow_server.client("calls.py", args=[str(tmp_path), "0" * 32, "big_artifact"])
    assert "413" in refused["big_artifact"]
    assert "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD" in refused["big_artifact"]
    accepted = mlflow_server.client("calls.py", env=MPU,
                                    args=[str(tmp_path), "0" * 32, "big_artifact"])
    assert accepted == {"big_artifact": "ok"}
    # Garbage collection with no grace period keeps a run's artifacts (held blobs).
    mlflow_server.cli("gc", "--grace", "0")
    listed = mlflow_server.client("latest_run.py", env={"LIST": "big-single.bin"})
    assert listed["sizes"] == {"big-single.bin": 2 * 1024 * 1024}
    assert listed["sha256"] == hashlib.sha256(b"x" * (2 * 1024 * 1024)).hexdigest()
