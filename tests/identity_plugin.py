"""A plugin on ``modelreg.api`` alone that exposes the identity, audit and alias parts of
``request.modelreg`` (docs/plugins.md, "The registry in a view") under ``/y``, for
tests/test_plugin_api_identity.py.  Errors keep the core's envelope."""

from __future__ import annotations

from typing import Any

from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from modelreg import api

PREFIX = "/y"
#: The views check nothing themselves: the facade refuses as the REST API does.
OPEN = NO_PERMISSION_REQUIRED


@api.api_view("y.whoami", "GET", permission=OPEN, tags=["y"], renderer="json")
def whoami(request: Any) -> dict[str, Any]:
    """The caller, as the facade sees it (``null`` when anonymous)."""
    return {"whoami": api.registry_of(request).whoami()}


@api.api_view("y.grants", "GET", permission=OPEN, tags=["y"], renderer="json")
def grants(request: Any) -> dict[str, Any]:
    """A principal's grants."""
    return {"grants": api.registry_of(request).grants_of(request.matchdict["principal"])}


@api.api_view("y.tokens", "POST", permission=OPEN, status=201, tags=["y"], renderer="json")
def create_token(request: Any) -> dict[str, Any]:
    """A token for a principal."""
    body = api.read_json_body(request)
    request.response.status_code = 201
    return api.registry_of(request).create_token(
        body["principal"], scopes=body.get("scopes", [api.READ]),
        expires_in_days=body.get("expires_in_days"), description=body.get("description", ""))


@api.api_view("y.token", "DELETE", permission=OPEN, tags=["y"], renderer="json")
def revoke_token(request: Any) -> dict[str, Any]:
    """Revoke a token by its public id."""
    return api.registry_of(request).revoke_token(request.matchdict["token_id"])


@api.api_view("y.audit", "GET", permission=OPEN, tags=["y"], renderer="json")
def audit(request: Any) -> dict[str, Any]:
    """The audit log, filtered by the query's ``action`` and ``model``."""
    return api.registry_of(request).audit(
        page_size=request.GET.get("page_size"), action=request.GET.get("action"),
        model=request.GET.get("model"))


@api.api_view("y.alias", "PUT", permission=OPEN, tags=["y"], renderer="json")
def set_alias(request: Any) -> dict[str, Any]:
    """Point an alias at a version."""
    md = request.matchdict
    alias, created = api.registry_of(request).set_alias(
        md["model"], md["alias"], api.read_json_body(request)["version"])
    return {"alias": alias, "created": created}


@api.api_view("y.alias", "DELETE", permission=OPEN, status=204, tags=["y"])
def delete_alias(request: Any) -> Response:
    """Delete an alias."""
    md = request.matchdict
    api.registry_of(request).delete_alias(md["model"], md["alias"])
    return Response(status=204)


@api.hookimpl
def modelreg_pyramid_configure(config: Any) -> None:
    """The routes under :data:`PREFIX`."""
    config.add_route("y.whoami", PREFIX + "/whoami")
    config.add_route("y.grants", PREFIX + "/grants/{principal}")
    config.add_route("y.tokens", PREFIX + "/tokens")
    config.add_route("y.token", PREFIX + "/tokens/{token_id}")
    config.add_route("y.audit", PREFIX + "/audit")
    config.add_route("y.alias", PREFIX + "/models/{model}/aliases/{alias}")
    config.scan(__name__)
