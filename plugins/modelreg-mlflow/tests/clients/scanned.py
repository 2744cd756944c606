"""Register a models-from-code pyfunc and a pickled one under the scanner; print what the
client saw as JSON.  Argument: a working directory."""

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

HERE = Path(__file__).parent
out: dict = {}


class Pickled(PythonModel):
    """Saved with cloudpickle: its pickle imports this script's class."""

    def predict(self, context, model_input, params=None):
        return list(model_input)


mlflow.set_experiment("scanned")
with mlflow.start_run():
    code = mlflow.pyfunc.log_model(name="code", python_model=str(HERE / "doubler.py"),
                                   registered_model_name="scanned-code")
    out["code_version"] = code.registered_model_version
    try:
        mlflow.pyfunc.log_model(name="pickled", python_model=Pickled(),
                                registered_model_name="scanned-pickle")
        out["pickle_error"] = "no error"
    except MlflowException as error:
        out["pickle_error"] = error.message
client = MlflowClient()
version = client.get_model_version("scanned-pickle", "1")
out["pickle_status"] = version.status
out["pickle_message"] = version.status_message
out["code_status"] = client.get_model_version("scanned-code", "1").status
out["prediction"] = list(mlflow.pyfunc.load_model("models:/scanned-code/1").predict([4]))
print(json.dumps(out))
