"""The stock MLflow client's log-register-promote-search-download-load session, run as a
user's script would be (environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN...).

Prints one JSON object with what it saw; the test asserts on it.  Argument: a working
directory."""

import hashlib
import json
import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

HERE = Path(__file__).parent
work = Path(sys.argv[1])
out: dict = {}


def digests(root: str) -> dict:
    base = Path(root)
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def code_of(call) -> str:
    try:
        call()
    except MlflowException as error:
        return error.error_code
    return "no error"


data = work / "data"
data.mkdir(parents=True, exist_ok=True)
big = bytes(hashlib.sha256(str(i).encode()).digest()[0] for i in range(3 * 1024 * 1024 + 17))
(data / "big.bin").write_bytes(big)
(data / "notes.txt").write_text("weights for the demo\n")
out["big_sha256"] = hashlib.sha256(big).hexdigest()

mlflow.set_experiment("demo")
with mlflow.start_run(run_name="first") as run:
    mlflow.log_params({"alpha": "0.5", "layers": "3"})
    mlflow.log_metric("loss", 0.9, step=0)
    mlflow.log_metric("loss", 0.4, step=1)
    mlflow.log_metrics({"acc": 0.8})
    mlflow.set_tag("team", "fraud")
    mlflow.log_artifacts(str(data), artifact_path="data")
    info = mlflow.pyfunc.log_model(name="model", python_model=str(HERE / "doubler.py"),
                                   registered_model_name="team-demo")
run_id = run.info.run_id
client = MlflowClient()
got = client.get_run(run_id)
out["run"] = {"params": got.data.params, "metrics": got.data.metrics,
              "tag": got.data.tags.get("team"), "status": got.info.status,
              "experiment": client.get_experiment(got.info.experiment_id).name}
out["run_artifacts"] = sorted(a.path for a in client.list_artifacts(run_id, "data"))
out["first_version"] = str(info.registered_model_version)

# Register twice more: by create_model_version (the logged model) and by register_model
# (runs:/…, which MLflow 3 resolves to the run's logged model).
second = client.create_model_version("team-demo", source=info.model_uri, run_id=run_id)
third = mlflow.register_model(f"runs:/{run_id}/model", "team-demo")
client.create_registered_model("team-data", description="a run's data files")
data_version = client.create_model_version("team-data", source=f"runs:/{run_id}/data",
                                           run_id=run_id)
# MLflow's copy_model_version: a registered version's files into another model, by digest.
copied = client.copy_model_version("models:/team-demo/1", "team-copy")
out["copied"] = [copied.name, copied.version, copied.status]
out["versions"] = [second.version, third.version, data_version.version]
out["statuses"] = [second.status, third.status, data_version.status]
out["third_run_id"] = third.run_id

# Promote: aliases moved, tags set.
client.set_registered_model_alias("team-demo", "champion", "1")
client.set_registered_model_alias("team-demo", "champion", third.version)
client.set_registered_model_alias("team-demo", "challenger", "1")
out["champion"] = client.get_model_version_by_alias("team-demo", "champion").version
client.set_registered_model_tag("team-demo", "owner", "ml")
client.set_model_version_tag("team-demo", third.version, "validated", "yes")
client.update_registered_model("team-demo", description="doubles numbers")
client.update_model_version("team-demo", third.version, description="the good one")
model = client.get_registered_model("team-demo")
out["model"] = {"description": model.description, "tags": model.tags,
                "aliases": model.aliases,
                "latest": [v.version for v in model.latest_versions]}

# Search with LIKE and tags.
out["search_like"] = sorted(m.name for m in
                            client.search_registered_models(filter_string="name LIKE 'team-%'"))
out["search_tag"] = [m.name for m in
                     client.search_registered_models(filter_string="tags.owner = 'ml'")]
out["search_versions"] = [v.version for v in client.search_model_versions(
    "name = 'team-demo' AND tags.validated = 'yes'")]
out["search_by_run"] = sorted(int(v.version) for v in client.search_model_versions(
    f"run_id = '{run_id}'"))
out["ordered"] = [m.name for m in client.search_registered_models(
    filter_string="name LIKE 'team-%'", order_by=["name DESC"])]
out["versions_ordered"] = [v.version for v in client.search_model_versions(
    "name = 'team-demo'", order_by=["version_number ASC"])]
paged = client.search_registered_models(max_results=1)
out["paged"] = [len(paged), bool(paged.token)]

# Download byte for byte and load.
champion = mlflow.artifacts.download_artifacts("models:/team-demo@champion",
                                               dst_path=str(work / "champion"))
first = mlflow.artifacts.download_artifacts("models:/team-demo/1", dst_path=str(work / "v1"))
logged = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(work / "logged"))
out["downloads"] = {"champion": digests(champion), "v1": digests(first),
                    "logged": digests(logged)}
files = mlflow.artifacts.download_artifacts("models:/team-data/1", dst_path=str(work / "d1"))
out["data_download"] = digests(files)
out["copy_download"] = digests(mlflow.artifacts.download_artifacts(
    "models:/team-copy/1", dst_path=str(work / "copy")))
loaded = mlflow.pyfunc.load_model("models:/team-demo@champion")
out["prediction"] = list(loaded.predict([1, 2, 3]))
out["prediction_v1"] = list(mlflow.pyfunc.load_model("models:/team-demo/1").predict([5]))

# Errors the client raises as MLflow raises them.
out["errors"] = {
    "exists": code_of(lambda: client.create_registered_model("team-demo")),
    "no_model": code_of(lambda: client.get_registered_model("team-nope")),
    "no_version": code_of(lambda: client.get_model_version("team-demo", "99")),
    "outside_source": code_of(lambda: client.create_model_version(
        "team-demo", source="s3://bucket/model")),
    "file_source": code_of(lambda: client.create_model_version(
        "team-demo", source="file:///tmp/model")),
    "stage": code_of(lambda: client.transition_model_version_stage(
        "team-demo", "1", "Production")),
    "bad_filter": code_of(lambda: client.search_registered_models(
        filter_string="name LIKE")),
    "no_experiment": code_of(lambda: client.get_experiment("424242")),
}
try:
    client.create_model_version("team-demo", source="s3://bucket/model")
except MlflowException as error:
    out["outside_message"] = error.message

# Delete an alias, a version and a model; rename one.
client.delete_registered_model_alias("team-demo", "challenger")
out["deleted_alias"] = code_of(lambda: client.get_model_version_by_alias("team-demo",
                                                                         "challenger"))
client.delete_model_version("team-demo", second.version)
out["deleted_version"] = code_of(lambda: client.get_model_version("team-demo",
                                                                  second.version))
out["after_delete"] = sorted(int(v.version) for v in
                             client.search_model_versions("name = 'team-demo'"))
client.rename_registered_model("team-data", "team-data-renamed")
out["renamed"] = client.get_registered_model("team-data-renamed").name
out["old_name"] = code_of(lambda: client.get_registered_model("team-data"))
client.delete_registered_model("team-data-renamed")
out["deleted_model"] = code_of(lambda: client.get_registered_model("team-data-renamed"))
out["run_id"] = run_id
print(json.dumps(out))
