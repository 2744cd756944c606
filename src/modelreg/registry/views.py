"""REST views of models, versions, tags and aliases (``/api/v1``).

Views parse the request, call :class:`~modelreg.registry.services.RegistryService` and shape
the response; rules live in the service.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from .. import jobs
from ..names import check_alias
from ..openapi import Param, api_view, parse_body
from ..permissions import ADMIN, READ, WRITE
from ..plugin_api import require_alias_admin as require_protected_alias_admin
from ..security.policy import readable_models, require
from . import schemas

_LIST_PARAMS = (
    Param("filter", "Filter expression, e.g. name GLOB 'fraud-*' AND tag.team = 'risk'."),
    Param("order_by", "Sort field, optionally followed by asc or desc."),
    Param("page_size", "Items per page, 1 to 1000 (default 100).",
          {"type": "integer", "minimum": 1, "maximum": 1000}, errors=(422,)),
    Param("page_token", "The next_page_token of the previous page."),
)


def _no_content(request: Request) -> Response:
    return Response(status=204)


def _query(request: Request, name: str) -> str | None:
    return request.GET.get(name)


# ------------------------------------------------------------------------------- models


@api_view("api.models", "GET", permission=READ, response=schemas.ModelList, etag=True,
          read_only=True, params=_LIST_PARAMS, tags=["models"])
def list_models(request: Request) -> dict[str, Any]:
    """List and search the models the caller may read."""
    # The page depends on the caller's grants: caches keep one per Authorization.
    request.response.vary = ("Authorization",)
    models, token = request.registry_service.list_models(
        filter_text=_query(request, "filter"),
        order_by=_query(request, "order_by"),
        page_size=_query(request, "page_size"),
        page_token=_query(request, "page_token"),
        visible=readable_models(request),
    )
    return {"models": models, "next_page_token": token}


@api_view("api.models", "POST", permission=WRITE, body=schemas.ModelCreate,
          response=schemas.ModelOut, status=201, errors=(409, 413, 422), tags=["models"])
def create_model(request: Request) -> dict[str, Any]:
    """Create a model (needs write on the new name)."""
    body = parse_body(request, schemas.ModelCreate)
    require(request, WRITE, body.name)
    service = request.registry_service
    model = service.create_model(body.name, body.description, body.tags)
    request.response.status_code = 201
    request.response.location = request.route_url("api.model", model=model.name)
    return service.model_json(model, new=True)


@api_view("api.model", "GET", permission=READ, response=schemas.ModelOut, etag=True,
          read_only=True, tags=["models"])
def get_model(request: Request) -> dict[str, Any]:
    """Get a model."""
    service = request.registry_service
    return service.model_json(service.get_model(request.matchdict["model"]))


@api_view("api.model", "PATCH", permission=WRITE, body=schemas.ModelUpdate,
          response=schemas.ModelOut, errors=(409, 413, 422), tags=["models"])
def update_model(request: Request) -> dict[str, Any]:
    """Rename a model (needs admin on the old and the new name) or change its description."""
    body = parse_body(request, schemas.ModelUpdate)
    service = request.registry_service
    # Compared with the stored name, not the URL's: ``/models/Fraud`` finds ``fraud`` too, and
    # renaming it to ``Fraud`` (a case variant) is a rename all the same.
    if body.name is not None and body.name != service.get_model(request.matchdict["model"]).name:
        # Grants follow names: a rename moves the model out of some grants and into others.
        require(request, ADMIN, request.matchdict["model"])
        require(request, ADMIN, body.name)
    model = service.update_model(
        request.matchdict["model"], new_name=body.name, description=body.description
    )
    return service.model_json(model)


@api_view("api.model", "DELETE", permission=ADMIN, status=204, tags=["models"])
def delete_model(request: Request) -> Response:
    """Delete a model with all its versions and aliases."""
    request.registry_service.delete_model(request.matchdict["model"])
    return _no_content(request)


@api_view("api.model_tag", "PUT", permission=WRITE, body=schemas.TagSet,
          response=schemas.TagOut, errors=(413, 422), tags=["models"])
def set_model_tag(request: Request) -> dict[str, Any]:
    """Set a tag on a model."""
    body = parse_body(request, schemas.TagSet)
    key = request.matchdict["key"]
    request.registry_service.set_model_tag(request.matchdict["model"], key, body.value)
    return {"key": key, "value": body.value}


@api_view("api.model_tag", "DELETE", permission=WRITE, status=204, tags=["models"])
def delete_model_tag(request: Request) -> Response:
    """Delete a tag of a model."""
    request.registry_service.delete_model_tag(
        request.matchdict["model"], request.matchdict["key"]
    )
    return _no_content(request)


# ----------------------------------------------------------------------------- versions


@api_view("api.versions", "GET", permission=READ, response=schemas.VersionList, etag=True,
          read_only=True, params=_LIST_PARAMS, tags=["versions"])
def list_versions(request: Request) -> dict[str, Any]:
    """List and search the versions of a model (newest first by default)."""
    versions, token = request.registry_service.list_versions(
        request.matchdict["model"],
        filter_text=_query(request, "filter"),
        order_by=_query(request, "order_by"),
        page_size=_query(request, "page_size"),
        page_token=_query(request, "page_token"),
    )
    return {"versions": versions, "next_page_token": token}


@api_view("api.versions", "POST", permission=WRITE, body=schemas.VersionCreate,
          response=schemas.VersionOut, status=201, errors=(413, 422), tags=["versions"])
def create_version(request: Request) -> dict[str, Any]:
    """Create a draft version, numbered from the model's counter."""
    body = parse_body(request, schemas.VersionCreate)
    service = request.registry_service
    version = service.create_version(
        request.matchdict["model"],
        description=body.description,
        metadata=body.metadata,
        lineage=body.lineage.model_dump(exclude_none=True),
        tags=body.tags,
        alone=True,  # this request writes nothing else
    )
    request.response.status_code = 201
    request.response.location = request.route_url(
        "api.version", model=version.model.name, version=str(version.number)
    )
    return service.version_json(version)


