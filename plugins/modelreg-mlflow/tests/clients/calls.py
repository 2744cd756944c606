"""Run the named MLflow client calls and print, for each, ``ok`` or the MLflow error code
it raised (``MlflowException.error_code``).  Arguments: a working directory, a run id, then
call names (see CALLS)."""

import json
import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

work, run_id, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
client = MlflowClient()


def start_run() -> None:
    mlflow.set_experiment("demo")
    with mlflow.start_run():
        mlflow.log_param("p", "1")


def big_artifact() -> None:
    path = work / "big-single.bin"
    path.write_bytes(b"x" * (2 * 1024 * 1024))
    mlflow.set_experiment("demo")
    with mlflow.start_run():
        mlflow.log_artifact(str(path))


CALLS = {
    "search": lambda: client.search_registered_models(),
    "get_demo": lambda: client.get_registered_model("team-demo"),
    "get_run": lambda: client.get_run(run_id),
    "create_team": lambda: client.create_registered_model("team-w"),
    "create_other": lambda: client.create_registered_model("other-w"),
    "register_demo": lambda: client.create_model_version(
        "team-demo", source=f"runs:/{run_id}/data", run_id=run_id),
    "register_team_w": lambda: client.create_model_version(
        "team-w", source=f"runs:/{run_id}/data", run_id=run_id),
    "alias_team_w": lambda: client.set_registered_model_alias("team-w", "prod", "1"),
    "delete_team_w": lambda: client.delete_registered_model("team-w"),
    "start_run": start_run,
    "big_artifact": big_artifact,
}

result = {}
for name in names:
    try:
        CALLS[name]()
        result[name] = "ok"
    except MlflowException as error:
        result[name] = error.error_code
    except Exception as error:  # reported to the test, which asserts on it
        result[name] = f"{type(error).__name__}: {error}"
print(json.dumps(result))
