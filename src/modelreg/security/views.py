"""The admin API (``/api/v1/admin/...``) and the audit log (``/api/v1/audit``).

Every view here needs the ``admin`` permission on a route without a model, which only global
admins hold (with a token scoped ``admin``).
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from ..openapi import Param, api_view, parse_body
from ..permissions import ADMIN
from . import schemas
from .http import client_address
from .policy import caller_access
from .services import SecurityService

_PAGE_PARAMS = (
    Param("page_size", "Items per page, 1 to 1000 (default 100).",
          {"type": "integer", "minimum": 1, "maximum": 1000}, errors=(422,)),
    Param("page_token", "The next_page_token of the previous page."),
)


def security_service(request: Request) -> SecurityService:
    """The request's :class:`SecurityService` (``request.security_service``)."""
    identity = request.identity
    return SecurityService(
        request.dbsession,
        actor=request.authenticated_userid,
        token_id=identity.token_id if identity is not None else None,
        client_addr=client_address(request),
    )


def _query(request: Request, name: str) -> str | None:
    return request.GET.get(name) or None


def _page(request: Request) -> dict[str, str | None]:
    return {"page_size": request.GET.get("page_size"),
            "page_token": _query(request, "page_token")}


# --------------------------------------------------------------------------- principals


@api_view("api.admin.principals", "GET", permission=ADMIN, response=schemas.PrincipalList,
          params=_PAGE_PARAMS, tags=["admin"])
def list_principals(request: Request) -> dict[str, Any]:
    """List principals by name."""
    service = request.security_service
    rows, token = service.list_principals(**_page(request))
    return {"principals": [service.principal_json(p) for p in rows], "next_page_token": token}


@api_view("api.admin.principals", "POST", permission=ADMIN, body=schemas.PrincipalCreate,
          response=schemas.PrincipalOut, status=201, errors=(409, 413, 422), tags=["admin"])
def create_principal(request: Request) -> dict[str, Any]:
    """Create a principal (a user or a service account)."""
    body = parse_body(request, schemas.PrincipalCreate)
    service = request.security_service
    principal = service.create_principal(body.name, kind=body.kind, is_admin=body.is_admin)
    request.response.status_code = 201
    request.response.location = request.route_url("api.admin.principal",
                                                  principal=principal.name)
    return service.principal_json(principal)


@api_view("api.admin.principal", "GET", permission=ADMIN, response=schemas.PrincipalOut,
          tags=["admin"])
def get_principal(request: Request) -> dict[str, Any]:
    """Get a principal."""
    service = request.security_service
    return service.principal_json(service.get_principal(request.matchdict["principal"]))


@api_view("api.admin.principal", "PATCH", permission=ADMIN, body=schemas.PrincipalUpdate,
          response=schemas.PrincipalOut, errors=(413, 422), tags=["admin"])
def update_principal(request: Request) -> dict[str, Any]:
    """Disable or enable a principal, or make it a global admin or not."""
    body = parse_body(request, schemas.PrincipalUpdate)
    service = request.security_service
    principal = service.update_principal(
        request.matchdict["principal"], disabled=body.disabled, is_admin=body.is_admin
    )
    return service.principal_json(principal)


# ------------------------------------------------------------------------------- tokens


@api_view("api.admin.tokens", "GET", permission=ADMIN, response=schemas.TokenList,
          params=(Param("principal", "Only this principal's tokens."), *_PAGE_PARAMS),
          tags=["admin"])
def list_tokens(request: Request) -> dict[str, Any]:
    """List API tokens, oldest first (never their secrets)."""
    service = request.security_service
    rows, token = service.list_tokens(principal=_query(request, "principal"), **_page(request))
    return {"tokens": [service.token_json(t) for t in rows], "next_page_token": token}


@api_view("api.admin.tokens", "POST", permission=ADMIN, body=schemas.TokenCreate,
          response=schemas.TokenCreated, status=201, errors=(409, 413, 422), tags=["admin"])