@api_view("api.version", "GET", permission=READ, response=schemas.VersionOut, etag=True,
          read_only=True, tags=["versions"])
def get_version(request: Request) -> dict[str, Any]:
    """Get a version by number, alias, ``latest`` or ``sha256:<digest>``."""
    return request.registry_service.version_document(
        request.matchdict["model"], request.matchdict["version"]
    )


@api_view("api.version", "PATCH", permission=WRITE, body=schemas.VersionUpdate,
          response=schemas.VersionOut, errors=(409, 413, 422), tags=["versions"])
def update_version(request: Request) -> dict[str, Any]:
    """Change a version's description, or a draft's metadata and lineage."""
    body = parse_body(request, schemas.VersionUpdate)
    service = request.registry_service
    version = service.update_version(
        request.matchdict["model"],
        request.matchdict["version"],
        description=body.description,
        metadata=body.metadata,
        lineage=None if body.lineage is None else body.lineage.model_dump(exclude_none=True),
    )
    return service.version_json(version)


_DROP_ALIASES = Param(
    "drop_aliases",
    "Aliases that point at the version and are deleted with it, comma-separated (or the "
    "parameter repeated), e.g. champion,staging.  Without them, deleting a version an alias "
    "points at is 409 version_has_aliases.  A protected alias needs admin on the model.",
    errors=(422,),
)


def drop_aliases(request: Request) -> list[str]:
    """The alias names of ``?drop_aliases=`` (comma-separated, or repeated), each checked
    (422 ``invalid_alias``), without duplicates."""
    names: list[str] = []
    for value in request.GET.getall("drop_aliases"):
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(check_alias(name))
    return names


@api_view("api.version", "DELETE", permission=WRITE, status=204, errors=(403, 409, 422),
          params=(_DROP_ALIASES,), tags=["versions"])
def delete_version(request: Request) -> Response:
    """Delete a version (its number is never reused); the aliases pointing at it must be
    named in ``drop_aliases`` (they are deleted with it, as ``DELETE`` of each would)."""
    names = drop_aliases(request)
    for name in names:
        require_alias_admin(request, name)
    request.registry_service.delete_version(
        request.matchdict["model"], request.matchdict["version"], drop_aliases=names
    )
    return _no_content(request)


@api_view("api.version_finalize", "POST", permission=WRITE, response=schemas.FinalizeOut,
          also=(202,), errors=(409, 422), tags=["versions"])
def finalize_version(request: Request) -> dict[str, Any]:
    """Validate a draft and make it ready (immutable) or rejected (with its problems); 202
    while scanners run (``validating``), with a ``notice`` when no worker runs them."""
    service = request.registry_service
    version = service.finalize_version(request.matchdict["model"], request.matchdict["version"])
    document = service.version_json(version)
    if version.status == "validating":
        request.response.status_code = 202
        stale = jobs.stale_after(request.registry.settings)
        document["notice"] = jobs.no_worker_notice(request.dbsession, stale)
    return document


