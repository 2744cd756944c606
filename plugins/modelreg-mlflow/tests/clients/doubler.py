"""A pyfunc model from code (MLflow's models-from-code): no pickle in the logged model."""

import mlflow
from mlflow.pyfunc import PythonModel


class Doubler(PythonModel):
    """Doubles every number it is given."""

    def predict(self, context, model_input, params=None):
        return [2 * x for x in model_input]


mlflow.models.set_model(Doubler())
