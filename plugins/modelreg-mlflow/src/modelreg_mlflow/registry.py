"""MLflow's model registry API (``/api/2.0/mlflow/registered-models/…`` and
``/api/2.0/mlflow/model-versions/…``) over modelreg's models, versions, tags and aliases.

Every call goes through ``request.modelreg`` (``modelreg.api.registry_of``): grants, audit,
events, alias history, validation and scanning apply as they do to the REST API.
"""

from __future__ import annotations

from typing import Any

from pyramid.request import Request

from modelreg.api import WRITE, ApiError, read_json_body, registry_of

from . import artifacts
from .protocol import (
    MlflowError,
    invalid,
    iso_ms,
    listed,
    matches,
    missing,
    order,
    page,
    params,
    parse_filter,
    required,
    tag_list,
)

#: Where a version's MLflow fields (source, run_id, model_id) live in its metadata.
META_KEY = "mlflow"

_STATUS = {"ready": "READY", "rejected": "FAILED_REGISTRATION",
           "validating": "PENDING_REGISTRATION", "draft": "PENDING_REGISTRATION"}
_STAGES = ("None", "Staging", "Production", "Archived")


def version_message(doc: dict[str, Any]) -> str:
    """Why a version is not ready, in one line (its problems, or its state)."""
    if doc["status"] == "rejected":
        problems = doc.get("problems") or []
        text = "; ".join(f"{p.get('code', '')}: {p.get('message', '')}" for p in problems)
        return f"rejected by the registry's validation or scan: {text}"
    if doc["status"] in ("validating", "draft"):
        return "being validated and scanned"
    return ""


def mlflow_version(doc: dict[str, Any]) -> dict[str, Any]:
    """A modelreg version document as MLflow's ``ModelVersion``."""
    meta = (doc.get("metadata") or {}).get(META_KEY) or {}
    body: dict[str, Any] = {
        "name": doc["model"],
        "version": str(doc["number"]),
        "creation_timestamp": iso_ms(doc["created_at"]),
        "last_updated_timestamp": iso_ms(doc["updated_at"]),
        "user_id": doc.get("created_by") or "",
        "current_stage": "None",
        "description": doc.get("description") or "",
        "source": meta.get("source") or artifacts.registered_uri(doc["model"], doc["number"]),
        "run_id": meta.get("run_id") or "",
        "status": _STATUS.get(doc["status"], "READY"),
        "status_message": version_message(doc),
        "tags": tag_list(doc.get("tags") or {}),
        "run_link": "",
        "aliases": sorted(doc.get("aliases") or []),
    }
    if meta.get("model_id"):
        body["model_id"] = meta["model_id"]
    return body


def mlflow_model(request: Request, doc: dict[str, Any], *, latest: bool = True
                 ) -> dict[str, Any]:
    """A modelreg model document as MLflow's ``RegisteredModel``."""
    body: dict[str, Any] = {
        "name": doc["name"],
        "creation_timestamp": iso_ms(doc["created_at"]),
        "last_updated_timestamp": iso_ms(doc["updated_at"]),
        "user_id": doc.get("created_by") or "",
        "description": doc.get("description") or "",
        "tags": tag_list(doc.get("tags") or {}),
        "aliases": [{"alias": name, "version": str(number)}
                    for name, number in sorted((doc.get("aliases") or {}).items())],
    }
    if latest:
        body["latest_versions"] = [mlflow_version(v) for v in _newest(request, doc["name"])]
    return body


def _newest(request: Request, name: str) -> list[dict[str, Any]]:
    """The newest version that is not a draft (a draft is an upload under way), if any."""
    found = registry_of(request).search_versions(name, page_size=20)["versions"]
    return [v for v in found if v["status"] != "draft"][:1]


def _version_number(values: dict[str, Any]) -> int:
    text = str(required(values, "version"))
    try:
        number = int(text)
    except ValueError:
        raise invalid(f"Parameter 'version' must be an integer, got '{text}'.") from None
    if number < 1:
        raise invalid(f"Parameter 'version' must be positive, got '{text}'.")
    return number


def _model_missing(name: str) -> MlflowError:
    return missing(f"Registered Model with name={name} not found")