@api_view("api.version_tag", "PUT", permission=WRITE, body=schemas.TagSet,
          response=schemas.TagOut, errors=(413, 422), tags=["versions"])
def set_version_tag(request: Request) -> dict[str, Any]:
    """Set a tag on a version."""
    body = parse_body(request, schemas.TagSet)
    key = request.matchdict["key"]
    request.registry_service.set_version_tag(
        request.matchdict["model"], request.matchdict["version"], key, body.value,
        alone=True,  # this request writes nothing else
    )
    return {"key": key, "value": body.value}


@api_view("api.version_tag", "DELETE", permission=WRITE, status=204, errors=(422,),
          tags=["versions"])
def delete_version_tag(request: Request) -> Response:
    """Delete a tag of a version."""
    request.registry_service.delete_version_tag(
        request.matchdict["model"], request.matchdict["version"], request.matchdict["key"]
    )
    return _no_content(request)


# ------------------------------------------------------------------------------ aliases


def require_alias_admin(request: Request, alias: str | None = None) -> None:
    """Setting, moving or deleting a protected alias needs ``admin`` on the model
    (:func:`modelreg.plugin_api.require_alias_admin`, for the route's model and alias).

    :param alias: the alias (default: the one the route names).
    """
    require_protected_alias_admin(request, request.matchdict["model"],
                                  request.matchdict["alias"] if alias is None else alias)


@api_view("api.aliases", "GET", permission=READ, response=schemas.AliasList, etag=True,
          read_only=True, tags=["aliases"])
def list_aliases(request: Request) -> dict[str, Any]:
    """List the aliases of a model."""
    return {"aliases": request.registry_service.list_aliases(request.matchdict["model"])}


@api_view("api.alias", "GET", permission=READ, response=schemas.AliasOut, etag=True,
          read_only=True, tags=["aliases"])
def get_alias(request: Request) -> dict[str, Any]:
    """Resolve an alias to its version."""
    return request.registry_service.alias_document(
        request.matchdict["model"], request.matchdict["alias"]
    )


@api_view("api.alias", "PUT", permission=WRITE, body=schemas.AliasSet,
          response=schemas.AliasOut, also=(201,), errors=(409, 413, 422), tags=["aliases"])
def set_alias(request: Request) -> dict[str, Any]:
    """Point an alias at a ready version (create or move it); a protected alias needs admin
    on the model and a version carrying the tags it requires."""
    body = parse_body(request, schemas.AliasSet)
    require_alias_admin(request)
    service = request.registry_service
    alias, model, created = service.set_alias(
        request.matchdict["model"], request.matchdict["alias"], body.version
    )
    if created:
        request.response.status_code = 201
    return service.alias_json(alias, model)


@api_view("api.alias", "DELETE", permission=WRITE, status=204, tags=["aliases"])
def delete_alias(request: Request) -> Response:
    """Delete an alias (a protected one needs admin on the model)."""
    require_alias_admin(request)
    request.registry_service.delete_alias(request.matchdict["model"], request.matchdict["alias"])
    return _no_content(request)


@api_view("api.alias_history", "GET", permission=READ, response=schemas.AliasHistoryOut, etag=True,
          read_only=True, params=_LIST_PARAMS[2:], tags=["aliases"])
def alias_history(request: Request) -> dict[str, Any]:
    """The moves of an alias, newest first."""
    alias = request.matchdict["alias"]
    model, moves, token = request.registry_service.alias_history(
        request.matchdict["model"],
        alias,
        page_size=_query(request, "page_size"),
        page_token=_query(request, "page_token"),
    )
    return {"model": model.name, "alias": alias, "history": moves, "next_page_token": token}


def includeme(config: Configurator) -> None:
    """Routes of the registry API."""
    prefix = "/api/v1/models"
    config.add_route("api.models", prefix)
    config.add_route("api.model", prefix + "/{model}")
    config.add_route("api.model_tag", prefix + "/{model}/tags/{key}")
    config.add_route("api.versions", prefix + "/{model}/versions")
    config.add_route("api.version", prefix + "/{model}/versions/{version}")
    config.add_route("api.version_finalize", prefix + "/{model}/versions/{version}/finalize")
    config.add_route("api.version_tag", prefix + "/{model}/versions/{version}/tags/{key}")
    config.add_route("api.aliases", prefix + "/{model}/aliases")
    config.add_route("api.alias", prefix + "/{model}/aliases/{alias}")
    config.add_route("api.alias_history", prefix + "/{model}/aliases/{alias}/history")
    config.scan(".views")
