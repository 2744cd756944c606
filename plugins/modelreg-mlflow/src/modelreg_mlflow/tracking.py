"""The part of MLflow's tracking API the usual path needs: experiments, runs (params,
metrics, tags, inputs, outputs) and MLflow 3's logged models, in this plugin's tables.

Who may do what (docs/mlflow.md): reading experiments, runs and logged models needs ``read``
on the registry (every known caller; anonymous callers where anonymous reads are on);
creating and changing them needs ``write`` on some model (a caller who may register
somewhere); registering a run's model into a registered model needs ``write`` on that model.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import sqlalchemy as sa
from pyramid.request import Request

from modelreg.api import READ, WRITE, audit_request, mark_changed, registry_of

from . import artifacts, tables
from .protocol import (
    MlflowError,
    invalid,
    listed,
    matches,
    missing,
    now_ms,
    order,
    page,
    params,
    parse_filter,
    required,
    tag_list,
)

DEFAULT_EXPERIMENT = 0
ACTIVE, DELETED = "active", "deleted"
_RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


def _read(request: Request) -> Any:
    registry_of(request).require(READ, None)
    return request.dbsession


def _write(request: Request) -> Any:
    registry_of(request).require(WRITE, None)
    mark_changed(request.dbsession)
    return request.dbsession


def _ensure_default(db: Any) -> None:
    """Experiment 0, ``Default``, as every MLflow server has it."""
    table = tables.experiments
    if db.execute(sa.select(table.c.id).where(table.c.id == DEFAULT_EXPERIMENT)).first():
        return
    mark_changed(db)
    now = now_ms()
    db.execute(sa.insert(table).values(id=DEFAULT_EXPERIMENT, name="Default",
                                       lifecycle_stage=ACTIVE, tags={}, created_by=None,
                                       created_at=now, updated_at=now))


# ------------------------------------------------------------------------- experiments


def experiment_json(row: Any) -> dict[str, Any]:
    """MLflow's ``Experiment``."""
    return {"experiment_id": str(row.id), "name": row.name,
            "artifact_location": f"mlflow-artifacts:/{row.id}",
            "lifecycle_stage": row.lifecycle_stage, "creation_time": row.created_at,
            "last_update_time": row.updated_at, "tags": tag_list(row.tags or {})}


def _experiment(db: Any, experiment_id: Any) -> Any:
    try:
        number = int(str(experiment_id))
    except ValueError:
        raise invalid(f"Invalid experiment id '{experiment_id}'") from None
    if number == DEFAULT_EXPERIMENT:
        _ensure_default(db)
    row = db.execute(sa.select(tables.experiments).where(
        tables.experiments.c.id == number)).first()
    if row is None:
        raise missing(f"No Experiment with id={experiment_id} exists")
    return row


def get_experiment(request: Request) -> dict[str, Any]:
    """``GET experiments/get``."""
    db = _read(request)
    return {"experiment": experiment_json(
        _experiment(db, required(params(request), "experiment_id")))}


def get_experiment_by_name(request: Request) -> dict[str, Any]:
    """``GET experiments/get-by-name``."""
    db = _read(request)
    name = required(params(request), "experiment_name")
    if name == "Default":
        _ensure_default(db)
    row = db.execute(sa.select(tables.experiments).where(
        tables.experiments.c.name == name)).first()
    if row is None:
        raise missing(f"Could not find experiment with name '{name}'")
    return {"experiment": experiment_json(row)}