def create_token(request: Request) -> dict[str, Any]:
    """Create an API token for a principal; the token is in this answer only."""
    body = parse_body(request, schemas.TokenCreate)
    service = request.security_service
    row, token = service.create_token(
        body.principal, scopes=body.scopes, expires_in_days=body.expires_in_days,
        description=body.description,
    )
    request.response.status_code = 201
    request.response.location = request.route_url("api.admin.token", token=row.public_id)
    request.response.cache_control = "no-store"
    return {**service.token_json(row), "token": token}


@api_view("api.admin.token", "GET", permission=ADMIN, response=schemas.TokenOut,
          tags=["admin"])
def get_token(request: Request) -> dict[str, Any]:
    """Get an API token by its public id (never its secret)."""
    service = request.security_service
    return service.token_json(service.get_token(request.matchdict["token"]))


@api_view("api.admin.token_revoke", "POST", permission=ADMIN, response=schemas.TokenOut,
          tags=["admin"])
def revoke_token(request: Request) -> dict[str, Any]:
    """Revoke an API token for good."""
    service = request.security_service
    return service.token_json(service.revoke_token(request.matchdict["token"]))


# ------------------------------------------------------------------------------- groups


@api_view("api.admin.groups", "GET", permission=ADMIN, response=schemas.GroupList,
          params=_PAGE_PARAMS, tags=["admin"])
def list_groups(request: Request) -> dict[str, Any]:
    """List groups by name, with their members."""
    service = request.security_service
    rows, token = service.list_groups(**_page(request))
    return {"groups": [service.group_json(g) for g in rows], "next_page_token": token}


@api_view("api.admin.groups", "POST", permission=ADMIN, body=schemas.GroupCreate,
          response=schemas.GroupOut, status=201, errors=(409, 413, 422), tags=["admin"])
def create_group(request: Request) -> dict[str, Any]:
    """Create a group."""
    body = parse_body(request, schemas.GroupCreate)
    service = request.security_service
    group = service.create_group(body.name)
    request.response.status_code = 201
    request.response.location = request.route_url("api.admin.group", group=group.name)
    return service.group_json(group)


@api_view("api.admin.group", "GET", permission=ADMIN, response=schemas.GroupOut,
          tags=["admin"])
def get_group(request: Request) -> dict[str, Any]:
    """Get a group with its members."""
    service = request.security_service
    return service.group_json(service.get_group(request.matchdict["group"]))


@api_view("api.admin.group_member", "PUT", permission=ADMIN, response=schemas.GroupOut,
          also=(201,), tags=["admin"])
def add_member(request: Request) -> dict[str, Any]:
    """Add a principal to a group."""
    service = request.security_service
    group, added = service.add_member(request.matchdict["group"],
                                      request.matchdict["principal"])
    if added:
        request.response.status_code = 201
    return service.group_json(group)


@api_view("api.admin.group_member", "DELETE", permission=ADMIN, status=204, tags=["admin"])
def remove_member(request: Request) -> Response:
    """Remove a principal from a group."""
    request.security_service.remove_member(request.matchdict["group"],
                                           request.matchdict["principal"])
    return Response(status=204)


# ------------------------------------------------------------------------------- grants


@api_view("api.admin.grants", "GET", permission=ADMIN, response=schemas.GrantList,
          params=(Param("principal", "Only this principal's grants."),
                  Param("group", "Only this group's grants."), *_PAGE_PARAMS),
          tags=["admin"])
def list_grants(request: Request) -> dict[str, Any]:
    """List grants, oldest first."""
    service = request.security_service
    rows, token = service.list_grants(principal=_query(request, "principal"),
                                      group=_query(request, "group"), **_page(request))
    return {"grants": [service.grant_json(g) for g in rows], "next_page_token": token}


@api_view("api.admin.grants", "POST", permission=ADMIN, body=schemas.GrantCreate,
          response=schemas.GrantOut, status=201, errors=(409, 413, 422), tags=["admin"])
