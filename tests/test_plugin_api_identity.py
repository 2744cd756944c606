"""``request.modelreg``'s identity, audit and protected-alias paths, through a plugin on the
public API alone (tests/identity_plugin.py) in the real app: the facade refuses as the REST
API does (401 anonymous, 403 without the right), and what it does is what a client sees
there (tokens that work or stop working, grants, audit rows, aliases)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest

from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from security_helpers import add_principal, bearer
from test_plugin_imports import allowed, modelreg_imports

API = "/api/v1"
PLUGINS = (*CORE_PLUGINS, "identity_plugin")


def test_the_plugin_imports_only_the_public_api():
    path = Path(__file__).with_name("identity_plugin.py")
    assert {m for _, m in modelreg_imports(path)} == {"modelreg.api"}
    assert all(allowed(m) for _, m in modelreg_imports(path))


@pytest.fixture
def app(modelreg_settings, modelreg_database) -> Iterator[webtest.TestApp]:
    """The app with the plugin, no anonymous access, and ``prod`` a protected alias."""
    wsgi = make_app({**modelreg_settings, "modelreg.auth.anonymous": "none",
                     "modelreg.policy.protected_aliases": "prod"}, PLUGINS)
    yield webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(wsgi.registry["db_engine"])
    wsgi.registry["db_engine"].dispose()


@pytest.fixture
def people(app) -> dict[str, dict[str, str]]:
    """Headers of a global admin, of ``alice`` (write on ``fraud-*``), of ``bob`` (read on
    everything) and of no one."""
    return {
        "admin": bearer(add_principal(app.app, "root", admin=True)),
        "alice": bearer(add_principal(app.app, "alice", grants=[("fraud-*", "write")])),
        "bob": bearer(add_principal(app.app, "bob", grants=[("*", "read")])),
        "anonymous": {},
    }


def code(response: Any) -> str:
    return response.json["error"]["code"]


def test_whoami_grants_tokens_and_audit(app, people):
    admin, alice, bob = people["admin"], people["alice"], people["bob"]
    # whoami: the caller, None when anonymous, 401 for a token that is refused
    assert app.get("/y/whoami").json == {"whoami": None}
    me = app.get("/y/whoami", headers=alice).json["whoami"]
    assert me == {
        "name": "alice", "admin": False, "grants": [{"pattern": "fraud-*", "level": "write"}],
        # the token's scopes and id (tests/test_plugin_api_web.py covers them)
        "scopes": ["admin"], "token_id": me["token_id"]}
    assert app.get("/y/whoami", headers=admin).json["whoami"]["admin"] is True
    app.get("/y/whoami", headers=bearer("mr_not-a-token"), status=401)

    # grants_of: global admins only
    assert code(app.get("/y/grants/alice", status=401)) == "unauthorized"
    app.get("/y/grants/alice", headers=alice, status=403)
    grants = app.get("/y/grants/alice", headers=admin).json["grants"]
    assert [(g["principal"], g["pattern"], g["level"]) for g in grants] == [
        ("alice", "fraud-*", "write")]

    # create_token: for oneself, or by a global admin for anyone
    app.post_json("/y/tokens", {"principal": "alice"}, status=401)
    app.post_json("/y/tokens", {"principal": "bob"}, headers=alice, status=403)
    made = app.post_json("/y/tokens", {"principal": "alice", "scopes": ["read"],
                                       "description": "ci"}, headers=alice, status=201).json
    assert (made["principal"], made["scopes"], made["description"]) == ("alice", ["read"], "ci")
    assert made["token"].startswith("mr_") and made["revoked_at"] is None
    for_bob = app.post_json("/y/tokens", {"principal": "bob", "expires_in_days": 1},
                            headers=admin, status=201).json
    assert for_bob["principal"] == "bob" and for_bob["expires_at"] is not None
    # the new token works on the REST API, within its scope
    new = bearer(made["token"])
    app.get(f"{API}/models", headers=new, status=200)
    app.post_json(f"{API}/models", {"name": "fraud-x"}, headers=new, status=403)
    # a token cannot make a token with more than its own scopes (else a read token could
    # mint itself a write one through any plugin that offers token creation)
    for scopes in (["write"], ["admin"], ["read", "write:fraud-*"]):
        refused = app.post_json("/y/tokens", {"principal": "alice", "scopes": scopes},
                                headers=new, status=403)
        assert code(refused) == "token_scope" and "only 'read'" in refused.json["error"][
            "message"]
    narrowed = app.post_json("/y/tokens", {"principal": "alice", "scopes": ["read:fraud-*"]},
                             headers=new, status=201).json
    assert narrowed["scopes"] == ["read:fraud-*"]
    narrower = app.post_json("/y/tokens", {"principal": "alice", "scopes": ["read"]},
                             headers=new, status=201).json
    assert narrower["scopes"] == ["read"]

    # revoke_token: the token's principal, or a global admin
    app.delete(f"/y/tokens/{made['id']}", status=401)
    app.delete(f"/y/tokens/{made['id']}", headers=bob, status=403)
    app.get(f"{API}/models", headers=new, status=200)  # the refusals revoked nothing
    revoked = app.delete(f"/y/tokens/{made['id']}", headers=alice).json
    assert revoked["id"] == made["id"] and revoked["revoked_at"] is not None
    app.get(f"{API}/models", headers=new, status=401)
    app.delete(f"/y/tokens/{for_bob['id']}", headers=admin, status=200)
    app.get(f"{API}/models", headers=bearer(for_bob["token"]), status=401)
    assert code(app.delete("/y/tokens/tok_nope", headers=admin, status=404))

    # audit: global admins only; the facade's writes are there, with their actors
    app.get("/y/audit", status=401)
    app.get("/y/audit", headers=alice, status=403)
    created = app.get("/y/audit", params={"action": "token.created", "page_size": "100"},
                      headers=admin).json
    assert created["next_page_token"] is None
    rows = {(e["actor"], e["target"]) for e in created["events"]}
    assert {("alice", made["id"]), ("root", for_bob["id"])} <= rows
    events = app.get("/y/audit", params={"action": "token.revoked"}, headers=admin).json[
        "events"]
    assert sorted((e["actor"], e["target"]) for e in events) == sorted(
        [("alice", made["id"]), ("root", for_bob["id"])])


def ready_version(app, headers, model: str) -> None:
    app.post_json(f"{API}/models", {"name": model}, headers=headers, status=201)
    app.post_json(f"{API}/models/{model}/versions", {}, headers=headers, status=201)
    app.put(f"{API}/models/{model}/versions/1/files/w.bin", b"weights", headers={
        **headers, "Content-Type": "application/octet-stream"}, status=201)
    app.post(f"{API}/models/{model}/versions/1/finalize", headers=headers, status=200)


def aliases(app, headers, model: str) -> dict[str, int]:
    listed = app.get(f"{API}/models/{model}/aliases", headers=headers).json["aliases"]
    return {a["alias"]: a["version"] for a in listed}


def test_aliases_through_the_facade_and_the_protected_alias(app, people):
    admin, alice, bob = people["admin"], people["alice"], people["bob"]
    ready_version(app, admin, "fraud-a")
    url = "/y/models/fraud-a/aliases"
    # writers set ordinary aliases
    answer = app.put_json(f"{url}/staging", {"version": 1}, headers=alice).json
    assert answer["created"] is True
    assert answer["alias"] == app.get(f"{API}/models/fraud-a/aliases/staging",
                                      headers=bob).json
    assert (answer["alias"]["version"], answer["alias"]["updated_by"]) == (1, "alice")
    app.put_json(f"{url}/staging", {"version": 1}, status=401)
    app.put_json(f"{url}/staging", {"version": 1}, headers=bob, status=403)
    # a protected alias needs admin on the model
    refused = app.put_json(f"{url}/prod", {"version": 1}, headers=alice, status=403)
    assert code(refused) == "protected_alias"
    assert refused.json["error"]["details"]["alias"] == "prod"
    assert aliases(app, admin, "fraud-a") == {"staging": 1}
    assert app.put_json(f"{url}/prod", {"version": 1}, headers=admin).json["created"] is True
    assert code(app.delete(f"{url}/prod", headers=alice, status=403)) == "protected_alias"
    app.delete(f"{url}/staging", headers=bob, status=403)
    app.delete(f"{url}/staging", status=401)
    assert aliases(app, admin, "fraud-a") == {"prod": 1, "staging": 1}
    app.delete(f"{url}/staging", headers=alice, status=204)
    app.delete(f"{url}/prod", headers=admin, status=204)
    assert aliases(app, admin, "fraud-a") == {}
    # recorded as the REST API records them
    events = app.get(f"{API}/audit", params={"model": "fraud-a", "page_size": "100"},
                     headers=admin).json["events"]
    assert sorted((e["action"], e["actor"], e["target"]) for e in events
                  if e["action"].startswith("alias.")) == [
        ("alias.deleted", "alice", "fraud-a@staging"), ("alias.deleted", "root", "fraud-a@prod"),
        ("alias.set", "alice", "fraud-a@staging"), ("alias.set", "root", "fraud-a@prod")]
    history = app.get(f"{API}/models/fraud-a/aliases/prod/history", headers=bob).json
    assert [(m["from_version"], m["to_version"], m["actor"]) for m in history["history"]] == [
        (1, None, "root"), (None, 1, "root")]
