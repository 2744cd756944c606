"""A test plugin on ``modelreg.api`` alone for what importers and front-ends such as
modelreg-mlflow need beyond ``pluginapi_plugin``: rename, describe and delete models and
versions, create a version with a given number (importers), and turn a blob the plugin holds
into a version's file (see docs/plugins.md)."""

from __future__ import annotations

from typing import Any

from pyramid.response import Response

from modelreg import api

PREFIX = "/y"
OWNER = "y-plugin"


def _no_content() -> Response:
    return Response(status=204)


def create_version(request: Any) -> dict[str, Any]:
    """A draft, numbered as the body says (or by the counter)."""
    body = api.read_json_body(request)
    return api.registry_of(request).create_version(request.matchdict["model"],
                                                   number=body.get("number"))


def update_model(request: Any) -> dict[str, Any]:
    """Rename a model or change its description."""
    body = api.read_json_body(request)
    return api.registry_of(request).update_model(
        request.matchdict["model"], new_name=body.get("name"),
        description=body.get("description"))


def delete_model(request: Any) -> Response:
    """Delete a model."""
    api.registry_of(request).delete_model(request.matchdict["model"])
    return _no_content()


def update_version(request: Any) -> dict[str, Any]:
    """Change a version's description."""
    body = api.read_json_body(request)
    md = request.matchdict
    return api.registry_of(request).update_version(md["model"], md["version"],
                                                   description=body.get("description"))


def delete_version(request: Any) -> dict[str, Any]:
    """Delete a version with the aliases ``?drop=`` names."""
    md = request.matchdict
    drop = [a for a in request.GET.get("drop", "").split(",") if a]
    return {"dropped": api.registry_of(request).delete_version(md["model"], md["version"],
                                                               drop_aliases=drop)}


def put_held(request: Any) -> dict[str, Any]:
    """Store a blob held under the key (a streaming view)."""
    info = api.registry_of(request).store_blob(request.body_file,
                                               hold=(OWNER, request.matchdict["key"]))
    return {"sha256": info.sha256, "size": info.size}


def get_held(request: Any) -> Response:
    """The bytes of the blob held under the key."""
    with api.registry_of(request).open_held_blob(OWNER, request.matchdict["key"]) as stream:
        return Response(body=stream.read(), content_type="application/octet-stream")


def release_held(request: Any) -> dict[str, Any]:
    """Release the hold in a transaction of its own (a streaming view)."""
    return {"released": api.registry_of(request).release_blob_now(
        OWNER, request.matchdict["key"])}


def link_held(request: Any) -> dict[str, Any]:
    """Give a draft the held blob as the file ``?path=``."""
    md = request.matchdict
    file, created = api.registry_of(request).link_held_blob(
        md["model"], md["version"], request.GET["path"], OWNER, md["key"])
    return {"file": file, "created": created}


@api.hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """Routes under :data:`PREFIX`, every view needing ``read`` (the facade checks more)."""
    routes = [
        ("y.versions", "/models/{model}/versions", [("POST", create_version)]),
        ("y.model", "/models/{model}", [("PATCH", update_model), ("DELETE", delete_model)]),
        ("y.version", "/models/{model}/versions/{version}",
         [("PATCH", update_version), ("DELETE", delete_version)]),
        ("y.held", "/held/{key}", [("PUT", put_held), ("GET", get_held),
                                   ("DELETE", release_held)]),
        ("y.link", "/models/{model}/versions/{version}/held/{key}", [("POST", link_held)]),
    ]
    for name, pattern, views in routes:
        config.add_route(name, PREFIX + pattern)
        for method, view in views:
            config.add_view(view, route_name=name, request_method=method,
                            permission=api.READ,
                            renderer=None if view in (get_held, delete_model) else "json")
    api.add_streaming_view(config, "y.held", "PUT")
    api.add_streaming_view(config, "y.held", "DELETE")
