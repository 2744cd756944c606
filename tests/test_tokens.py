"""API tokens and principals through their life, and the admin API that manages them.

Every test runs on an app without anonymous access (``secure_app``), with a global admin's
token for the admin API.  Answers are checked against the OpenAPI document as everywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import sqlalchemy as sa

from helpers import API, error_code
from modelreg.models import ApiToken, AuditEvent, utcnow
from security_helpers import add_principal, bearer, public_id, session

ADMIN = f"{API}/admin"


@pytest.fixture
def admin(secure_app) -> str:
    """A global admin's token."""
    return add_principal(secure_app.app, "root", admin=True)


def _new_token(app, admin: str, principal: str, **body) -> dict:
    response = app.post_json(f"{ADMIN}/tokens", {"principal": principal, **body},
                             headers=bearer(admin), status=201)
    return response.json


def _refused(app, token: str, code: str, path: str = f"{API}/models") -> None:
    response = app.get(path, headers=bearer(token), status=401)
    assert error_code(response) == code
    assert response.content_type == "application/json"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="modelreg", error="invalid_token"'


# ------------------------------------------------------------------------------ tokens


def test_token_is_shown_once_and_only_its_hash_is_stored(secure_app, admin):
    secure_app.post_json(f"{ADMIN}/principals", {"name": "ci-bot", "kind": "service"},
                         headers=bearer(admin), status=201)
    response = secure_app.post_json(
        f"{ADMIN}/tokens", {"principal": "ci-bot", "scopes": ["read"], "description": "CI"},
        headers=bearer(admin), status=201,
    )
    created = response.json
    token = created["token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.location.endswith(f"{ADMIN}/tokens/{created['id']}")
    assert token.startswith(f"mr_{created['id']}_")
    secret = token.split("_", 2)[2]
    assert len(secret) >= 43  # 256 random bits, url-safe base64
    assert created["principal"] == "ci-bot" and created["scopes"] == ["read"]
    assert created["expires_at"] is None and created["revoked_at"] is None

    # Never again: not when reading it, not when listing.
    shown = secure_app.get(f"{ADMIN}/tokens/{created['id']}", headers=bearer(admin)).json
    assert "token" not in shown and secret not in str(shown)
    listed = secure_app.get(f"{ADMIN}/tokens", {"principal": "ci-bot"},
                            headers=bearer(admin)).json
    assert [t["id"] for t in listed["tokens"]] == [created["id"]]
    assert secret not in str(listed)

    # The row holds the sha256 of the secret and nowhere the secret itself; nor does the
    # audit log.
    with session(secure_app.app) as db:
        row = db.scalar(sa.select(ApiToken).where(ApiToken.public_id == created["id"]))
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        stored = [getattr(row, c.key) for c in ApiToken.__table__.columns]
        assert not any(secret in str(value) for value in stored)
        events = db.scalars(sa.select(AuditEvent)).all()
        assert not any(secret in str((e.before, e.after, e.target)) for e in events)

    # And it works.
    secure_app.get(f"{API}/models", headers=bearer(token), status=200)


def test_a_revoked_token_is_refused_at_once(secure_app, admin):
    add_principal(secure_app.app, "alice", grants=[("*", "read")])
    token = _new_token(secure_app, admin, "alice")["token"]
    secure_app.get(f"{API}/models", headers=bearer(token), status=200)
    revoked = secure_app.post(f"{ADMIN}/tokens/{public_id(token)}/revoke",
                              headers=bearer(admin), status=200).json
    assert revoked["revoked_at"] is not None
    _refused(secure_app, token, "token_revoked")
    # Revoking again changes nothing (and records nothing).
    again = secure_app.post(f"{ADMIN}/tokens/{public_id(token)}/revoke",
                            headers=bearer(admin), status=200).json
    assert again["revoked_at"] == revoked["revoked_at"]
    events = secure_app.get(f"{API}/audit", {"action": "token.revoked"},
                            headers=bearer(admin)).json["events"]
    assert [e["target"] for e in events] == [public_id(token)]


def test_an_expired_token_is_refused(secure_app, admin):
    add_principal(secure_app.app, "alice", grants=[("*", "read")])
    created = _new_token(secure_app, admin, "alice", expires_in_days=1)
    expires = dt.datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23) < expires.replace(tzinfo=None) - utcnow() <= dt.timedelta(1)
    secure_app.get(f"{API}/models", headers=bearer(created["token"]), status=200)
    with secure_app.app.registry["db_writer_engine"].begin() as conn:
        conn.execute(sa.update(ApiToken).where(ApiToken.public_id == created["id"])
                     .values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    _refused(secure_app, created["token"], "token_expired")


def test_a_disabled_principals_tokens_are_refused_until_enabled(secure_app, admin):
    token = add_principal(secure_app.app, "alice", grants=[("*", "write")])
    other = _new_token(secure_app, admin, "alice", scopes=["write"])["token"]
    secure_app.post_json(f"{API}/models", {"name": "m1"}, headers=bearer(token), status=201)
    body = secure_app.patch_json(f"{ADMIN}/principals/alice", {"disabled": True},
                                 headers=bearer(admin)).json
    assert body["disabled"] is True
    _refused(secure_app, token, "principal_disabled")
    _refused(secure_app, other, "principal_disabled", f"{API}/models/m1")
    # No new tokens for a disabled principal either.
    response = secure_app.post_json(f"{ADMIN}/tokens", {"principal": "alice"},
                                    headers=bearer(admin), status=409)
    assert error_code(response) == "principal_disabled"
    secure_app.patch_json(f"{ADMIN}/principals/alice", {"disabled": False},
                          headers=bearer(admin))
    secure_app.get(f"{API}/models/m1", headers=bearer(other), status=200)


def test_wrong_unknown_and_malformed_credentials_are_refused_alike(secure_app, admin):
    token = add_principal(secure_app.app, "alice")
    wrong_secret = token[: token.rindex("_") + 1] + "x" * 43
    unknown_id = "mr_0123456789abcdef_" + "x" * 43
    wrong = secure_app.get(f"{API}/models", headers=bearer(wrong_secret), status=401)
    unknown = secure_app.get(f"{API}/models", headers=bearer(unknown_id), status=401)
    # Whether the public id exists is not revealed.
    assert wrong.json == unknown.json
    assert error_code(wrong) == "invalid_token"
    for header in ("Bearer mr_nonsense", "Bearer mr_0123456789abcdef_"):
        response = secure_app.get(f"{API}/models", headers={"Authorization": header},
                                  status=401)
        assert error_code(response) == "malformed_token"
    response = secure_app.get(f"{API}/models", headers={"Authorization": "Basic YTpi"},
                              status=401)
    assert error_code(response) == "invalid_authorization"
    assert "invalid_request" in response.headers["WWW-Authenticate"]


def test_token_scopes_are_capped_by_the_principal_and_cap_it(secure_app, admin):
    wsgi = secure_app.app
    # A reader with a token scoped "admin" still only reads: scopes never add rights.
    reader = add_principal(wsgi, "reader", grants=[("fraud-*", "read")], scopes=["admin"])
    secure_app.post_json(f"{API}/models", {"name": "fraud-a"}, headers=bearer(admin),
                         status=201)
    secure_app.get(f"{API}/models/fraud-a", headers=bearer(reader), status=200)
    secure_app.patch_json(f"{API}/models/fraud-a", {"description": "x"},
                          headers=bearer(reader), status=403)
    secure_app.get(f"{ADMIN}/principals", headers=bearer(reader), status=403)
    # A global admin's token scoped "admin:fraud-*" administers those models only, and
    # is no key to the admin API.
    narrow = _new_token(secure_app, admin, "root", scopes=["admin:fraud-*"])["token"]
    secure_app.patch_json(f"{API}/models/fraud-a", {"description": "by narrow"},
                          headers=bearer(narrow), status=200)
    response = secure_app.post_json(f"{API}/models", {"name": "churn"},
                                    headers=bearer(narrow), status=403)
    assert error_code(response) == "token_scope"
    response = secure_app.get(f"{ADMIN}/principals", headers=bearer(narrow), status=403)
    assert error_code(response) == "token_scope"
    # Scopes are checked when the token is made.
    for scopes in (["delete"], ["read:bad/pattern"], []):
        response = secure_app.post_json(f"{ADMIN}/tokens",
                                        {"principal": "root", "scopes": scopes},
                                        headers=bearer(admin), status=422)
        assert error_code(response) in ("invalid_scope", "invalid_pattern", "invalid_body")


# ------------------------------------------------------------------------ the admin API


def test_admin_api_principals(secure_app, admin):
    response = secure_app.post_json(f"{ADMIN}/principals", {"name": "alice"},
                                    headers=bearer(admin), status=201)
    assert response.location.endswith(f"{ADMIN}/principals/alice")
    body = response.json
    assert {k: body[k] for k in ("name", "kind", "is_admin", "disabled", "groups")} == {
        "name": "alice", "kind": "user", "is_admin": False, "disabled": False, "groups": []}
    response = secure_app.post_json(f"{ADMIN}/principals", {"name": "alice"},
                                    headers=bearer(admin), status=409)
    assert error_code(response) == "principal_exists"
    for bad in ({"name": "Alice"}, {"name": "a b"}, {"name": "cli:x"}, {"name": "-x"}):
        response = secure_app.post_json(f"{ADMIN}/principals", bad, headers=bearer(admin),
                                        status=422)
        assert error_code(response) == "invalid_name"
    response = secure_app.post_json(f"{ADMIN}/principals", {"name": "bob", "kind": "robot"},
                                    headers=bearer(admin), status=422)
    assert error_code(response) == "invalid_body"
    secure_app.post_json(f"{ADMIN}/principals", {"name": "bot", "kind": "service"},
                         headers=bearer(admin), status=201)
    assert secure_app.get(f"{ADMIN}/principals/bot", headers=bearer(admin)).json["kind"] == \
        "service"
    response = secure_app.get(f"{ADMIN}/principals/nobody", headers=bearer(admin), status=404)
    assert error_code(response) == "principal_not_found"
    response = secure_app.patch_json(f"{ADMIN}/principals/nobody", {"disabled": True},
                                     headers=bearer(admin), status=404)
    assert error_code(response) == "principal_not_found"

    # Paging, by name.
    names, page = [], None
    while True:
        body = secure_app.get(f"{ADMIN}/principals",
                              {"page_size": "1", **({"page_token": page} if page else {})},
                              headers=bearer(admin)).json
        assert len(body["principals"]) <= 1
        names += [p["name"] for p in body["principals"]]
        page = body["next_page_token"]
        if page is None:
            break
    assert names == ["alice", "bot", "root"]

    # Making alice an admin opens the admin API to her (with an unrestricted token).
    alice = _new_token(secure_app, admin, "alice", scopes=["admin"])["token"]
    secure_app.get(f"{ADMIN}/principals", headers=bearer(alice), status=403)
    body = secure_app.patch_json(f"{ADMIN}/principals/alice", {"is_admin": True},
                                 headers=bearer(admin)).json
    assert body["is_admin"] is True
    secure_app.get(f"{ADMIN}/principals", headers=bearer(alice), status=200)


def test_admin_api_tokens(secure_app, admin):
    add_principal(secure_app.app, "alice")
    first = _new_token(secure_app, admin, "alice", scopes=["read", "write:fraud-*"],
                       description="laptop")
    assert first["scopes"] == ["read", "write:fraud-*"]
    assert first["description"] == "laptop"
    got = secure_app.get(f"{ADMIN}/tokens/{first['id']}", headers=bearer(admin)).json
    assert got == {k: v for k, v in first.items() if k != "token"}
    everyone = secure_app.get(f"{ADMIN}/tokens", headers=bearer(admin)).json["tokens"]
    assert {t["principal"] for t in everyone} == {"root", "alice"}
    alices = secure_app.get(f"{ADMIN}/tokens", {"principal": "alice"},
                            headers=bearer(admin)).json["tokens"]
    assert first["id"] in {t["id"] for t in alices}
    assert [t["id"] for t in alices] == [t["id"] for t in everyone if t["principal"] == "alice"]
    assert len(alices) == 2  # add_principal's and this one, oldest first
    for path, method in ((f"{ADMIN}/tokens/0123456789abcdef", "get"),
                         (f"{ADMIN}/tokens/0123456789abcdef/revoke", "post")):
        response = getattr(secure_app, method)(path, headers=bearer(admin), status=404)
        assert error_code(response) == "token_not_found"
    response = secure_app.post_json(f"{ADMIN}/tokens", {"principal": "nobody"},
                                    headers=bearer(admin), status=404)
    assert error_code(response) == "principal_not_found"
    response = secure_app.post_json(f"{ADMIN}/tokens",
                                    {"principal": "alice", "expires_in_days": 0},
                                    headers=bearer(admin), status=422)
    assert error_code(response) == "invalid_body"
    response = secure_app.get(f"{ADMIN}/tokens", {"principal": "nobody"},
                              headers=bearer(admin), status=404)
    assert error_code(response) == "principal_not_found"


def test_admin_api_groups(secure_app, admin):
    add_principal(secure_app.app, "alice")
    add_principal(secure_app.app, "bob")
    response = secure_app.post_json(f"{ADMIN}/groups", {"name": "risk"},
                                    headers=bearer(admin), status=201)
    assert response.location.endswith(f"{ADMIN}/groups/risk")
    assert response.json["members"] == []
    response = secure_app.post_json(f"{ADMIN}/groups", {"name": "risk"},
                                    headers=bearer(admin), status=409)
    assert error_code(response) == "group_exists"
    response = secure_app.post_json(f"{ADMIN}/groups", {"name": "Risk Team"},
                                    headers=bearer(admin), status=422)
    assert error_code(response) == "invalid_name"
    member = f"{ADMIN}/groups/risk/members"
    assert secure_app.put(f"{member}/bob", headers=bearer(admin), status=201).json[
        "members"] == ["bob"]
    assert secure_app.put(f"{member}/alice", headers=bearer(admin), status=201).json[
        "members"] == ["alice", "bob"]
    # Adding again is a no-op that says so with 200.
    secure_app.put(f"{member}/alice", headers=bearer(admin), status=200)
    assert secure_app.get(f"{ADMIN}/principals/alice", headers=bearer(admin)).json[
        "groups"] == ["risk"]
    secure_app.delete(f"{member}/alice", headers=bearer(admin), status=204)
    response = secure_app.delete(f"{member}/alice", headers=bearer(admin), status=404)
    assert error_code(response) == "member_not_found"
    response = secure_app.put(f"{ADMIN}/groups/nope/members/alice", headers=bearer(admin),
                              status=404)
    assert error_code(response) == "group_not_found"
    response = secure_app.put(f"{member}/nobody", headers=bearer(admin), status=404)
    assert error_code(response) == "principal_not_found"
    assert secure_app.get(f"{ADMIN}/groups/risk", headers=bearer(admin)).json["members"] == \
        ["bob"]
    listed = secure_app.get(f"{ADMIN}/groups", headers=bearer(admin)).json
    assert [(g["name"], g["members"]) for g in listed["groups"]] == [("risk", ["bob"])]


def test_admin_api_grants(secure_app, admin):
    add_principal(secure_app.app, "alice")
    secure_app.post_json(f"{ADMIN}/groups", {"name": "risk"}, headers=bearer(admin))
    response = secure_app.post_json(
        f"{ADMIN}/grants", {"principal": "alice", "pattern": "Fraud-*", "level": "write"},
        headers=bearer(admin), status=201,
    )
    grant = response.json
    assert response.location.endswith(f"{ADMIN}/grants/{grant['id']}")
    assert {k: grant[k] for k in ("principal", "group", "pattern", "level")} == {
        "principal": "alice", "group": None, "pattern": "fraud-*", "level": "write"}
    team = secure_app.post_json(f"{ADMIN}/grants",
                                {"group": "risk", "pattern": "fraud-*", "level": "read"},
                                headers=bearer(admin), status=201).json
    assert team["group"] == "risk" and team["principal"] is None
    response = secure_app.post_json(
        f"{ADMIN}/grants", {"principal": "alice", "pattern": "FRAUD-*", "level": "read"},
        headers=bearer(admin), status=409,
    )
    assert error_code(response) == "grant_exists"
    for bad in ({"principal": "alice", "group": "risk", "pattern": "x", "level": "read"},
                {"pattern": "x", "level": "read"},
                {"principal": "alice", "pattern": "x", "level": "owner"},
                {"principal": "alice", "pattern": "a/b", "level": "read"},
                {"principal": "alice", "pattern": "", "level": "read"}):
        response = secure_app.post_json(f"{ADMIN}/grants", bad, headers=bearer(admin),
                                        status=422)
        assert error_code(response) in ("invalid_body", "invalid_pattern"), bad
    listed = secure_app.get(f"{ADMIN}/grants", {"principal": "alice"},
                            headers=bearer(admin)).json["grants"]
    assert [g["id"] for g in listed] == [grant["id"]]
    listed = secure_app.get(f"{ADMIN}/grants", {"group": "risk"},
                            headers=bearer(admin)).json["grants"]
    assert [g["id"] for g in listed] == [team["id"]]
    assert secure_app.get(f"{ADMIN}/grants/{grant['id']}", headers=bearer(admin)).json == grant
    secure_app.delete(f"{ADMIN}/grants/{grant['id']}", headers=bearer(admin), status=204)
    for path in (f"{ADMIN}/grants/{grant['id']}", f"{ADMIN}/grants/not-a-number"):
        response = secure_app.get(path, headers=bearer(admin), status=404)
        assert error_code(response) == "grant_not_found"
    response = secure_app.delete(f"{ADMIN}/grants/{grant['id']}", headers=bearer(admin),
                                 status=404)
    assert error_code(response) == "grant_not_found"


# ------------------------------------------------------------------------------ whoami


def test_whoami_tells_the_caller_who_it_is(secure_app, admin):
    token = add_principal(secure_app.app, "ana", grants=[("fraud-*", "write")],
                          scopes=["write:fraud-*"])
    me = secure_app.get(f"{API}/whoami", headers=bearer(token)).json
    assert me == {"principal": "ana", "is_admin": False, "token": public_id(token),
                  "scopes": ["write:fraud-*"], "grants": [{"pattern": "fraud-*",
                                                           "level": "write"}],
                  "anonymous": "none"}
    root = secure_app.get(f"{API}/whoami", headers=bearer(admin)).json
    assert root["principal"] == "root" and root["is_admin"] is True
    nobody = secure_app.get(f"{API}/whoami").json
    assert nobody == {"principal": None, "is_admin": False, "token": None, "scopes": None,
                      "grants": [], "anonymous": "none"}
    _refused(secure_app, token + "x", "invalid_token", f"{API}/whoami")
