"""Print the newest run of the experiment ``demo`` (matching FILTER, if set) and, with
LIST=<path>, the sizes of its artifacts at that path and the sha256 of that artifact
downloaded, as JSON."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

client = MlflowClient()
experiment = client.get_experiment_by_name("demo")
run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                         filter_string=os.environ.get("FILTER", ""), max_results=1)[0]
result = {"run_id": run.info.run_id}
if os.environ.get("LIST"):
    result["sizes"] = {f.path: f.file_size
                       for f in client.list_artifacts(run.info.run_id, None)
                       if f.path == os.environ["LIST"]}
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                    artifact_path=os.environ["LIST"],
                                                    dst_path=tmp)
        result["sha256"] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
print(json.dumps(result))
