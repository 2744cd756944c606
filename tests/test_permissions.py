"""Authorization: every operation of the OpenAPI document against every kind of caller.

The world of each test (on an app without anonymous access):

* ``fraud-detector`` with tag ``team``, ready version 1 (tag ``stage``, alias ``champion``)
  and draft version 2;
* ``outsider`` (no grants), ``reader`` (read on ``fraud-*``), ``writer`` (write on
  ``fraud-*``), ``model_admin`` (admin on exactly ``fraud-detector``), ``global_admin``, and
  ``read_token`` (a token of ``writer`` scoped ``read``);
* ``victim``, a principal with a token, a grant and a group (``team``) for the admin API to
  work on.

The expected answer comes from a table of levels written out by hand, not from the code
under test: allowed → a documented success status; anonymous → 401; may read the model but
not do this → 403; may not even read it → 404 (existence is not revealed); names from the
body (creating, renaming) and the admin API → 403.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

import pytest
import webtest
from pyramid.interfaces import IExceptionResponse
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.testing import DummyRequest

from helpers import API, error_code
from modelreg.config import configure
from modelreg.errors import ApiError
from modelreg.files.uploads import UploadService
from modelreg.interfaces import MIN_CHUNK_SIZE
from modelreg.metrics import MetricsTokenPredicate
from modelreg.testing import clear_database, make_app
from security_helpers import (
    add_principal,
    add_token,
    bearer,
    delete_models,
    public_id,
    security_service,
    seed_model,
)

ROLES = ("anonymous", "outsider", "reader", "writer", "model_admin", "global_admin",
         "read_token")
NONE, READ, WRITE, ADMIN = 0, 1, 2, 3
NEEDS = {"read": READ, "write": WRITE, "admin": ADMIN}

#: Each role's level on fraud-detector, and on the other fraud-* names used in bodies.
LEVELS = {
    "outsider": (NONE, NONE),
    "reader": (READ, READ),
    "writer": (WRITE, WRITE),
    "model_admin": (ADMIN, NONE),
    "global_admin": (ADMIN, ADMIN),
    "read_token": (READ, READ),
}

MODEL = f"{API}/models/fraud-detector"


@dataclass(frozen=True)
class Case:
    """One request: ``path`` is formatted with the world's ids; ``on`` says what it touches:

    ``model`` (the model in the path), ``new`` (a model name in the body), ``rename`` (admin
    on the path's model and on the new name), ``registry`` (no model), ``upload`` (the
    world's upload session, which only its owner ``writer`` may see) or ``public``.
    """

    method: str
    template: str
    path: str | None = None
    body: Any = None
    on: str = "model"
    need: str | None = None  # default: the operation's x-permission
    name: str = ""
    #: Statuses that count as allowed beside the operation's 2xx (the callers allowed get
    #: past authorization, then the request is refused for what the world lacks).
    allowed: tuple[int, ...] = ()

    def url(self, world: dict[str, Any]) -> str:
        return (self.path or self.template).format(**world)


CASES = [
    Case("GET", "/healthz", on="public"),
    Case("GET", "/readyz", on="public"),
    Case("GET", "/api/v1/openapi.json", on="public"),
    Case("GET", "/api/v1/whoami", on="public"),
    # models
    Case("GET", "/api/v1/models", on="registry"),
    Case("POST", "/api/v1/models", body={"name": "fraud-new"}, on="new"),
    Case("GET", "/api/v1/models/{model}", path=MODEL),
    Case("PATCH", "/api/v1/models/{model}", path=MODEL, body={"description": "changed"}),
    Case("PATCH", "/api/v1/models/{model}", path=MODEL, body={"name": "fraud-renamed"},
         on="rename", name="rename"),
    Case("DELETE", "/api/v1/models/{model}", path=MODEL),
    Case("PUT", "/api/v1/models/{model}/tags/{key}", path=MODEL + "/tags/team",
         body={"value": "fraud"}),
    Case("DELETE", "/api/v1/models/{model}/tags/{key}", path=MODEL + "/tags/team"),
    # versions
    Case("GET", "/api/v1/models/{model}/versions", path=MODEL + "/versions"),
    Case("POST", "/api/v1/models/{model}/versions", path=MODEL + "/versions", body={}),
    Case("GET", "/api/v1/models/{model}/versions/{version}", path=MODEL + "/versions/champion"),
    Case("PATCH", "/api/v1/models/{model}/versions/{version}", path=MODEL + "/versions/1",
         body={"description": "changed"}),
    Case("DELETE", "/api/v1/models/{model}/versions/{version}", path=MODEL + "/versions/2"),
    Case("POST", "/api/v1/models/{model}/versions/{version}/finalize",
         path=MODEL + "/versions/2/finalize"),
    Case("GET", "/api/v1/models/{model}/versions/{version}/findings",
         path=MODEL + "/versions/champion/findings"),
    Case("PUT", "/api/v1/models/{model}/versions/{version}/tags/{key}",
         path=MODEL + "/versions/1/tags/stage", body={"value": "prod2"}),
    Case("DELETE", "/api/v1/models/{model}/versions/{version}/tags/{key}",
         path=MODEL + "/versions/1/tags/stage"),
    # files and upload sessions (the session of the world is writer's)
    Case("GET", "/api/v1/models/{model}/versions/{version}/files",
         path=MODEL + "/versions/1/files"),
    # linking content by digest: everyone who may write the model may read the version
    # holding it; content hidden from the caller is tested in test_files_links
    Case("POST", "/api/v1/models/{model}/versions/{version}/files",
         path=MODEL + "/versions/2/files",
         body={"path": "linked.bin", "digest": "sha256:" + hashlib.sha256(b"weights").hexdigest()}),
    Case("GET", "/api/v1/models/{model}/versions/{version}/files/{path}",
         path=MODEL + "/versions/champion/files/model.bin"),
    Case("PUT", "/api/v1/models/{model}/versions/{version}/files/{path}",
         path=MODEL + "/versions/2/files/dir/new.bin", body=b"new weights"),
    Case("DELETE", "/api/v1/models/{model}/versions/{version}/files/{path}",
         path=MODEL + "/versions/2/files/draft.bin"),
    Case("POST", "/api/v1/models/{model}/versions/{version}/uploads",
         path=MODEL + "/versions/2/uploads", body={"path": "big.bin"}),
    Case("GET", "/api/v1/uploads/{upload}", path="/api/v1/uploads/{upload}", on="upload"),
    Case("PATCH", "/api/v1/uploads/{upload}", path="/api/v1/uploads/{upload}",
         body=b"a chunk", on="upload"),
    Case("PUT", "/api/v1/uploads/{upload}",
         path="/api/v1/uploads/{upload}?digest=sha256:" + hashlib.sha256(b"").hexdigest(),
         on="upload"),
    Case("DELETE", "/api/v1/uploads/{upload}", path="/api/v1/uploads/{upload}", on="upload"),
    Case("PUT", "/api/v1/uploads/{upload}/parts/{number}",
         path="/api/v1/uploads/{parts_upload}/parts/1?digest=sha256:"
         + hashlib.sha256(b"a chunk").hexdigest(), body=b"a chunk", on="upload"),
    Case("DELETE", "/api/v1/uploads/{upload}/parts/{number}",
         path="/api/v1/uploads/{parts_upload}/parts/1", on="upload"),
    # The world's store is local: no direct uploads, so its owner gets 409 upload_mode.
    Case("POST", "/api/v1/uploads/{upload}/parts/{number}/url",
         path="/api/v1/uploads/{parts_upload}/parts/1/url",
         body={"digest": "sha256:" + hashlib.sha256(b"a chunk").hexdigest()}, on="upload",
         allowed=(409,)),
    # aliases
    Case("GET", "/api/v1/models/{model}/aliases", path=MODEL + "/aliases"),
    Case("GET", "/api/v1/models/{model}/aliases/{alias}", path=MODEL + "/aliases/champion"),
    Case("PUT", "/api/v1/models/{model}/aliases/{alias}", path=MODEL + "/aliases/staging",
         body={"version": 1}),
    Case("DELETE", "/api/v1/models/{model}/aliases/{alias}", path=MODEL + "/aliases/champion"),
    Case("GET", "/api/v1/models/{model}/aliases/{alias}/history",
         path=MODEL + "/aliases/champion/history"),
    # the admin API
    Case("GET", "/api/v1/admin/principals", on="registry"),
    Case("POST", "/api/v1/admin/principals", body={"name": "newcomer"}, on="registry"),
    Case("GET", "/api/v1/admin/principals/{principal}",
         path="/api/v1/admin/principals/victim", on="registry"),
    Case("PATCH", "/api/v1/admin/principals/{principal}",
         path="/api/v1/admin/principals/victim", body={"disabled": True}, on="registry"),
    Case("GET", "/api/v1/admin/tokens", on="registry"),
    Case("POST", "/api/v1/admin/tokens", body={"principal": "victim"}, on="registry"),
    Case("GET", "/api/v1/admin/tokens/{token}", path="/api/v1/admin/tokens/{victim_token}",
         on="registry"),
    Case("POST", "/api/v1/admin/tokens/{token}/revoke",
         path="/api/v1/admin/tokens/{victim_token}/revoke", on="registry"),
    Case("GET", "/api/v1/admin/groups", on="registry"),
    Case("POST", "/api/v1/admin/groups", body={"name": "newgroup"}, on="registry"),
    Case("GET", "/api/v1/admin/groups/{group}", path="/api/v1/admin/groups/team",
         on="registry"),
    Case("PUT", "/api/v1/admin/groups/{group}/members/{principal}",
         path="/api/v1/admin/groups/team/members/outsider", on="registry"),
    Case("DELETE", "/api/v1/admin/groups/{group}/members/{principal}",
         path="/api/v1/admin/groups/team/members/victim", on="registry"),
    Case("GET", "/api/v1/admin/grants", on="registry"),
    Case("POST", "/api/v1/admin/grants",
         body={"principal": "victim", "pattern": "new-*", "level": "read"}, on="registry"),
    Case("GET", "/api/v1/admin/grants/{grant}", path="/api/v1/admin/grants/{victim_grant}",
         on="registry"),
    Case("DELETE", "/api/v1/admin/grants/{grant}", path="/api/v1/admin/grants/{victim_grant}",
         on="registry"),
    Case("GET", "/api/v1/audit", on="registry"),
]


def expected(case: Case, permission: str, role: str) -> int | str:
    """``"ok"`` or the error status ``role`` must get for ``case``."""
    if case.on == "public":
        return "ok"
    if role == "anonymous":
        return 401
    need = NEEDS[case.need or permission]
    on_model, on_other = LEVELS[role]
    if case.on == "upload":  # another principal's session does not exist for the caller
        if role not in ("writer", "read_token"):
            return 404
        return "ok" if on_model >= need else 403
    if case.on == "model":
        if on_model >= need:
            return "ok"
        return 403 if on_model >= READ else 404
    if case.on == "rename":  # write on the path's model to get in, then admin on both names
        if on_model < READ:
            return 404
        return "ok" if on_model >= ADMIN and on_other >= ADMIN else 403
    if case.on == "new":
        return "ok" if on_other >= need else 403
    # No model: admin is the global admins'; reading the list is anyone's (it is filtered).
    if need == ADMIN:
        return "ok" if role == "global_admin" else 403
    return "ok"


@pytest.fixture
def world(secure_app) -> dict[str, Any]:
    """The principals and the model described in the module's docstring; their tokens."""
    wsgi = secure_app.app
    tokens = {"anonymous": None}
    tokens["outsider"] = add_principal(wsgi, "outsider")
    tokens["reader"] = add_principal(wsgi, "reader", grants=[("fraud-*", "read")])
    tokens["writer"] = add_principal(wsgi, "writer", grants=[("fraud-*", "write")])
    tokens["model_admin"] = add_principal(wsgi, "model-admin",
                                          grants=[("fraud-detector", "admin")])
    tokens["global_admin"] = add_principal(wsgi, "global-admin", admin=True)
    tokens["read_token"] = add_token(wsgi, "writer", ["read"])
    victim = add_principal(wsgi, "victim", grants=[("victim-*", "read")], scopes=["read"])
    with security_service(wsgi) as security:
        security.create_group("team")
        security.add_member("team", "victim")
        (grant,), _ = security.list_grants(principal="victim")
        grant_id = grant.id
    seed_model(wsgi)
    return {"tokens": tokens, "victim_token": public_id(victim), "victim_grant": grant_id,
            "upload": open_upload(wsgi), "parts_upload": open_upload(wsgi, parts=True)}


def open_upload(wsgi_app: Any, *, parts: bool = False) -> str:
    """An upload session of ``writer`` for ``big.bin`` of draft 2 (in sequential chunks, or
    in numbered parts holding its part 1, ``a chunk``); its public id."""
    registry = wsgi_app.registry
    service = UploadService(registry, registry["modelreg.blob_store"],
                            registry["modelreg.plugin_manager"].hook, actor="writer")
    if not parts:
        return service.open("fraud-detector", "2", path="big.bin", owner="writer"
                            ).upload.public_id
    upload_id = service.open("fraud-detector", "2", path="parts.bin", owner="writer", size=7,
                             part_size=MIN_CHUNK_SIZE).upload.public_id
    service.put_part(upload_id, 1, io.BytesIO(b"a chunk"), 7,
                     sha256=hashlib.sha256(b"a chunk").hexdigest())
    return upload_id


def _send(app, case: Case, url: str, token: str | None) -> webtest.TestResponse:
    headers = bearer(token) if token else {}
    method = case.method.lower()
    if isinstance(case.body, bytes):
        return getattr(app, method)(url, case.body, headers=headers, expect_errors=True,
                                    content_type="application/octet-stream")
    if case.body is not None:
        return getattr(app, method + "_json")(url, case.body, headers=headers,
                                              expect_errors=True)
    return getattr(app, method)(url, headers=headers, expect_errors=True)


def test_every_operation_has_a_case(testapp):
    document = testapp.get("/api/v1/openapi.json").json
    operations = {(method.upper(), path) for path, methods in document["paths"].items()
                  for method in methods}
    covered = {(case.method, case.template) for case in CASES}
    assert operations - covered == set(), "operations without a permission case"
    assert covered - operations == set(), "cases of operations that do not exist"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.template} {c.name}")