def create_experiment(request: Request) -> dict[str, Any]:
    """``POST experiments/create`` (``artifact_location`` is this server's, always)."""
    db = _write(request)
    values = params(request)
    name = str(required(values, "name"))
    if len(name) > 500:
        raise invalid("An experiment name has at most 500 characters")
    if values.get("artifact_location"):
        raise invalid("modelreg keeps artifacts in its own store: create the experiment "
                      "without artifact_location")
    _ensure_default(db)
    table = tables.experiments
    if db.execute(sa.select(table.c.id).where(table.c.name == name)).first():
        raise MlflowError("RESOURCE_ALREADY_EXISTS",
                          f"Experiment(name={name}) already exists.")
    number = (db.scalar(sa.select(sa.func.max(table.c.id))) or 0) + 1
    now = now_ms()
    tags = {t["key"]: str(t.get("value", "")) for t in listed(values.get("tags"))}
    db.execute(sa.insert(table).values(id=number, name=name, lifecycle_stage=ACTIVE,
                                       tags=tags, created_by=registry_of(request).caller,
                                       created_at=now, updated_at=now))
    audit_request(request, "mlflow.experiment_created", "mlflow_experiment", name,
                  after={"id": number})
    return {"experiment_id": str(number)}


def search_experiments(request: Request) -> dict[str, Any]:
    """``POST experiments/search`` (filter on ``name`` and ``tags.<key>``)."""
    db = _read(request)
    values = params(request)
    _ensure_default(db)
    view = str(values.get("view_type") or "ACTIVE_ONLY")
    clauses = parse_filter(values.get("filter"))
    found = []
    for row in db.execute(sa.select(tables.experiments)).all():
        if view == "ACTIVE_ONLY" and row.lifecycle_stage != ACTIVE:
            continue
        if view == "DELETED_ONLY" and row.lifecycle_stage != DELETED:
            continue
        doc = experiment_json(row)
        if matches(clauses, lambda key, doc=doc, row=row: _experiment_field(doc, row, key)):
            found.append(doc)
    order(found, listed(values.get("order_by")),
          lambda doc, key: doc.get(key.replace("attribute.", "")),
          ["last_update_time DESC", "experiment_id ASC"])
    chunk, token = page(found, values, default=1000, maximum=50000)
    return {"experiments": chunk, **({"next_page_token": token} if token else {})}


def _experiment_field(doc: dict[str, Any], row: Any, key: str) -> Any:
    key = key.replace("attribute.", "")
    if key.startswith("tags.") or key.startswith("tag."):
        return (row.tags or {}).get(key.partition(".")[2])
    return doc.get(key)


def set_experiment_tag(request: Request) -> dict[str, Any]:
    """``POST experiments/set-experiment-tag``."""
    db = _write(request)
    values = params(request)
    row = _experiment(db, required(values, "experiment_id"))
    tags = dict(row.tags or {})
    tags[str(required(values, "key"))] = str(values.get("value") or "")
    db.execute(sa.update(tables.experiments).where(tables.experiments.c.id == row.id)
               .values(tags=tags, updated_at=now_ms()))
    return {}


# -------------------------------------------------------------------------------- runs


def _run(db: Any, run_id: Any) -> Any:
    row = db.execute(sa.select(tables.runs).where(tables.runs.c.id == str(run_id))).first()
    if row is None:
        raise missing(f"Run '{run_id}' not found")
    return row


