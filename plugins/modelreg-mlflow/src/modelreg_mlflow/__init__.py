"""modelreg-mlflow: MLflow's REST API (registry, the tracking it needs, the artifact proxy)
served over modelreg's models, versions and blob store."""
