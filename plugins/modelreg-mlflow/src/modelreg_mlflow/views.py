"""Routes and views of the MLflow API, and MLflow's error shape under its prefixes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.security import NO_PERMISSION_REQUIRED

from modelreg.api import (
    ADMIN,
    READ,
    add_error_shape,
    add_read_only_view,
    add_streaming_view,
)

from . import artifacts, registry, tracking
from .protocol import render_error

#: The prefixes MLflow's clients call (the UI's ``ajax-api`` too).
PREFIXES = {"api": "/api/2.0/mlflow/", "ajax": "/ajax-api/2.0/mlflow/"}
ARTIFACTS = "/api/2.0/mlflow-artifacts"
#: The ``GET`` paths under :data:`PREFIXES` whose views only read the database and answer a
#: bounded body: served outside pyramid_tm, taking read turns (``modelreg.api.
#: add_read_only_view``; docs/plugins.md).  Not here: ``experiments/get``,
#: ``experiments/get-by-name`` and ``experiments/search`` (they create the ``Default``
#: experiment on first use, tracking.py ``_ensure_default``), ``model-versions/search``
#: (its body holds up to 200,000 versions).
READ_ONLY_PATHS = frozenset({
    "registered-models/get", "registered-models/search",
    "registered-models/get-latest-versions", "registered-models/alias",
    "model-versions/get", "model-versions/get-download-uri",
    "runs/get", "metrics/get-history", "logged-models/{model_id}", "artifacts/list",
})
#: The artifact routes whose ``GET`` only reads the database: the listing of a directory
#: (not ``mlflow.artifact``, whose ``GET`` sends a file from the blob store).
READ_ONLY_ARTIFACT_ROUTES = frozenset({"mlflow.artifacts"})

_ARTIFACT_ROUTES: list[tuple[str, str, str, Callable[..., Any], bool]] = [
    # (route name, pattern, method, view, streams a body)
    ("mlflow.artifacts", ARTIFACTS + "/artifacts", "GET", artifacts.list_artifacts, False),
    ("mlflow.artifact", ARTIFACTS + "/artifacts/*path", "GET",
     artifacts.download_artifact, False),
    ("mlflow.artifact", ARTIFACTS + "/artifacts/*path", "PUT", artifacts.upload_artifact,
     True),
    ("mlflow.artifact", ARTIFACTS + "/artifacts/*path", "DELETE",
     artifacts.delete_artifacts, False),
    ("mlflow.mpu_part", ARTIFACTS + "/mpu/part/{upload}/{number}", "PUT",
     artifacts.mpu_part, True),
    ("mlflow.mpu_create", ARTIFACTS + "/mpu/create/*path", "POST", artifacts.mpu_create,
     False),
    ("mlflow.mpu_complete", ARTIFACTS + "/mpu/complete/*path", "POST",
     artifacts.mpu_complete, True),
    ("mlflow.mpu_abort", ARTIFACTS + "/mpu/abort/*path", "POST", artifacts.mpu_abort, False),
]


def includeme(config: Configurator) -> None:
    """Add the routes and views.  Each needs ``read`` on the registry (a known caller, or
    anonymous where anonymous reads are on); views that change something check ``write``
    (on the registry or the model) through ``request.modelreg``."""
    for prefix in (*PREFIXES.values(), ARTIFACTS + "/", "/ajax-api/2.0/mlflow-artifacts/"):
        add_error_shape(config, prefix.rstrip("/"), render_error)
    added: set[str] = set()
    for key, prefix in PREFIXES.items():
        routes = [*registry.ROUTES, *tracking.ROUTES,
                  ("artifacts/list", "GET", artifacts.list_run_artifacts)]
        for path, method, view in routes:
            name = f"mlflow.{key}.{path}"
            if name not in added:
                config.add_route(name, prefix + path)
                added.add(name)
            config.add_view(view, route_name=name, request_method=method, renderer="json",
                            permission=READ)
            if method == "GET" and path in READ_ONLY_PATHS:
                add_read_only_view(config, name, "GET")
    # modelreg import mlflow: a draft with MLflow's number (the core's error shape), for
    # global admins only (the facade checks it again).
    config.add_route("mlflow.import_version", "/api/v1/mlflow/import/models/{model}/versions")
    config.add_view(registry.import_version, route_name="mlflow.import_version",
                    request_method="POST", permission=ADMIN, renderer="json")
    for name, pattern, method, view, streams in _ARTIFACT_ROUTES:
        if name not in added:
            config.add_route(name, pattern)
            added.add(name)
        # A part's URL is its credential (the client sends parts without its token, as to
        # S3's presigned URLs): artifacts.mpu_part checks the URL's secret.
        permission = NO_PERMISSION_REQUIRED if view is artifacts.mpu_part else READ
        config.add_view(view, route_name=name, request_method=method, permission=permission,
                        renderer=None if view in (artifacts.download_artifact,
                                                  artifacts.mpu_part) else "json")
        if streams:
            add_streaming_view(config, name, method)
        if method == "GET" and name in READ_ONLY_ARTIFACT_ROUTES:
            add_read_only_view(config, name, "GET")