def create_grant(request: Request) -> dict[str, Any]:
    """Grant a level on the models a pattern matches to a principal or a group."""
    body = parse_body(request, schemas.GrantCreate)
    service = request.security_service
    grant = service.create_grant(pattern=body.pattern, level=body.level,
                                 principal=body.principal, group=body.group)
    request.response.status_code = 201
    request.response.location = request.route_url("api.admin.grant", grant=str(grant.id))
    return service.grant_json(grant)


@api_view("api.admin.grant", "GET", permission=ADMIN, response=schemas.GrantOut,
          tags=["admin"])
def get_grant(request: Request) -> dict[str, Any]:
    """Get a grant."""
    service = request.security_service
    return service.grant_json(service.get_grant(request.matchdict["grant"]))


@api_view("api.admin.grant", "DELETE", permission=ADMIN, status=204, tags=["admin"])
def delete_grant(request: Request) -> Response:
    """Delete a grant."""
    request.security_service.delete_grant(request.matchdict["grant"])
    return Response(status=204)


# -------------------------------------------------------------------------------- audit


@api_view("api.audit", "GET", permission=ADMIN, response=schemas.AuditList,
          params=(
              Param("actor", "Only this actor's changes."),
              Param("action", "Only this action, e.g. model.created."),
              Param("target", "Only targets starting with this, e.g. fraud-detector."),
              Param("target_type", "Only targets of this type: model, version, alias, "
                    "principal, token..."),
              Param("model", "Only this model (exact name) and its versions, tags and "
                    "aliases."),
              Param("since", "Only changes at or after this ISO-8601 time."),
              Param("until", "Only changes before this ISO-8601 time."),
              *_PAGE_PARAMS,
          ),
          tags=["audit"])
def list_audit(request: Request) -> dict[str, Any]:
    """The audit log, newest first."""
    service = request.security_service
    rows, token = service.list_audit(
        actor=_query(request, "actor"),
        action=_query(request, "action"),
        target=_query(request, "target"),
        target_type=_query(request, "target_type"),
        model=_query(request, "model"),
        since=_query(request, "since"),
        until=_query(request, "until"),
        **_page(request),
    )
    return {"events": [service.audit_json(e) for e in rows], "next_page_token": token}


# ------------------------------------------------------------------------------ whoami


@api_view("api.whoami", "GET", permission=NO_PERMISSION_REQUIRED, response=schemas.WhoAmI,
          errors=(401, 429), tags=["security"])
def whoami(request: Request) -> dict[str, Any]:
    """Who the caller is: principal, token, scopes and grants (anonymous callers too)."""
    access = caller_access(request)
    identity = access.identity
    return {
        "principal": identity.name if identity else None,
        "is_admin": bool(identity and identity.is_admin),
        "token": identity.token_id if identity else None,
        "scopes": None if identity is None or identity.scopes is None
        else [str(scope) for scope in identity.scopes],
        "grants": [{"pattern": pattern, "level": level.label}
                   for pattern, level in (identity.grants if identity else ())],
        "anonymous": access.anonymous.label,
    }


def includeme(config: Configurator) -> None:
    """Routes of the admin API and the audit log, and ``request.security_service``."""
    config.add_request_method(security_service, "security_service", reify=True)
    admin = "/api/v1/admin"
    config.add_route("api.admin.principals", admin + "/principals")
    config.add_route("api.admin.principal", admin + "/principals/{principal}")
    config.add_route("api.admin.tokens", admin + "/tokens")
    config.add_route("api.admin.token", admin + "/tokens/{token}")
    config.add_route("api.admin.token_revoke", admin + "/tokens/{token}/revoke")
    config.add_route("api.admin.groups", admin + "/groups")
    config.add_route("api.admin.group", admin + "/groups/{group}")
    config.add_route("api.admin.group_member", admin + "/groups/{group}/members/{principal}")
    config.add_route("api.admin.grants", admin + "/grants")
    config.add_route("api.admin.grant", admin + "/grants/{grant}")
    config.add_route("api.audit", "/api/v1/audit")
    config.add_route("api.whoami", "/api/v1/whoami")
    config.scan(".views")