def _get_model(request: Request, name: str) -> dict[str, Any]:
    try:
        return registry_of(request).get_model(name)
    except ApiError as error:
        if error.status == 404:
            raise _model_missing(name) from None
        raise


def _get_version(request: Request, name: str, number: int) -> dict[str, Any]:
    try:
        return registry_of(request).get_version(name, number)
    except ApiError as error:
        if error.status == 404 and error.code in ("version_not_found", "model_not_found"):
            raise missing(f"Model Version (name={name}, version={number}) not found") from None
        raise


# ------------------------------------------------------------------- registered models


def create_registered_model(request: Request) -> dict[str, Any]:
    """``POST registered-models/create``."""
    values = params(request)
    name = required(values, "name")
    tags = {t["key"]: str(t.get("value", "")) for t in listed(values.get("tags"))}
    try:
        doc = registry_of(request).create_model(
            name, description=values.get("description") or "", tags=tags)
    except ApiError as error:
        if error.code == "model_exists":
            raise MlflowError("RESOURCE_ALREADY_EXISTS",
                              f"Registered Model (name={name}) already exists.") from None
        raise
    return {"registered_model": mlflow_model(request, doc, latest=False)}


def get_registered_model(request: Request) -> dict[str, Any]:
    """``GET registered-models/get``."""
    name = required(params(request), "name")
    return {"registered_model": mlflow_model(request, _get_model(request, name))}


def rename_registered_model(request: Request) -> dict[str, Any]:
    """``POST registered-models/rename``."""
    values = params(request)
    name = required(values, "name")
    new_name = required(values, "new_name")
    _get_model(request, name)
    try:
        doc = registry_of(request).update_model(name, new_name=new_name)
    except ApiError as error:
        if error.code == "model_exists":
            raise MlflowError("RESOURCE_ALREADY_EXISTS",
                              f"Registered Model (name={new_name}) already exists.") from None
        raise
    return {"registered_model": mlflow_model(request, doc)}


def update_registered_model(request: Request) -> dict[str, Any]:
    """``PATCH registered-models/update`` (the description)."""
    values = params(request)
    name = required(values, "name")
    _get_model(request, name)
    doc = registry_of(request).update_model(name, description=values.get("description") or "")
    return {"registered_model": mlflow_model(request, doc)}


def delete_registered_model(request: Request) -> dict[str, Any]:
    """``DELETE registered-models/delete``."""
    name = required(params(request), "name")
    _get_model(request, name)
    registry_of(request).delete_model(name)
    return {}


def _model_field(doc: dict[str, Any], key: str) -> Any:
    if key == "name":
        return doc["name"]
    if key.startswith("tags.") or key.startswith("tag."):
        return (doc.get("tags") or {}).get(key.partition(".")[2])
    if key in ("timestamp", "creation_timestamp"):
        return iso_ms(doc["created_at"])
    if key == "last_updated_timestamp":
        return iso_ms(doc["updated_at"])
    raise invalid(f"Invalid attribute key '{key}' specified. Valid keys are "
                  "'name', 'tags.<key>', 'creation_timestamp', 'last_updated_timestamp'")


def _all_models(request: Request) -> list[dict[str, Any]]:
    """Every model the caller may read (the filter is MLflow's, applied here)."""
    facade = registry_of(request)
    found: list[dict[str, Any]] = []
    token = None
    while True:
        result = facade.search_models(page_size=500, page_token=token)
        found.extend(result["models"])
        token = result["next_page_token"]
        if not token:
            return found


def search_registered_models(request: Request) -> dict[str, Any]:
    """``GET registered-models/search``: MLflow's filter and ``order_by``, page tokens."""
    values = params(request)
    clauses = parse_filter(values.get("filter"))
    for key, _op, _value in clauses:
        _model_field({"name": "", "tags": {}, "created_at": None, "updated_at": None}, key)
    models = [m for m in _all_models(request)
              if matches(clauses, lambda key, m=m: _model_field(m, key))]
    order(models, listed(values.get("order_by")), _model_field, ["name ASC"])
    chunk, token = page(models, values)
    body: dict[str, Any] = {"registered_models": [mlflow_model(request, m) for m in chunk]}
    if token:
        body["next_page_token"] = token
    return body


