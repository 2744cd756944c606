"""The hook implementations of modelreg-mlflow (the ``mlflow`` entry point)."""

from __future__ import annotations

from typing import Any

from modelreg.api import hookimpl


@hookimpl
def modelreg_migration_locations() -> str:
    """The Alembic branch ``modelreg_mlflow``: experiments, runs, metrics, logged models,
    run artifacts and multipart uploads."""
    return "modelreg_mlflow:migrations"


@hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """MLflow's REST API under ``/api/2.0/mlflow/`` (and ``/ajax-api/2.0/mlflow/``) and its
    artifact proxy under ``/api/2.0/mlflow-artifacts/``, errors in MLflow's shape."""
    config.include("modelreg_mlflow.views")