def test_permission_matrix(secure_app, world, case, openapi_checker):
    operation = openapi_checker.operation(case.url(world), case.method)
    assert operation is not None
    permission = operation["x-permission"]
    successes = {int(status) for status in operation["responses"] if status.startswith("2")}
    mutates = case.method not in ("GET", "HEAD")
    wrong = []
    for role in ROLES:
        want = expected(case, permission, role)
        response = _send(secure_app, case, case.url(world), world["tokens"][role])
        got = response.status_int
        if want == "ok":
            if got not in successes | set(case.allowed):
                wrong.append(f"{role}: expected success {sorted(successes)}, got {got} "
                             f"{response.text[:200]}")
            elif mutates and case.on in ("model", "new", "rename", "upload"):
                delete_models(secure_app.app)  # the next allowed role finds the same world
                seed_model(secure_app.app)
                world["upload"] = open_upload(secure_app.app)
                world["parts_upload"] = open_upload(secure_app.app, parts=True)
        elif got != want:
            wrong.append(f"{role}: expected {want}, got {got} {response.text[:200]}")
        elif want == 404:
            expected_code = "upload_not_found" if case.on == "upload" else "model_not_found"
            assert error_code(response) == expected_code, response.text
        elif want == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not wrong, f"{case.method} {case.url(world)} ({permission}):\n" + "\n".join(wrong)