def get_latest_versions(request: Request) -> dict[str, Any]:
    """``POST registered-models/get-latest-versions``: stages are gone in modelreg (as they
    are deprecated in MLflow); every version is in stage ``None``: the newest one."""
    values = params(request)
    name = required(values, "name")
    _get_model(request, name)
    stages = [str(s) for s in listed(values.get("stages"))]
    for stage in stages:
        if stage.capitalize() not in _STAGES:
            raise invalid(f"Invalid Model Version stage: {stage}.")
    if stages and "None" not in [s.capitalize() for s in stages]:
        return {"model_versions": []}
    return {"model_versions": [mlflow_version(v) for v in _newest(request, name)]}


def set_registered_model_tag(request: Request) -> dict[str, Any]:
    """``POST registered-models/set-tag``."""
    values = params(request)
    name = required(values, "name")
    key = required(values, "key")
    _get_model(request, name)
    registry_of(request).set_model_tag(name, key, str(values.get("value") or ""))
    return {}


def delete_registered_model_tag(request: Request) -> dict[str, Any]:
    """``DELETE registered-models/delete-tag`` (a missing key is no error, as in MLflow)."""
    values = params(request)
    name = required(values, "name")
    key = required(values, "key")
    _get_model(request, name)
    try:
        registry_of(request).delete_model_tag(name, key)
    except ApiError as error:
        if error.code != "tag_not_found":
            raise
    return {}


# --------------------------------------------------------------------------- aliases


def set_alias(request: Request) -> dict[str, Any]:
    """``POST registered-models/alias``."""
    values = params(request)
    name = required(values, "name")
    alias = required(values, "alias")
    number = _version_number(values)
    _get_version(request, name, number)
    registry_of(request).set_alias(name, alias, number)
    return {}


def delete_alias(request: Request) -> dict[str, Any]:
    """``DELETE registered-models/alias`` (a missing alias is no error, as in MLflow)."""
    values = params(request)
    name = required(values, "name")
    alias = required(values, "alias")
    _get_model(request, name)
    try:
        registry_of(request).delete_alias(name, alias)
    except ApiError as error:
        if error.code != "alias_not_found":
            raise
    return {}


def get_version_by_alias(request: Request) -> dict[str, Any]:
    """``GET registered-models/alias``."""
    values = params(request)
    name = required(values, "name")
    alias = required(values, "alias")
    _get_model(request, name)
    try:
        target = registry_of(request).get_alias(name, alias)
    except ApiError as error:
        if error.status == 404:
            raise missing(f"Registered model alias {alias} not found.") from None
        raise
    return {"model_version": mlflow_version(_get_version(request, name, target["version"]))}


# -------------------------------------------------------------------------- versions


def create_model_version(request: Request) -> dict[str, Any]:
    """``POST model-versions/create``: a version whose files are the artifacts ``source``
    names in this server (``runs:/…``, ``models:/<logged model>``, ``mlflow-artifacts:/…``),
    linked by digest, finalized at once (validation and scanning run)."""
    values = params(request)
    name = required(values, "name")
    source = required(values, "source")
    _get_model(request, name)
    facade = registry_of(request)
    facade.require(WRITE, name)
    registered = artifacts.registered_source(source)
    if registered is not None:
        return {"model_version": mlflow_version(
            _copy_version(request, name, source, registered, values))}
    prefix, found_run, model_id = artifacts.resolve_source(request, source, values)
    files = artifacts.files_under(request, prefix)
    if not files:
        raise invalid(f"Source '{source}' holds no files in this server: nothing to register")
    run_id = values.get("run_id") or found_run or ""
    meta = {META_KEY: {"source": source, "run_id": run_id,
                       **({"model_id": model_id} if model_id else {})}}
    tags = {t["key"]: str(t.get("value", "")) for t in listed(values.get("tags"))}
    doc = facade.create_version(name, description=values.get("description") or "",
                                metadata=meta, tags=tags)
    number = doc["number"]
    for relative, row in files:
        facade.link_held_blob(name, number, relative, artifacts.HOLD_OWNER,
                              artifacts.hold_key(row["path"]))
    doc = facade.finalize_version(name, number)
    return {"model_version": mlflow_version(doc)}


