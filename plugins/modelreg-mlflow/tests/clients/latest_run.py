"""Print the newest run of the experiment ``demo`` (matching FILTER, if set) and, with
LIST=<path>, the sizes of its artifacts at that path, as JSON."""

import json
import os

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
print(json.dumps(result))