# ----------------------------------------------------------------------- listing and more


def _create(app, token: str, name: str, status: int = 201) -> Any:
    return app.post_json(f"{API}/models", {"name": name}, headers=bearer(token), status=status)


def _names(app, token: str | None, **params: str) -> list[str]:
    headers = bearer(token) if token else {}
    names: list[str] = []
    page = None
    while True:
        query = {**params, **({"page_token": page} if page else {})}
        body = app.get(f"{API}/models", query, headers=headers).json
        names += [m["name"] for m in body["models"]]
        page = body["next_page_token"]
        if page is None:
            return names


def test_listing_shows_only_readable_models(secure_app):
    wsgi = secure_app.app
    admin = add_principal(wsgi, "root", admin=True)
    everything = ["fraud-a", "Fraud-B", "fraud_c", "fraudx", "churn", "churn-2", "other"]
    for name in everything:
        _create(secure_app, admin, name)
    assert sorted(_names(secure_app, admin)) == sorted(everything)
    # Globs and exact names, compared normalized; across pages.
    reader = add_principal(wsgi, "reader", grants=[("FRAUD-*", "read"), ("churn", "read")])
    assert _names(secure_app, reader, page_size="1") == ["churn", "fraud-a", "Fraud-B"]
    # '_' in a pattern is a character like any other, '?' is exactly one.
    under = add_principal(wsgi, "under", grants=[("fraud_?", "read")])
    assert _names(secure_app, under) == ["fraud_c"]
    assert _names(secure_app, add_principal(wsgi, "nobody")) == []
    # The filter language and the grants combine.
    assert _names(secure_app, reader, filter="name GLOB 'churn*'") == ["churn"]
    # A token narrowed to a pattern sees only that, even an admin's.
    narrow = add_token(wsgi, "root", ["read:churn*"])
    assert _names(secure_app, narrow) == ["churn", "churn-2"]


