"""The public API a web UI needs (docs/plugins.md): ``TokenCredentials`` from
``modelreg_authenticate``, ``plugin_hooks`` and the ``Registry`` methods for pages
(``identify_token``, ``read_file``, ``version_sizes``, ``version_findings``, the admin
listings, ``whoami``'s scopes), and "not found" for a model the caller may not read."""

from __future__ import annotations

from typing import Any

import pytest
import webtest

from modelreg.api import (
    READ,
    ApiError,
    TokenCredentials,
    WebSection,
    hookimpl,
    plugin_hooks,
    registry_of,
)
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from security_helpers import add_principal, add_token, bearer, public_id, seed_model


class SessionPlugin:
    """Finds a token in ``X-Session-Token`` (as a UI finds one in its session) and serves
    ``/t/{name}`` calling one facade method, answering its result or its error as JSON."""

    @hookimpl
    def modelreg_authenticate(self, request: Any) -> TokenCredentials | None:
        token = request.headers.get("X-Session-Token")
        return TokenCredentials(token) if token else None

    @hookimpl
    def modelreg_web_sections(self, page: str, subject: dict[str, Any], request: Any
                              ) -> list[WebSection] | None:
        return [WebSection(title=f"on {page}", html="<p>x</p>")] if page == "t" else None

    @hookimpl
    def modelreg_pyramid_configure(self, config: Any) -> None:
        from pyramid.security import NO_PERMISSION_REQUIRED

        def view(request: Any) -> Any:
            registry = registry_of(request)
            calls = {
                "whoami": lambda: registry.whoami(),
                "identify": lambda: registry.identify_token(request.params["token"]),
                "readme": lambda: registry.read_file(
                    "fraud-detector", 1, "model.bin",
                    max_size=int(request.params.get("max", 100))).decode(),
                "sizes": lambda: {str(k): v for k, v in
                                  registry.version_sizes("fraud-detector", [1, 2, 3]).items()},
                "findings": lambda: registry.version_findings("fraud-detector", 1),
                "model": lambda: registry.get_model(request.params["name"]),
                "create": lambda: registry.create_model(request.params["name"]),
                "admin": lambda: {
                    "principals": [p["name"] for p in
                                   registry.list_principals()["principals"]],
                    "groups": registry.list_groups()["groups"],
                    "grants": [g["pattern"] for g in registry.list_grants()["grants"]]},
                "tokens": lambda: [t["id"] for t in
                                   registry.list_tokens(request.params["of"])["tokens"]],
                "grant": lambda: [
                    registry.create_principal("carol"),
                    g := registry.create_grant(pattern="churn-*", level="read",
                                               principal="carol"),
                    registry.delete_grant(g["id"]),
                    registry.list_grants(principal="carol")["grants"]][-1],
                "sections": lambda: [s.title for group in plugin_hooks(
                    request.registry).modelreg_web_sections(page="t", subject={},
                                                            request=request)
                                     for s in group or ()],
            }
            try:
                return {"result": calls[request.matchdict["name"]]()}
            except ApiError as exc:
                request.response.status_int = exc.status
                return {"code": exc.code}

        config.add_route("t", "/t/{name}")
        config.add_view(view, route_name="t", renderer="json",
                        permission=NO_PERMISSION_REQUIRED)


@pytest.fixture
def app(modelreg_settings: dict[str, Any]) -> Any:
    wsgi = make_app({**modelreg_settings, "modelreg.auth.anonymous": "none"},
                    (*CORE_PLUGINS, SessionPlugin()))
    seed_model(wsgi)
    yield wsgi
    clear_database(wsgi.registry["db_engine"])
    wsgi.registry["db_engine"].dispose()


def test_a_token_from_a_plugin_is_that_tokens_identity(app: Any) -> None:
    test = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    add_principal(app, "reader", grants=[("fraud-*", "write")], scopes=["write"])
    token = add_token(app, "reader", [READ])
    me = test.get("/t/whoami", headers={"X-Session-Token": token}).json["result"]
    assert me["name"] == "reader" and me["scopes"] == ["read"]
    assert me["token_id"] == public_id(token)
    # the token's scope caps the grant: the REST API refuses a write
    test.post_json("/api/v1/models/fraud-detector/versions", {},
                   headers={"X-Session-Token": token}, status=403)
    # revoked: refused with 401, as a bearer token
    admin = add_principal(app, "root", admin=True)
    test.post(f"/api/v1/admin/tokens/{public_id(token)}/revoke", headers=bearer(admin))
    assert test.get("/t/whoami", headers={"X-Session-Token": token},
                    status=401).json["code"] == "token_revoked"


def test_identify_token_checks_without_making_it_the_caller(app: Any) -> None:
    test = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    token = add_principal(app, "reader", grants=[("*", "read")], scopes=["read"])
    found = test.get("/t/identify", {"token": token}).json["result"]
    assert found["name"] == "reader" and found["scopes"] == ["read"]
    assert test.get("/t/whoami").json["result"] is None  # still anonymous
    assert test.get("/t/identify", {"token": "mr_x_y"}, status=401).json["code"] in (
        "invalid_token", "unauthorized", "malformed_token")


def test_page_methods_and_hidden_models(app: Any) -> None:
    test = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    reader = bearer(add_principal(app, "reader", grants=[("fraud-*", "read")],
                                  scopes=["read"]))
    assert test.get("/t/readme", headers=reader).json["result"] == "weights"
    assert test.get("/t/readme", {"max": 3}, headers=reader, status=413).json[
        "code"] == "file_too_large"
    assert test.get("/t/sizes", headers=reader).json["result"] == {
        "1": {"files": 1, "size": 7}, "2": {"files": 1, "size": 7}}
    assert test.get("/t/findings", headers=reader).json["result"] == []
    # a model the caller may not read does not exist; creating one is a plain 403
    hidden = test.get("/t/model", {"name": "secret"}, headers=reader, status=404)
    missing = test.get("/t/model", {"name": "nothing"}, headers=reader, status=404)
    assert hidden.json == missing.json == {"code": "model_not_found"}
    assert test.get("/t/create", {"name": "secret"}, headers=reader,
                    status=403).json["code"] in ("forbidden", "token_scope")
    # admin listings: global admins only
    assert test.get("/t/admin", headers=reader, status=403).status_int == 403
    admin = bearer(add_principal(app, "root", admin=True))
    listed = test.get("/t/admin", headers=admin).json["result"]
    assert listed["principals"] == ["reader", "root"] and listed["grants"] == ["fraud-*"]
    assert len(test.get("/t/tokens", {"of": "reader"}, headers=reader).json["result"]) == 1
    test.get("/t/tokens", {"of": "root"}, headers=reader, status=403)
    assert test.get("/t/sections").json["result"] == ["on t"]
    # admin changes: global admins only, audited
    test.get("/t/grant", headers=reader, status=403)
    assert test.get("/t/grant", headers=admin).json["result"] == []
    actions = [e["action"] for e in test.get("/api/v1/audit", headers=admin).json["events"]]
    assert {"principal.created", "grant.created", "grant.deleted"} <= set(actions)
