"""The audit log: every change of a scripted session, in order, with who, which token, from
where, on what, before and after; its filters and paging; who may read it; and that a
refused or failing request leaves no row (the event is written in the change's transaction).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import API, error_code
from modelreg.models import AuditEvent, Model, Principal
from modelreg.registry.services import RegistryService
from modelreg.security.services import SecurityService
from security_helpers import SETUP_ACTOR, add_principal, add_token, bearer, public_id

ADMIN = f"{API}/admin"
MODEL = f"{API}/models/fraud"
CLIENT = "192.0.2.7"
WEIGHTS, FIRST, SECOND = (hashlib.sha256(data).hexdigest()
                          for data in (b"weights", b"first", b"second"))


def _all_events(app, token: str, **params: str) -> list[dict[str, Any]]:
    """Every event matching ``params``, newest first, through every page."""
    events: list[dict[str, Any]] = []
    page = None
    while True:
        query = {**params, **({"page_token": page} if page else {})}
        body = app.get(f"{API}/audit", query, headers=bearer(token)).json
        events += body["events"]
        page = body["next_page_token"]
        if page is None:
            return events


@pytest.fixture
def session_log(secure_app) -> dict[str, Any]:
    """A scripted session: a writer works on a model, an admin on principals and the rest.

    Every request comes from :data:`CLIENT` and claims another address in
    ``X-Forwarded-For``, which the log must not believe.
    """
    wsgi = secure_app.app
    admin = add_principal(wsgi, "root", admin=True)
    writer = add_principal(wsgi, "writer", grants=[("fraud*", "admin")], scopes=["admin"])
    env = {"REMOTE_ADDR": CLIENT}
    as_admin = {**bearer(admin), "X-Forwarded-For": "203.0.113.99"}
    as_writer = {**bearer(writer), "X-Forwarded-For": "203.0.113.99"}

    def call(method: str, path: str, body: Any = None, *, who: dict[str, str] = as_writer,
             status: int | None = None) -> Any:
        kwargs: dict[str, Any] = {"headers": who, "extra_environ": env}
        if status is not None:
            kwargs["status"] = status
        if isinstance(body, bytes):
            kwargs["headers"] = {**who, "Content-Type": "application/octet-stream"}
            return getattr(secure_app, method)(path, body, **kwargs)
        if body is not None:
            return getattr(secure_app, method + "_json")(path, body, **kwargs)
        return getattr(secure_app, method)(path, **kwargs)

    call("post", f"{API}/models", {"name": "fraud", "description": "v0", "tags": {"a": "1"}})
    call("patch", MODEL, {"description": "v1"})
    call("put", f"{MODEL}/tags/team", {"value": "risk"})
    call("put", f"{MODEL}/tags/team", {"value": "fraud-ops"})
    call("delete", f"{MODEL}/tags/team")
    call("post", f"{MODEL}/versions", {"tags": {"stage": "dev"}})
    call("patch", f"{MODEL}/versions/1", {"description": "first"})
    call("put", f"{MODEL}/versions/1/tags/stage", {"value": "test"})
    call("delete", f"{MODEL}/versions/1/tags/stage")
    call("put", f"{MODEL}/versions/1/files/model.bin", b"weights")
    call("post", f"{MODEL}/versions/1/finalize")
    call("post", f"{MODEL}/versions", {})
    call("put", f"{MODEL}/aliases/champion", {"version": 1})
    call("put", f"{MODEL}/versions/2/files/model.bin", b"weights")
    call("post", f"{MODEL}/versions/2/finalize")
    call("put", f"{MODEL}/aliases/champion", {"version": 2})
    call("delete", f"{MODEL}/versions/2", status=409)  # an alias points at it: no event
    call("delete", f"{MODEL}/aliases/champion")
    call("post", f"{MODEL}/versions", {})
    call("put", f"{MODEL}/versions/3/files/a/b.txt", b"first")
    call("put", f"{MODEL}/versions/3/files/a/b.txt", b"second")
    call("delete", f"{MODEL}/versions/3/files/a/b.txt")
    call("delete", f"{MODEL}/versions/3")
    call("patch", MODEL, {"name": "fraud-scoring"})
    call("delete", f"{API}/models/fraud-scoring")
    # The admin's part.
    call("post", f"{ADMIN}/principals", {"name": "alice"}, who=as_admin)
    made = call("post", f"{ADMIN}/tokens", {"principal": "alice", "scopes": ["read"]},
                who=as_admin).json
    call("post", f"{ADMIN}/tokens/{made['id']}/revoke", who=as_admin)
    call("post", f"{ADMIN}/groups", {"name": "risk"}, who=as_admin)
    call("put", f"{ADMIN}/groups/risk/members/alice", who=as_admin)
    grant = call("post", f"{ADMIN}/grants", {"group": "risk", "pattern": "risk-*",
                                             "level": "write"}, who=as_admin).json
    call("delete", f"{ADMIN}/grants/{grant['id']}", who=as_admin)
    call("delete", f"{ADMIN}/groups/risk/members/alice", who=as_admin)
    call("patch", f"{ADMIN}/principals/alice", {"disabled": True}, who=as_admin)
    call("patch", f"{ADMIN}/principals/alice", {"is_admin": True}, who=as_admin)
    return {"admin": admin, "writer": writer, "alice_token": made["id"]}


def test_the_log_shows_every_change_of_a_session_in_order(secure_app, session_log):
    admin, writer = session_log["admin"], session_log["writer"]
    events = _all_events(secure_app, admin, page_size="7")[::-1]  # oldest first
    setup = [e for e in events if e["actor"] == SETUP_ACTOR]
    assert [e["action"] for e in setup] == ["principal.created", "token.created",
                                            "principal.created", "grant.created",
                                            "token.created"]
    session = [e for e in events if e["actor"] != SETUP_ACTOR]
    by_writer = ("writer", public_id(writer))
    by_admin = ("root", public_id(admin))
    alice_token = session_log["alice_token"]
    expected = [
        (by_writer, "model.created", "model", "fraud",
         None, {"description": "v0", "tags": {"a": "1"}}),
        (by_writer, "model.updated", "model", "fraud",
         {"name": "fraud", "description": "v0"}, {"name": "fraud", "description": "v1"}),
        (by_writer, "model.tag_set", "model_tag", "fraud:team", None, {"value": "risk"}),
        (by_writer, "model.tag_set", "model_tag", "fraud:team",
         {"value": "risk"}, {"value": "fraud-ops"}),
        (by_writer, "model.tag_deleted", "model_tag", "fraud:team",
         {"value": "fraud-ops"}, None),
        (by_writer, "version.created", "version", "fraud/1",
         None, {"number": 1, "tags": {"stage": "dev"}}),
        (by_writer, "version.updated", "version", "fraud/1", ..., ...),
        (by_writer, "version.tag_set", "version_tag", "fraud/1:stage",
         {"value": "dev"}, {"value": "test"}),
        (by_writer, "version.tag_deleted", "version_tag", "fraud/1:stage",
         {"value": "test"}, None),
        (by_writer, "file.added", "file", "fraud/1:model.bin", None, {"sha256": WEIGHTS,
                                                                      "size": 7}),
        (by_writer, "version.finalized", "version", "fraud/1", None, ...),
        (by_writer, "version.created", "version", "fraud/2", None, {"number": 2, "tags": {}}),
        (by_writer, "alias.set", "alias", "fraud@champion", None, {"version": 1}),
        (by_writer, "file.added", "file", "fraud/2:model.bin", None, ...),
        (by_writer, "version.finalized", "version", "fraud/2", None, ...),
        (by_writer, "alias.moved", "alias", "fraud@champion", {"version": 1}, {"version": 2}),
        (by_writer, "alias.deleted", "alias", "fraud@champion", {"version": 2}, None),
        (by_writer, "version.created", "version", "fraud/3", None, {"number": 3, "tags": {}}),
        (by_writer, "file.added", "file", "fraud/3:a/b.txt", None, {"sha256": FIRST,
                                                                    "size": 5}),
        (by_writer, "file.replaced", "file", "fraud/3:a/b.txt", {"sha256": FIRST, "size": 5},
         {"sha256": SECOND, "size": 6}),
        (by_writer, "file.deleted", "file", "fraud/3:a/b.txt", {"sha256": SECOND, "size": 6},
         None),
        (by_writer, "version.deleted", "version", "fraud/3",
         {"number": 3, "status": "draft"}, None),
        (by_writer, "model.renamed", "model", "fraud-scoring",
         {"name": "fraud", "description": "v1"}, {"name": "fraud-scoring", "description": "v1"}),
        (by_writer, "model.deleted", "model", "fraud-scoring",
         {"name": "fraud-scoring", "versions": 2}, None),
        (by_admin, "principal.created", "principal", "alice",
         None, {"kind": "user", "is_admin": False}),
        (by_admin, "token.created", "token", alice_token,
         None, {"principal": "alice", "scopes": "read", "expires_at": None}),
        (by_admin, "token.revoked", "token", alice_token, None, {"principal": "alice"}),
        (by_admin, "group.created", "group", "risk", None, None),
        (by_admin, "group.member_added", "group", "risk", None, {"member": "alice"}),
        (by_admin, "grant.created", "grant", "group:risk:risk-*", None, {"level": "write"}),
        (by_admin, "grant.deleted", "grant", "group:risk:risk-*", {"level": "write"}, None),
        (by_admin, "group.member_removed", "group", "risk", {"member": "alice"}, None),
        (by_admin, "principal.disabled", "principal", "alice",
         {"disabled": False, "is_admin": False}, {"disabled": True, "is_admin": False}),
        (by_admin, "principal.updated", "principal", "alice",
         {"disabled": True, "is_admin": False}, {"disabled": True, "is_admin": True}),
    ]
    assert len(session) == len(expected), [e["action"] for e in session]
    for event, (who, action, target_type, target, before, after) in zip(
        session, expected, strict=True
    ):
        got = ((event["actor"], event["token_id"]), event["action"], event["target_type"],
               event["target"])
        assert got == (who, action, target_type, target), event
        assert event["client_addr"] == CLIENT, event  # never the X-Forwarded-For claim
        if before is not ...:
            assert event["before"] == before, event
        if after is not ...:
            assert event["after"] == after, event
    finalized = [e for e in session if e["action"] == "version.finalized"]
    assert all(e["after"]["status"] == "ready" for e in finalized)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [e["at"] for e in events]
    assert times == sorted(times)


def test_filters_and_paging(secure_app, session_log):
    admin = session_log["admin"]
    everything = _all_events(secure_app, admin)

    def actions(**params: str) -> list[str]:
        return [e["action"] for e in _all_events(secure_app, admin, **params)]

    assert set(actions(actor="root")) == {
        "principal.created", "token.created", "token.revoked", "group.created",
        "group.member_added", "grant.created", "grant.deleted", "group.member_removed",
        "principal.disabled", "principal.updated"}
    assert actions(action="alias.moved") == ["alias.moved"]
    assert actions(action="version.created", actor="writer") == ["version.created"] * 3
    assert actions(actor="nobody") == []
    # target: a prefix; model: exactly that model and its parts; target_type: exact.
    assert set(actions(target="fraud@")) == {"alias.set", "alias.moved", "alias.deleted"}
    fraud = actions(model="fraud")
    assert "model.created" in fraud and "alias.moved" in fraud and "version.created" in fraud
    assert "model.renamed" not in fraud  # recorded under the new name
    assert actions(model="fraud-scoring") == ["model.deleted", "model.renamed"]
    assert actions(model="fraud/1") == []
    assert actions(model="alice") == []  # principals are not models
    assert actions(target_type="token") == ["token.revoked", "token.created"] + [
        "token.created"] * 2
    assert actions(target_type="version_tag") == ["version.tag_deleted", "version.tag_set"]
    assert actions(target_type="file", action="file.added") == ["file.added"] * 3
    # since / until: a half-open interval of time.
    middle = everything[len(everything) // 2]
    newer = _all_events(secure_app, admin, since=middle["at"])
    older = _all_events(secure_app, admin, until=middle["at"])
    assert middle in newer and middle not in older
    assert {e["id"] for e in newer} | {e["id"] for e in older} == {e["id"] for e in everything}
    assert all(e["at"] >= middle["at"] for e in newer)
    both = _all_events(secure_app, admin, since=older[0]["at"], until=middle["at"])
    assert both and all(older[0]["at"] <= e["at"] < middle["at"] for e in both)
    assert _all_events(secure_app, admin, since="2999-01-01T00:00:00+02:00") == []
    # Paging: pages of 4 add up to the whole log, newest first, without repeats.
    first = secure_app.get(f"{API}/audit", {"page_size": "4"}, headers=bearer(admin)).json
    assert [e["id"] for e in first["events"]] == [e["id"] for e in everything[:4]]
    paged = _all_events(secure_app, admin, page_size="4")
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    # Values that cannot be parsed are 400s, page sizes out of range 422s, with the field named.
    for params, code, status in (({"since": "yesterday"}, "invalid_timestamp", 400),
                                 ({"until": "2026-13-01"}, "invalid_timestamp", 400),
                                 ({"page_size": "0"}, "invalid_page_size", 422),
                                 ({"page_size": "100000"}, "invalid_page_size", 422),
                                 ({"page_token": "garbage"}, "invalid_page_token", 400)):
        response = secure_app.get(f"{API}/audit", params, headers=bearer(admin), status=status)
        assert error_code(response) == code
    # A page token belongs to its query.
    response = secure_app.get(f"{API}/audit", {"page_token": first["next_page_token"],
                                               "actor": "root"},
                              headers=bearer(admin), status=400)
    assert error_code(response)


def test_only_global_admins_read_the_log(secure_app):
    wsgi = secure_app.app
    add_principal(wsgi, "root", admin=True)
    narrow = add_token(wsgi, "root", ["read", "write"])
    model_admin = add_principal(wsgi, "owner", grants=[("*", "admin")])
    secure_app.get(f"{API}/audit", status=401)
    assert error_code(secure_app.get(f"{API}/audit", headers=bearer(model_admin),
                                     status=403)) == "forbidden"
    assert error_code(secure_app.get(f"{API}/audit", headers=bearer(narrow),
                                     status=403)) == "token_scope"


def _count(wsgi: Any, table: Any) -> int:
    with wsgi.registry["db_engine"].connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_refused_requests_leave_no_row(secure_app):
    wsgi = secure_app.app
    admin = add_principal(wsgi, "root", admin=True)
    reader = add_principal(wsgi, "reader", grants=[("fraud", "read")])
    secure_app.post_json(f"{API}/models", {"name": "fraud"}, headers=bearer(admin))
    before = _count(wsgi, AuditEvent)
    secure_app.post_json(f"{API}/models", {"name": "other"}, status=401)
    secure_app.patch_json(MODEL, {"description": "x"}, headers=bearer(reader), status=403)
    secure_app.delete(f"{API}/models/hidden", headers=bearer(reader), status=404)
    secure_app.post_json(f"{API}/models", {"name": "FRAUD"}, headers=bearer(admin),
                         status=409)
    secure_app.post_json(f"{API}/models", {"name": "bad name"}, headers=bearer(admin),
                         status=422)
    secure_app.post_json(f"{ADMIN}/principals", {"name": "x"}, headers=bearer(reader),
                         status=403)
    secure_app.post_json(f"{ADMIN}/principals", {"name": "root"}, headers=bearer(admin),
                         status=409)
    secure_app.get(f"{API}/models", headers=bearer("mr_0123456789abcdef_nope"), status=401)
    assert _count(wsgi, AuditEvent) == before


def test_a_failing_request_leaves_neither_change_nor_row(secure_app, monkeypatch):
    wsgi = secure_app.app
    admin = add_principal(wsgi, "root", admin=True)
    before = _count(wsgi, AuditEvent)
    models, principals = _count(wsgi, Model), _count(wsgi, Principal)

    def failing(original: Any) -> Any:
        def record(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)  # the event is written, then the change fails
            self.db.flush()
            raise RuntimeError("storage fell over")
        return record

    monkeypatch.setattr(RegistryService, "record", failing(RegistryService.record))
    monkeypatch.setattr(SecurityService, "record", failing(SecurityService.record))
    response = secure_app.post_json(f"{API}/models", {"name": "fraud"},
                                    headers=bearer(admin), status=500)
    assert error_code(response) == "internal_error"
    response = secure_app.post_json(f"{ADMIN}/principals", {"name": "alice"},
                                    headers=bearer(admin), status=500)
    assert error_code(response) == "internal_error"
    assert _count(wsgi, AuditEvent) == before
    assert (_count(wsgi, Model), _count(wsgi, Principal)) == (models, principals)