def _copy_version(request: Request, name: str, source: str, registered: tuple[str, str],
                  values: dict[str, Any]) -> dict[str, Any]:
    """A version whose files are those of a registered version (``models:/name/1``,
    ``models:/name@alias``: MLflow's ``copy_model_version``), linked by digest."""
    facade = registry_of(request)
    source_model, ref = registered
    try:
        origin = facade.get_version(source_model, ref)
    except ApiError as error:
        if error.status == 404:
            raise missing(f"Source '{source}' names no model version of this server") \
                from None
        raise
    if origin["status"] != "ready":
        raise invalid(f"Source '{source}' is not a ready model version")
    meta = (origin.get("metadata") or {}).get(META_KEY) or {}
    run_id = values.get("run_id") or meta.get("run_id") or ""
    tags = {t["key"]: str(t.get("value", "")) for t in listed(values.get("tags"))}
    doc = facade.create_version(
        name, description=values.get("description") or "", tags=tags,
        metadata={META_KEY: {"source": source, "run_id": run_id,
                             **({"model_id": meta["model_id"]} if meta.get("model_id")
                                else {})}})
    for file in facade.list_files(source_model, origin["number"]):
        facade.link_file(name, doc["number"], file["path"], file["sha256"],
                         media=file.get("media_type"))
    return facade.finalize_version(name, doc["number"])


def get_model_version(request: Request) -> dict[str, Any]:
    """``GET model-versions/get``."""
    values = params(request)
    name = required(values, "name")
    return {"model_version": mlflow_version(_get_version(request, name,
                                                          _version_number(values)))}


def update_model_version(request: Request) -> dict[str, Any]:
    """``PATCH model-versions/update`` (the description)."""
    values = params(request)
    name = required(values, "name")
    number = _version_number(values)
    _get_version(request, name, number)
    doc = registry_of(request).update_version(name, number,
                                              description=values.get("description") or "")
    return {"model_version": mlflow_version(doc)}


def delete_model_version(request: Request) -> dict[str, Any]:
    """``DELETE model-versions/delete``: the aliases on it go with it, as in MLflow."""
    values = params(request)
    name = required(values, "name")
    number = _version_number(values)
    doc = _get_version(request, name, number)
    registry_of(request).delete_version(name, number, drop_aliases=doc.get("aliases") or [])
    return {}


def transition_stage(request: Request) -> dict[str, Any]:
    """``POST model-versions/transition-stage``: stages are deprecated in MLflow and absent
    in modelreg: refused with a message pointing at aliases."""
    raise invalid("Model version stages are not supported by modelreg (they are deprecated "
                  "in MLflow): use aliases instead (set_registered_model_alias).")


def get_download_uri(request: Request) -> dict[str, Any]:
    """``GET model-versions/get-download-uri``: the version's files under this server's
    artifact proxy."""
    values = params(request)
    name = required(values, "name")
    number = _version_number(values)
    doc = _get_version(request, name, number)
    return {"artifact_uri": artifacts.registered_uri(doc["model"], doc["number"])}


def _version_field(doc: dict[str, Any], key: str) -> Any:
    meta = (doc.get("metadata") or {}).get(META_KEY) or {}
    if key == "name":
        return doc["model"]
    if key in ("version_number", "version"):
        return doc["number"]
    if key == "run_id":
        return meta.get("run_id")
    if key in ("source_path", "source"):
        return meta.get("source")
    if key == "model_id":
        return meta.get("model_id")
    if key.startswith("tags.") or key.startswith("tag."):
        return (doc.get("tags") or {}).get(key.partition(".")[2])
    if key in ("timestamp", "creation_timestamp"):
        return iso_ms(doc["created_at"])
    if key == "last_updated_timestamp":
        return iso_ms(doc["updated_at"])
    raise invalid(f"Invalid attribute key '{key}' specified. Valid keys are 'name', "
                  "'version_number', 'run_id', 'source_path', 'tags.<key>'")