def test_grants_to_a_group_apply_to_its_members(secure_app):
    wsgi = secure_app.app
    admin = add_principal(wsgi, "root", admin=True)
    _create(secure_app, admin, "risk-model")
    member = add_principal(wsgi, "member")
    with security_service(wsgi) as security:
        security.create_group("risk-team")
        security.create_grant(group="risk-team", pattern="risk-*", level="write")
    secure_app.get(f"{API}/models/risk-model", headers=bearer(member), status=404)
    secure_app.put(f"{API}/admin/groups/risk-team/members/member", headers=bearer(admin),
                   status=201)
    secure_app.get(f"{API}/models/risk-model", headers=bearer(member), status=200)
    secure_app.post_json(f"{API}/models/risk-model/versions", {}, headers=bearer(member),
                         status=201)
    secure_app.delete(f"{API}/models/risk-model", headers=bearer(member), status=403)
    secure_app.delete(f"{API}/admin/groups/risk-team/members/member", headers=bearer(admin),
                      status=204)
    secure_app.get(f"{API}/models/risk-model", headers=bearer(member), status=404)


def test_rename_needs_admin_on_the_old_and_the_new_name(secure_app):
    wsgi = secure_app.app
    owner = add_principal(wsgi, "owner", grants=[("team-*", "admin"), ("solo", "admin")])
    _create(secure_app, owner, "solo")
    response = secure_app.patch_json(f"{API}/models/solo", {"name": "elsewhere"},
                                     headers=bearer(owner), status=403)
    assert error_code(response) == "forbidden"
    body = secure_app.patch_json(f"{API}/models/solo", {"name": "team-solo"},
                                 headers=bearer(owner)).json
    assert body["name"] == "team-solo"
    # The grant on "solo" does not follow the model: it stays with the name.
    writer = add_principal(wsgi, "writer", grants=[("team-solo", "write")])
    secure_app.patch_json(f"{API}/models/team-solo", {"name": "team-solo",
                                                      "description": "same name"},
                          headers=bearer(writer), status=200)
    secure_app.patch_json(f"{API}/models/team-solo", {"name": "team-other"},
                          headers=bearer(writer), status=403)