def _latest_metrics(db: Any, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The latest value of each metric of each run (the highest step, then time)."""
    table = tables.metrics
    latest: dict[str, dict[str, Any]] = {}
    if not run_ids:
        return {}
    for row in db.execute(sa.select(table).where(table.c.run_id.in_(run_ids))
                          .order_by(table.c.id)).all():
        key = (row.run_id, row.key)
        current = latest.get(key)
        if current is None or (row.step, row.timestamp) >= (current["step"],
                                                             current["timestamp"]):
            latest[key] = {"key": row.key, "value": row.value, "timestamp": row.timestamp,
                           "step": row.step}
    result: dict[str, list[dict[str, Any]]] = {}
    for (run_id, _key), metric in sorted(latest.items()):
        result.setdefault(run_id, []).append(metric)
    return result


def run_json(row: Any, metric_list: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """MLflow's ``Run``."""
    info = {"run_id": row.id, "run_uuid": row.id, "run_name": row.name,
            "experiment_id": str(row.experiment_id), "user_id": row.user_id or "",
            "status": row.status, "start_time": row.start_time,
            "artifact_uri": f"mlflow-artifacts:/{row.experiment_id}/{row.id}/artifacts",
            "lifecycle_stage": row.lifecycle_stage}
    if row.end_time is not None:
        info["end_time"] = row.end_time
    return {
        "info": info,
        "data": {"metrics": metric_list or [], "params": tag_list(row.params or {}),
                 "tags": tag_list(row.tags or {})},
        "inputs": row.inputs or {},
        "outputs": row.outputs or {},
    }


def create_run(request: Request) -> dict[str, Any]:
    """``POST runs/create``."""
    db = _write(request)
    values = params(request)
    experiment = _experiment(db, values.get("experiment_id", DEFAULT_EXPERIMENT))
    if experiment.lifecycle_stage != ACTIVE:
        raise invalid(f"The experiment {experiment.id} must be in the 'active' state.")
    tags = {t["key"]: str(t.get("value", "")) for t in listed(values.get("tags"))}
    run_id = uuid.uuid4().hex
    name = values.get("run_name") or tags.get("mlflow.runName") or f"run-{run_id[:8]}"
    tags["mlflow.runName"] = name
    caller = registry_of(request).caller
    user = values.get("user_id") or caller or ""
    tags.setdefault("mlflow.user", user)
    db.execute(sa.insert(tables.runs).values(
        id=run_id, experiment_id=experiment.id, name=name, status="RUNNING",
        lifecycle_stage=ACTIVE, user_id=user,
        start_time=int(values.get("start_time") or now_ms()), end_time=None, params={},
        tags=tags, inputs={}, outputs={}))
    audit_request(request, "mlflow.run_created", "mlflow_run", run_id,
                  after={"experiment": experiment.id, "name": name})
    return {"run": run_json(_run(db, run_id))}


def get_run(request: Request) -> dict[str, Any]:
    """``GET runs/get``."""
    db = _read(request)
    values = params(request)
    row = _run(db, values.get("run_id") or required(values, "run_uuid"))
    return {"run": run_json(row, _latest_metrics(db, [row.id]).get(row.id))}


def update_run(request: Request) -> dict[str, Any]:
    """``POST runs/update``."""
    db = _write(request)
    values = params(request)
    row = _run(db, values.get("run_id") or required(values, "run_uuid"))
    changes: dict[str, Any] = {}
    if values.get("status"):
        if values["status"] not in _RUN_STATUSES:
            raise invalid(f"Invalid run status '{values['status']}'")
        changes["status"] = values["status"]
    if values.get("end_time") is not None:
        changes["end_time"] = int(values["end_time"])
    if values.get("run_name"):
        changes["name"] = values["run_name"]
        changes["tags"] = {**(row.tags or {}), "mlflow.runName": values["run_name"]}
    if changes:
        db.execute(sa.update(tables.runs).where(tables.runs.c.id == row.id).values(**changes))
    return {"run_info": run_json(_run(db, row.id))["info"]}


def _set_lifecycle(request: Request, stage: str) -> dict[str, Any]:
    db = _write(request)
    row = _run(db, required(params(request), "run_id"))
    db.execute(sa.update(tables.runs).where(tables.runs.c.id == row.id)
               .values(lifecycle_stage=stage))
    audit_request(request, "mlflow.run_deleted" if stage == DELETED else "mlflow.run_restored",
                  "mlflow_run", row.id)
    return {}


def delete_run(request: Request) -> dict[str, Any]:
    """``POST runs/delete`` (soft, as MLflow: its artifacts stay until it is purged)."""
    return _set_lifecycle(request, DELETED)


def restore_run(request: Request) -> dict[str, Any]:
    """``POST runs/restore``."""
    return _set_lifecycle(request, ACTIVE)


def _check_active(row: Any) -> None:
    if row.lifecycle_stage != ACTIVE:
        raise invalid(f"The run {row.id} must be in the 'active' state. "
                      f"Current state is {row.lifecycle_stage}.")


def _log(db: Any, row: Any, *, metrics: list[dict[str, Any]] = (),  # type: ignore[assignment]
         params_: list[dict[str, Any]] = (), tags: list[dict[str, Any]] = ()  # type: ignore[assignment]
         ) -> None:
    _check_active(row)
    stored = dict(row.params or {})
    for param in params_:
        key, value = str(param["key"]), str(param.get("value", ""))
        if key in stored and stored[key] != value:
            raise invalid(f"Changing param values is not allowed. Param with key='{key}' "
                          f"was already logged with value='{stored[key]}' for run ID="
                          f"'{row.id}'. Attempted logging new value '{value}'.")
        stored[key] = value
    new_tags = dict(row.tags or {})
    for tag in tags:
        new_tags[str(tag["key"])] = str(tag.get("value", ""))
    db.execute(sa.update(tables.runs).where(tables.runs.c.id == row.id)
               .values(params=stored, tags=new_tags))
    for metric in metrics:
        value = metric.get("value")
        db.execute(sa.insert(tables.metrics).values(
            run_id=row.id, key=str(metric["key"]),
            value=None if value is None else float(value),
            timestamp=int(metric.get("timestamp") or now_ms()),
            step=int(metric.get("step") or 0), model_id=metric.get("model_id")))


def log_batch(request: Request) -> dict[str, Any]:
    """``POST runs/log-batch``."""
    db = _write(request)
    values = params(request)
    row = _run(db, required(values, "run_id"))
    _log(db, row, metrics=listed(values.get("metrics")), params_=listed(values.get("params")),
         tags=listed(values.get("tags")))
    return {}


def _log_one(request: Request, kind: str) -> dict[str, Any]:
    """One metric, param or tag of a run (``run_id``, or the older ``run_uuid``)."""
    db = _write(request)
    values = params(request)
    row = _run(db, values.get("run_id") or required(values, "run_uuid"))
    required(values, "key")
    _log(db, row, **{kind: [values]})
    return {}


def log_metric(request: Request) -> dict[str, Any]:
    """``POST runs/log-metric``."""
    return _log_one(request, "metrics")


def log_param(request: Request) -> dict[str, Any]:
    """``POST runs/log-parameter``."""
    return _log_one(request, "params_")


def set_tag(request: Request) -> dict[str, Any]:
    """``POST runs/set-tag``."""
    return _log_one(request, "tags")


def delete_tag(request: Request) -> dict[str, Any]:
    """``POST runs/delete-tag``."""
    db = _write(request)
    values = params(request)
    row = _run(db, required(values, "run_id"))
    key = str(required(values, "key"))
    tags = dict(row.tags or {})
    if key not in tags:
        raise missing(f"No tag with name: {key} in run with id {row.id}")
    del tags[key]
    db.execute(sa.update(tables.runs).where(tables.runs.c.id == row.id).values(tags=tags))
    return {}


def log_inputs(request: Request) -> dict[str, Any]:
    """``POST runs/log-inputs`` (datasets and models, kept as given)."""
    db = _write(request)
    values = params(request)
    row = _run(db, required(values, "run_id"))
    inputs = dict(row.inputs or {})
    if values.get("datasets"):
        inputs["dataset_inputs"] = [*inputs.get("dataset_inputs", []),
                                    *listed(values["datasets"])]
    if values.get("models"):
        inputs["model_inputs"] = [*inputs.get("model_inputs", []), *listed(values["models"])]
    db.execute(sa.update(tables.runs).where(tables.runs.c.id == row.id).values(inputs=inputs))
    return {}


def log_outputs(request: Request) -> dict[str, Any]:
    """``POST runs/outputs`` (logged models the run produced)."""
    db = _write(request)
    values = params(request)
    row = _run(db, required(values, "run_id"))
    outputs = dict(row.outputs or {})
    outputs["model_outputs"] = [*outputs.get("model_outputs", []),
                                *listed(values.get("models"))]
    db.execute(sa.update(tables.runs).where(tables.runs.c.id == row.id)
               .values(outputs=outputs))
    return {}


def _run_field(doc: dict[str, Any], key: str) -> Any:
    kind, _, name = key.partition(".")
    if not name:
        kind, name = "attributes", key
    if kind in ("metrics", "metric"):
        return next((m["value"] for m in doc["data"]["metrics"] if m["key"] == name), None)
    if kind in ("params", "param", "parameter", "parameters"):
        return next((p["value"] for p in doc["data"]["params"] if p["key"] == name), None)
    if kind in ("tags", "tag"):
        return next((t["value"] for t in doc["data"]["tags"] if t["key"] == name), None)
    if kind in ("attributes", "attribute", "attr", "run"):
        name = {"run_id": "run_id", "id": "run_id", "name": "run_name",
                "created": "start_time", "Created": "start_time"}.get(name, name)
        return doc["info"].get(name)
    raise invalid(f"Invalid search key '{key}'")


def search_runs(request: Request) -> dict[str, Any]:
    """``POST runs/search`` (the filter's metrics, params, tags and attributes)."""
    db = _read(request)
    values = params(request)
    ids = [int(str(e)) for e in listed(values.get("experiment_ids")) if str(e).isdigit()]
    clauses = parse_filter(values.get("filter"))
    view = str(values.get("run_view_type") or "ACTIVE_ONLY")
    query = sa.select(tables.runs)
    if ids:
        query = query.where(tables.runs.c.experiment_id.in_(ids))
    rows = db.execute(query).all()
    metric_map = _latest_metrics(db, [r.id for r in rows])
    found = []
    for row in rows:
        if view == "ACTIVE_ONLY" and row.lifecycle_stage != ACTIVE:
            continue
        if view == "DELETED_ONLY" and row.lifecycle_stage != DELETED:
            continue
        doc = run_json(row, metric_map.get(row.id))
        if matches(clauses, lambda key, doc=doc: _run_field(doc, key)):
            found.append(doc)
    order(found, listed(values.get("order_by")), _run_field,
          ["attributes.start_time DESC", "attributes.run_id ASC"])
    chunk, token = page(found, values, default=1000, maximum=50000)
    return {"runs": chunk, **({"next_page_token": token} if token else {})}


def metric_history(request: Request) -> dict[str, Any]:
    """``GET metrics/get-history``."""
    db = _read(request)
    values = params(request)
    row = _run(db, values.get("run_id") or required(values, "run_uuid"))
    key = required(values, "metric_key")
    table = tables.metrics
    found = [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
             for m in db.execute(sa.select(table).where(table.c.run_id == row.id,
                                                        table.c.key == key)
                                 .order_by(table.c.id)).all()]
    chunk, token = page(found, values, default=25000, maximum=25000)
    return {"metrics": chunk, **({"next_page_token": token} if token else {})}


# ----------------------------------------------------------------------- logged models


def logged_model_json(row: Any) -> dict[str, Any]:
    """MLflow 3's ``LoggedModel``."""
    info = {"model_id": row.id, "experiment_id": str(row.experiment_id), "name": row.name,
            "artifact_uri": f"mlflow-artifacts:/{row.experiment_id}/models/{row.id}/artifacts",
            "status": row.status, "creation_timestamp_ms": row.created_at,
            "last_updated_timestamp_ms": row.updated_at, "tags": tag_list(row.tags or {}),
            "lifecycle_stage": row.lifecycle_stage}
    if row.source_run_id:
        info["source_run_id"] = row.source_run_id
    if row.model_type:
        info["model_type"] = row.model_type
    return {"info": info, "data": {"params": tag_list(row.params or {}), "metrics": []}}


def _logged_model(db: Any, model_id: str) -> Any:
    row = db.execute(sa.select(tables.logged_models).where(
        tables.logged_models.c.id == model_id)).first()
    if row is None:
        raise missing(f"Logged model with ID '{model_id}' not found.")
    return row


def create_logged_model(request: Request) -> dict[str, Any]:
    """``POST logged-models``."""
    db = _write(request)
    values = params(request)
    experiment = _experiment(db, required(values, "experiment_id"))
    model_id = "m-" + uuid.uuid4().hex
    run_id = values.get("source_run_id")
    if run_id:
        _run(db, run_id)
    name = values.get("name") or f"model-{model_id[2:10]}"
    now = now_ms()
    db.execute(sa.insert(tables.logged_models).values(
        id=model_id, experiment_id=experiment.id, name=name, source_run_id=run_id,
        model_type=values.get("model_type"), status="LOGGED_MODEL_PENDING",
        lifecycle_stage=ACTIVE, user_id=registry_of(request).caller,
        params={p["key"]: str(p.get("value", "")) for p in listed(values.get("params"))},
        tags={t["key"]: str(t.get("value", "")) for t in listed(values.get("tags"))},
        created_at=now, updated_at=now))
    audit_request(request, "mlflow.logged_model_created", "mlflow_logged_model", model_id,
                  after={"experiment": experiment.id, "run": run_id, "name": name})
    return {"model": logged_model_json(_logged_model(db, model_id))}


def _model_id(request: Request) -> str:
    model_id = request.matchdict["model_id"]
    if not re.fullmatch(r"m-[0-9a-f]{32}", model_id):
        raise missing(f"Logged model with ID '{model_id}' not found.")
    return model_id


def get_logged_model(request: Request) -> dict[str, Any]:
    """``GET logged-models/<id>``."""
    db = _read(request)
    return {"model": logged_model_json(_logged_model(db, _model_id(request)))}


def finalize_logged_model(request: Request) -> dict[str, Any]:
    """``PATCH logged-models/<id>`` (its status)."""
    db = _write(request)
    row = _logged_model(db, _model_id(request))
    status = str(params(request).get("status") or "LOGGED_MODEL_READY")
    if status not in ("LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"):
        raise invalid(f"Invalid logged model status '{status}'")
    db.execute(sa.update(tables.logged_models).where(tables.logged_models.c.id == row.id)
               .values(status=status, updated_at=now_ms()))
    return {"model": logged_model_json(_logged_model(db, row.id))}


def delete_logged_model(request: Request) -> dict[str, Any]:
    """``DELETE logged-models/<id>``: the model and its artifacts (their blobs stay
    while a registered version links them)."""
    db = _write(request)
    row = _logged_model(db, _model_id(request))
    artifacts.release_owner(request, row.id)
    db.execute(sa.delete(tables.logged_models).where(tables.logged_models.c.id == row.id))
    audit_request(request, "mlflow.logged_model_deleted", "mlflow_logged_model", row.id)
    return {}


def set_logged_model_tags(request: Request) -> dict[str, Any]:
    """``PATCH logged-models/<id>/tags``."""
    db = _write(request)
    row = _logged_model(db, _model_id(request))
    tags = dict(row.tags or {})
    for tag in listed(params(request).get("tags")):
        tags[str(tag["key"])] = str(tag.get("value", ""))
    db.execute(sa.update(tables.logged_models).where(tables.logged_models.c.id == row.id)
               .values(tags=tags, updated_at=now_ms()))
    return {}


def delete_logged_model_tag(request: Request) -> dict[str, Any]:
    """``DELETE logged-models/<id>/tags/<key>``."""
    db = _write(request)
    row = _logged_model(db, _model_id(request))
    tags = dict(row.tags or {})
    tags.pop(request.matchdict["tag_key"], None)
    db.execute(sa.update(tables.logged_models).where(tables.logged_models.c.id == row.id)
               .values(tags=tags, updated_at=now_ms()))
    return {}


def log_logged_model_params(request: Request) -> dict[str, Any]:
    """``POST logged-models/<id>/params``."""
    db = _write(request)
    row = _logged_model(db, _model_id(request))
    stored = dict(row.params or {})
    for param in listed(params(request).get("params")):
        stored[str(param["key"])] = str(param.get("value", ""))
    db.execute(sa.update(tables.logged_models).where(tables.logged_models.c.id == row.id)
               .values(params=stored, updated_at=now_ms()))
    return {}


def _logged_field(doc: dict[str, Any], key: str) -> Any:
    kind, _, name = key.partition(".")
    if not name:
        kind, name = "attributes", key
    info = doc["info"]
    if kind in ("tags", "tag"):
        return next((t["value"] for t in info["tags"] if t["key"] == name), None)
    if kind in ("params", "param"):
        return next((p["value"] for p in doc["data"]["params"] if p["key"] == name), None)
    if kind in ("attributes", "attribute"):
        name = {"creation_time": "creation_timestamp_ms",
                "last_updated_timestamp": "last_updated_timestamp_ms"}.get(name, name)
        return info.get(name)
    raise invalid(f"Invalid logged model search key '{key}'")


def search_logged_models(request: Request) -> dict[str, Any]:
    """``POST logged-models/search`` (filter on attributes, tags and params)."""
    db = _read(request)
    values = params(request)
    ids = [int(str(e)) for e in listed(values.get("experiment_ids")) if str(e).isdigit()]
    clauses = parse_filter(values.get("filter"))
    query = sa.select(tables.logged_models)
    if ids:
        query = query.where(tables.logged_models.c.experiment_id.in_(ids))
    found = [logged_model_json(r) for r in db.execute(query).all()]
    found = [d for d in found if matches(clauses, lambda key, d=d: _logged_field(d, key))]
    keys = [f"{o.get('field_name')} {'ASC' if o.get('ascending', True) else 'DESC'}"
            for o in listed(values.get("order_by")) if isinstance(o, dict)]
    order(found, keys, _logged_field, ["creation_timestamp_ms DESC"])
    chunk, token = page(found, values, default=50, maximum=50000)
    return {"models": chunk, **({"next_page_token": token} if token else {})}


#: ``(path under /api/2.0/mlflow/, method, view)``.
ROUTES = [
    ("experiments/get", "GET", get_experiment),
    ("experiments/get-by-name", "GET", get_experiment_by_name),
    ("experiments/create", "POST", create_experiment),
    ("experiments/search", "POST", search_experiments),
    ("experiments/search", "GET", search_experiments),
    ("experiments/set-experiment-tag", "POST", set_experiment_tag),
    ("runs/create", "POST", create_run),
    ("runs/get", "GET", get_run),
    ("runs/update", "POST", update_run),
    ("runs/delete", "POST", delete_run),
    ("runs/restore", "POST", restore_run),
    ("runs/log-batch", "POST", log_batch),
    ("runs/log-metric", "POST", log_metric),
    ("runs/log-parameter", "POST", log_param),
    ("runs/set-tag", "POST", set_tag),
    ("runs/delete-tag", "POST", delete_tag),
    ("runs/log-inputs", "POST", log_inputs),
    ("runs/outputs", "POST", log_outputs),
    ("runs/search", "POST", search_runs),
    ("metrics/get-history", "GET", metric_history),
    ("logged-models", "POST", create_logged_model),
    ("logged-models/search", "POST", search_logged_models),
    ("logged-models/{model_id}", "GET", get_logged_model),
    ("logged-models/{model_id}", "PATCH", finalize_logged_model),
    ("logged-models/{model_id}", "DELETE", delete_logged_model),
    ("logged-models/{model_id}/tags", "PATCH", set_logged_model_tags),
    ("logged-models/{model_id}/tags/{tag_key}", "DELETE", delete_logged_model_tag),
    ("logged-models/{model_id}/params", "POST", log_logged_model_params),
]