def search_model_versions(request: Request) -> dict[str, Any]:
    """``GET model-versions/search``: MLflow's filter (``name = 'x'``, ``run_id``,
    ``tags.<key>``, ``version_number``...), ``order_by``, page tokens."""
    values = params(request)
    clauses = parse_filter(values.get("filter"))
    names = [v for k, op, v in clauses if k == "name" and op == "="]
    models = ([m for m in _all_models(request) if m["name"] in names] if names
              else _all_models(request))
    facade = registry_of(request)
    found: list[dict[str, Any]] = []
    for model in models:
        token = None
        while True:
            result = facade.search_versions(model["name"], page_size=500, page_token=token)
            found.extend(v for v in result["versions"] if v["status"] != "draft")
            token = result["next_page_token"]
            if not token:
                break
    found = [v for v in found if matches(clauses, lambda key, v=v: _version_field(v, key))]
    order(found, listed(values.get("order_by")), _version_field,
          ["last_updated_timestamp DESC", "name ASC", "version_number DESC"])
    chunk, token = page(found, values, default=10000, maximum=200000)
    body: dict[str, Any] = {"model_versions": [mlflow_version(v) for v in chunk]}
    if token:
        body["next_page_token"] = token
    return body


def set_model_version_tag(request: Request) -> dict[str, Any]:
    """``POST model-versions/set-tag``."""
    values = params(request)
    name = required(values, "name")
    number = _version_number(values)
    key = required(values, "key")
    _get_version(request, name, number)
    registry_of(request).set_version_tag(name, number, key, str(values.get("value") or ""))
    return {}


def delete_model_version_tag(request: Request) -> dict[str, Any]:
    """``DELETE model-versions/delete-tag`` (a missing key is no error)."""
    values = params(request)
    name = required(values, "name")
    number = _version_number(values)
    key = required(values, "key")
    _get_version(request, name, number)
    try:
        registry_of(request).delete_version_tag(name, number, key)
    except ApiError as error:
        if error.code != "tag_not_found":
            raise
    return {}


#: ``(path under /api/2.0/mlflow/, method, view)``.
ROUTES = [
    ("registered-models/create", "POST", create_registered_model),
    ("registered-models/get", "GET", get_registered_model),
    ("registered-models/rename", "POST", rename_registered_model),
    ("registered-models/update", "PATCH", update_registered_model),
    ("registered-models/delete", "DELETE", delete_registered_model),
    ("registered-models/search", "GET", search_registered_models),
    ("registered-models/get-latest-versions", "POST", get_latest_versions),
    ("registered-models/get-latest-versions", "GET", get_latest_versions),
    ("registered-models/set-tag", "POST", set_registered_model_tag),
    ("registered-models/delete-tag", "DELETE", delete_registered_model_tag),
    ("registered-models/alias", "POST", set_alias),
    ("registered-models/alias", "DELETE", delete_alias),
    ("registered-models/alias", "GET", get_version_by_alias),
    ("model-versions/create", "POST", create_model_version),
    ("model-versions/get", "GET", get_model_version),
    ("model-versions/update", "PATCH", update_model_version),
    ("model-versions/delete", "DELETE", delete_model_version),
    ("model-versions/transition-stage", "POST", transition_stage),
    ("model-versions/get-download-uri", "GET", get_download_uri),
    ("model-versions/search", "GET", search_model_versions),
    ("model-versions/set-tag", "POST", set_model_version_tag),
    ("model-versions/delete-tag", "DELETE", delete_model_version_tag),
]


def import_version(request: Request) -> dict[str, Any]:
    """``POST /api/v1/mlflow/import/models/{model}/versions``: a draft with the number the
    body gives (``modelreg import mlflow`` keeps MLflow's numbers; global admins only),
    ``description``, ``tags`` and MLflow's ``source``/``run_id`` in its metadata."""
    body = read_json_body(request)
    number = body.get("number")
    meta = {META_KEY: {k: str(body[k]) for k in ("source", "run_id", "model_id")
                       if body.get(k)}}
    doc = registry_of(request).create_version(
        request.matchdict["model"], number=number, description=str(body.get("description")
                                                                    or ""),
        tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()}, metadata=meta)
    request.response.status_code = 201
    return doc