def test_a_case_variant_of_the_name_is_a_rename_too(secure_app):
    wsgi = secure_app.app
    admin = add_principal(wsgi, "owner", grants=[("team-*", "admin")])
    _create(secure_app, admin, "team-solo")
    writer = add_principal(wsgi, "writer", grants=[("team-*", "write")])
    # The URL names the model in another case, and the body repeats that case: still a rename.
    for url_name, new_name in (("team-solo", "Team-Solo"), ("Team-Solo", "Team-Solo"),
                               ("TEAM-SOLO", "team-SOLO")):
        response = secure_app.patch_json(f"{API}/models/{url_name}", {"name": new_name},
                                         headers=bearer(writer), status=403)
        assert error_code(response) == "forbidden"
    assert secure_app.get(f"{API}/models/team-solo", headers=bearer(writer)).json["name"] \
        == "team-solo"
    # Repeating the stored name in another URL case is no rename: write suffices.
    secure_app.patch_json(f"{API}/models/TEAM-SOLO", {"name": "team-solo",
                                                      "description": "same"},
                          headers=bearer(writer), status=200)
    body = secure_app.patch_json(f"{API}/models/team-solo", {"name": "Team-Solo"},
                                 headers=bearer(admin)).json
    assert body["name"] == "Team-Solo"


def test_token_scopes_cap_the_principal(secure_app):
    wsgi = secure_app.app
    add_principal(wsgi, "root", admin=True)
    narrow = add_token(wsgi, "root", ["write:fraud-*", "read"])
    _create(secure_app, narrow, "fraud-x")
    response = _create(secure_app, narrow, "churn", status=403)
    assert error_code(response) == "token_scope"
    secure_app.delete(f"{API}/models/fraud-x", headers=bearer(narrow), status=403)
    response = secure_app.get(f"{API}/audit", headers=bearer(narrow), status=403)
    assert error_code(response) == "token_scope"
    secure_app.get(f"{API}/models/fraud-x", headers=bearer(narrow), status=200)


def test_hidden_and_missing_models_answer_alike(secure_app):
    wsgi = secure_app.app
    admin = add_principal(wsgi, "root", admin=True)
    _create(secure_app, admin, "secret-model")
    outsider = add_principal(wsgi, "outsider")
    hidden = secure_app.get(f"{API}/models/secret-model", headers=bearer(outsider), status=404)
    missing = secure_app.get(f"{API}/models/no-model", headers=bearer(outsider), status=404)
    assert hidden.json["error"]["code"] == missing.json["error"]["code"] == "model_not_found"
    assert hidden.json["error"]["message"].replace("secret-model", "X") == \
        missing.json["error"]["message"].replace("no-model", "X")
    # Creating a name one may not write is refused before anything is looked up.
    taken = _create(secure_app, outsider, "secret-model", status=403)
    free = _create(secure_app, outsider, "free-model", status=403)
    assert taken.json["error"]["message"].replace("secret-model", "X") == \
        free.json["error"]["message"].replace("free-model", "X")


@pytest.mark.parametrize("mode, read, write", [
    ("none", 401, 401),
    ("read", 200, 401),
    ("write", 200, 201),
])
def test_anonymous_modes(modelreg_database, mode, read, write):
    app = make_app({"sqlalchemy.url": modelreg_database.url, "modelreg.auth.anonymous": mode})
    try:
        test = webtest.TestApp(app)
        test.get(f"{API}/models", status=read)
        test.post_json(f"{API}/models", {"name": "anon"}, status=write)
        if write == 201:  # "write" opens every operation on models, deleting included
            test.delete(f"{API}/models/anon", status=204)
        # The admin API and the audit log are never anonymous.
        test.get(f"{API}/admin/principals", status=401)
        test.get(f"{API}/audit", status=401)
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


# ------------------------------------------------------------------------ route inventory

#: The only paths whose views may be public (NO_PERMISSION_REQUIRED); whoami tells each caller
#: only about itself.
PUBLIC_PATHS = {"/healthz", "/readyz", "/api/v1/openapi.json", "/api/v1/whoami"}
#: Views that are no API operation (so no case of the matrix above), with what guards them
#: and the test that checks every caller.  ``/metrics`` (when ``modelreg.metrics.enabled``):
#: a global admin's token, or the scrape token, a secret its own view predicate compares —
#: tests/test_observability.py::test_metrics_need_the_scrape_token_or_a_global_admin.
OUTSIDE_THE_DOCUMENT = {("GET", "/metrics"): MetricsTokenPredicate}
#: Front-ends of other protocols, first-party plugins on modelreg.api (docs/plugins.md):
#: their views are outside modelreg's OpenAPI document (so no case of the matrix above)
#: and answer refusals in their own protocol's shape, so many are public at the view and
#: check the caller through ``request.modelreg``, which applies the grants as the REST
#: views do.  Each is held to its own paths here, and its grants are checked caller by
#: caller in the test named beside it.  The web UI's pages (a refusal is a page: sign in,
#: not found) — plugins/modelreg-web/tests/test_web_pages.py::test_grants_apply_as_in_the_api;
#: MLflow's REST API — plugins/modelreg-mlflow/tests/test_mlflow_client.py::
#: test_permissions_and_credentials_through_mlflow; the Hugging Face Hub's API —
#: plugins/modelreg-hf/tests/test_hf_client.py::
#: test_tokens_missing_refused_insufficient_or_without_grant.
FRONT_ENDS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("modelreg_web.", "pyramid.static."): ("/", "/ui/"),
    ("modelreg_mlflow.",): ("/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/",
                            "/api/2.0/mlflow-artifacts/", "/ajax-api/2.0/mlflow-artifacts/",
                            "/api/v1/mlflow/"),
    ("modelreg_hf.",): ("/api/models/", "/api/repos/", "/api/validate-yaml",
                        "/api/whoami-v2", "/hf-lfs/", "/{name}", "/{org}/{name}"),
}


def _is_front_end_view(name: str, pattern: str) -> bool:
    return any(name.startswith(modules)
               and any(pattern == path or ((path.endswith("/") or path.startswith("/{"))
                       and pattern.startswith(path)) for path in paths)
               for modules, paths in FRONT_ENDS.items())


#: The settings of a production deployment that add routes: every route must be walked.
ALL_ROUTES = {"modelreg.metrics.enabled": "true",
              "modelreg.metrics.token": "a-scrape-token-of-32-characters!"}


def _is_exception_view(intr: Any) -> bool:
    context = intr["context"]
    if intr["exception_only"] or context is IExceptionResponse:
        return True
    return isinstance(context, type) and issubclass(context, BaseException)


def _answers_405(view: Any) -> bool:
    """Whether ``view`` is one of the 405 responders: it refuses every request alike."""
    try:
        view(DummyRequest(method="PROPFIND", path="/x"))
    except ApiError as exc:
        return exc.status == 405
    except Exception:  # a view that cannot even run here refuses nothing
        return False
    return False


def permission_problems(registry: Any, document: dict[str, Any]) -> list[str]:
    """Every view the app registers that lacks an explicit, known permission, or that the
    OpenAPI document (and so the permission matrix above) does not cover."""
    introspector = registry.introspector
    patterns = {r["introspectable"]["name"]: r["introspectable"]["pattern"]
                for r in introspector.get_category("routes")}
    documented = {(method.upper(), path): op["x-permission"]
                  for path, methods in document["paths"].items()
                  for method, op in methods.items()}
    problems = []
    for entry in introspector.get_category("views"):
        intr = entry["introspectable"]
        view = intr["callable"]
        name = f"{getattr(view, '__module__', '?')}.{getattr(view, '__qualname__', view)}"
        permissions = [r["value"] for r in entry["related"] if r.category_name == "permissions"]
        if _is_exception_view(intr):
            # Exception views render errors, never a resource: Pyramid's own defaults carry
            # no permission, the app's are NO_PERMISSION_REQUIRED.
            if permissions not in ([], [NO_PERMISSION_REQUIRED]):
                problems.append(f"exception view {name} has permission {permissions}")
            elif not permissions and not name.startswith("pyramid."):
                problems.append(f"exception view {name} has no explicit permission")
            continue
        route = intr["route_name"]
        pattern = patterns.get(route, "<no route>")
        where = f"{name} on {intr['request_methods'] or 'any method'} {pattern}"
        if len(permissions) != 1:
            problems.append(f"{where}: no explicit permission")
            continue
        (permission,) = permissions
        methods = intr["request_methods"] or ("<any>",)
        methods = [m for m in ((methods,) if isinstance(methods, str) else methods)
                   if m != "HEAD"]  # HEAD is served by the GET view
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", pattern)
        guard = {OUTSIDE_THE_DOCUMENT.get((method, path)) for method in methods}
        if _is_front_end_view(name, pattern):
            if permission not in (NO_PERMISSION_REQUIRED, "read", "write", "admin"):
                problems.append(f"{where}: permission {permission!r} is not read, write, "
                                f"admin or public")
            continue
        if permission == NO_PERMISSION_REQUIRED:
            guarded = len(guard) == 1 and None not in guard and any(
                isinstance(p, tuple(guard)) for p in intr["predicates"])
            if pattern not in PUBLIC_PATHS and not guarded and not _answers_405(view):
                problems.append(f"{where}: public, but not one of {sorted(PUBLIC_PATHS)}")
            continue
        if permission not in ("read", "write", "admin"):
            problems.append(f"{where}: permission {permission!r} is not read, write or admin")
        for method in methods:
            if (method, path) in OUTSIDE_THE_DOCUMENT:
                continue
            if documented.get((method, path)) != permission:
                problems.append(f"{where}: {method} {path} is not in the OpenAPI document "
                                f"with x-permission {permission!r}, so no matrix case")
    return problems


def _inventory_app(url: str, extra: Any = None) -> Any:
    """The app with every installed plugin and every optional route, as a deployment
    builds it."""
    config = configure({"sqlalchemy.url": url, "modelreg.auth.anonymous": "none",
                        **ALL_ROUTES}, load_entrypoints=True)
    if extra is not None:
        extra(config)
        config.commit()
    return config.make_wsgi_app()


def _document(app: Any) -> dict[str, Any]:
    return webtest.TestApp(app).get("/api/v1/openapi.json").json


def test_every_view_declares_a_permission(modelreg_database):
    app = _inventory_app(modelreg_database.url)
    try:
        routes = {r["introspectable"]["pattern"]
                  for r in app.registry.introspector.get_category("routes")}
        assert len(routes) >= 20 and "/metrics" in routes  # the walk sees the whole app
        assert permission_problems(app.registry, _document(app)) == []
    finally:
        app.registry["db_engine"].dispose()


def test_the_inventory_catches_a_view_without_permission(modelreg_database):
    def sneak(config):
        config.add_route("sneaky", "/api/v1/sneaky")
        config.add_view(lambda request: Response("in"), route_name="sneaky",
                        request_method="GET")
        config.add_route("opened", "/api/v1/opened")
        config.add_view(lambda request: Response("in"), route_name="opened",
                        request_method="GET", permission=NO_PERMISSION_REQUIRED)

    app = _inventory_app(modelreg_database.url, sneak)
    try:
        problems = permission_problems(app.registry, _document(app))
        assert any("/api/v1/sneaky: no explicit permission" in p for p in problems), problems
        assert any("/api/v1/opened: public" in p for p in problems), problems
        assert len(problems) == 2, problems
        # And the default permission refuses the view that has none, whoever asks.
        test = webtest.TestApp(app)
        test.get("/api/v1/sneaky", status=401)
        admin = add_principal(app, "root", admin=True)
        test.get("/api/v1/sneaky", headers=bearer(admin), status=403)
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()
