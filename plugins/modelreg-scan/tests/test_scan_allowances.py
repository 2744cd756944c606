"""Allowances: framework pickles (scikit-learn, cloudpickle) are rejected by default, become
``ready`` once an admin allows their globals for a glob of models, stay rejected outside
the glob, and the audit log shows every allowance change and every use.

The real app (WebTest, the kit's ``make_app``) with this plugin and its migration branch on
SQLite, PostgreSQL and MariaDB; the real scan subprocess; the worker run in the test's thread
(``modelreg.testing.run_worker``).  The pickles are ``pickle.dumps`` output of stub classes
whose ``__module__`` and ``__qualname__`` are scikit-learn's and cloudpickle's.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import webtest
from modelreg_scan import allowances as allow
from modelreg_scan.tables import allowances

from modelreg.api import hookimpl
from modelreg.testing import (
    CORE_PLUGINS,
    TestDatabase,
    add_principal,
    make_app,
    run_worker,
    unavailable,
)

API = "/api/v1"
A = f"{API}/scan/allowances"
ADMIN, USER = "root", "alice"
SK = "sklearn.linear_model._logistic"


class HeaderAuth:
    """Test-only authentication: the principal named by ``X-Test-Principal``."""

    @hookimpl
    def modelreg_authenticate(self, request: Any) -> str | None:
        """The principal of the test header, if any."""
        return request.headers.get("X-Test-Principal")


PLUGINS = (*CORE_PLUGINS, "modelreg_scan.plugin", HeaderAuth())
BACKENDS = [b.strip() for b in os.environ.get("MODELREG_TEST_BACKENDS",
                                              "sqlite,postgresql,mariadb").split(",")]


def framework_pickle(*globals_: tuple[str, str]) -> bytes:
    """What ``pickle.dumps`` writes for instances of classes at ``module:qualname``: stub
    classes in stub modules, removed again afterwards."""
    added: list[str] = []
    replaced: list[tuple[Any, str, Any]] = []
    objects = []
    try:
        for module, qualname in globals_:
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    added.append(name)
            cls = type(qualname, (), {"__module__": module, "__qualname__": qualname})
            replaced.append((sys.modules[module], qualname,
                             getattr(sys.modules[module], qualname, None)))
            setattr(sys.modules[module], qualname, cls)
            objects.append(cls())
        return pickle.dumps(objects, protocol=4)
    finally:
        for owner, qualname, before in reversed(replaced):  # os.system is os.system again
            if before is None:
                delattr(owner, qualname)
            else:
                setattr(owner, qualname, before)
        for name in added:
            del sys.modules[name]


SKLEARN = framework_pickle((SK, "LogisticRegression"))
CLOUDPICKLE = framework_pickle(("cloudpickle.cloudpickle", "_make_skeleton_class"),
                               (SK, "LogisticRegression"))
SKLEARN_AND_OS = framework_pickle((SK, "LogisticRegression"), ("os", "system"))
assert callable(os.system) and not isinstance(os.system, type)


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A migrated database (core and ``modelreg_scan`` branches) of each backend, one after
    another (migrations are not thread-safe).  A backend whose server cannot be reached
    maps to its ``ConnectionError``."""
    made: dict[str, Any] = {}
    try:
        for backend in BACKENDS:
            try:
                db = TestDatabase.create(backend, PLUGINS)
            except ConnectionError as exc:
                made[backend] = exc
                continue
            directory = tmp_path_factory.mktemp(f"allow-{backend}")
            made[backend] = (db, {
                "sqlalchemy.url": db.url,
                "modelreg.storage.local.path": str(directory / "blobs"),
                "retry.attempts": "3",
                "modelreg.scan.allow.settings-sklearn":
                    f"from-settings-* : {SK}:LogisticRegression",
            })
        yield made
    finally:
        _ADMINS_ADDED.clear()
        for value in made.values():
            if isinstance(value, tuple):
                value[0].drop()


#: The backends whose database already holds the global admin.
_ADMINS_ADDED: set[str] = set()


@pytest.fixture(scope="module", params=BACKENDS)
def app(request: pytest.FixtureRequest, databases: dict[str, Any]) -> Iterator[Any]:
    """The app on :func:`databases`' database of each backend, with an allowance in the
    settings and a global admin ``root``."""
    made = databases[request.param]
    if isinstance(made, ConnectionError):
        unavailable(str(made))
    _db, settings = made
    wsgi = make_app(settings, PLUGINS)
    if request.param not in _ADMINS_ADDED:
        add_principal(wsgi, ADMIN, admin=True)  # a global admin, as `modelreg users add`
        _ADMINS_ADDED.add(request.param)
    yield wsgi
    wsgi.registry["db_engine"].dispose()
    allow.dispose_engines()


@pytest.fixture
def admin(app: Any) -> Iterator[webtest.TestApp]:
    """WebTest as the global admin; the allowances are removed after each test."""
    yield webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1",
                                              "HTTP_X_TEST_PRINCIPAL": ADMIN})
    engine = allow.get_engine(app.registry.settings)
    with engine.begin() as conn:
        conn.execute(allowances.delete())
    allow.dispose_engines()
    allow.sync_settings(allow.get_engine(app.registry.settings), app.registry.settings)


def version_of(admin: webtest.TestApp, model: str, files: dict[str, bytes]) -> dict[str, Any]:
    """Upload ``files`` as a new version of ``model``, finalize it, run the worker: the
    version as the API then shows it."""
    if admin.get(f"{API}/models/{model}", expect_errors=True).status_int == 404:
        admin.post_json(f"{API}/models", {"name": model}, status=201)
    number = admin.post_json(f"{API}/models/{model}/versions", {}, status=201).json["number"]
    for path, data in files.items():
        admin.put(f"{API}/models/{model}/versions/{number}/files/{path}", data,
                  headers={"Content-Type": "application/octet-stream"}, status=201)
    admin.post(f"{API}/models/{model}/versions/{number}/finalize", status=202)
    run_worker(admin.app)
    return admin.get(f"{API}/models/{model}/versions/{number}").json


def findings_of(admin: webtest.TestApp, model: str, number: int) -> list[dict[str, Any]]:
    return admin.get(f"{API}/models/{model}/versions/{number}/findings").json["findings"]


def audit(admin: webtest.TestApp, **query: str) -> list[dict[str, Any]]:
    return admin.get(f"{API}/audit", params={"page_size": "1000", **query}).json["events"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_framework_pickles_pass_only_under_an_allowance_for_their_model_and_it_is_audited(
        admin):
    fraud, churn = unique("fraud"), unique("churn")
    # rejected by default: fail closed
    rejected = version_of(admin, fraud, {"model.pkl": SKLEARN})
    assert rejected["status"] == "rejected"
    assert [p["code"] for p in rejected["problems"]] == ["pickle_unknown_import"]
    assert "LogisticRegression" in rejected["problems"][0]["message"]

    name = unique("mlflow")
    created = admin.post_json(A, {
        "name": name, "models": "fraud-*", "description": "MLflow pyfunc models of risk",
        "globals": [f"{SK}:LogisticRegression", "cloudpickle.cloudpickle:_make_*"]},
        status=201).json
    assert created["source"] == "api" and created["created_by"] == ADMIN
    assert name in [a["name"] for a in admin.get(A).json["allowances"]]

    ready = version_of(admin, fraud, {"python_model.pkl": CLOUDPICKLE, "clean.pkl":
                                      pickle.dumps({"a": [1.0]})})
    assert ready["status"] == "ready", ready["problems"]
    allowed = findings_of(admin, fraud, ready["number"])
    assert sorted((f["code"], f["severity"], f["details"]["allowance"], f["details"]["name"])
                  for f in allowed) == [
        ("pickle_import_allowed", "info", name, "LogisticRegression"),
        ("pickle_import_allowed", "info", name, "_make_skeleton_class")]
    # a global the allowance does not name still rejects, in the same glob
    mixed = version_of(admin, fraud, {"model.pkl": SKLEARN_AND_OS})
    assert mixed["status"] == "rejected"
    assert [p["code"] for p in mixed["problems"]] == ["pickle_dangerous_import"]
    # outside the glob nothing changes
    other = version_of(admin, churn, {"model.pkl": SKLEARN})
    assert other["status"] == "rejected"

    (made,) = audit(admin, action=allow.CREATED, target=name)
    assert (made["actor"], made["target_type"]) == (ADMIN, "scan_allowance")
    assert made["after"]["models"] == "fraud-*"
    (used,) = audit(admin, action=allow.USED, model=fraud)
    assert used["target"] == f"{fraud}/{ready['number']}"
    assert used["actor"] == allow.SCAN_ACTOR
    assert used["after"]["allowance"] == name
    assert used["after"]["file"] == "python_model.pkl"
    assert used["after"]["globals"] == [
        "cloudpickle.cloudpickle:_make_skeleton_class", f"{SK}:LogisticRegression"]
    assert audit(admin, action=allow.USED, model=churn) == []

    admin.delete(f"{A}/{name}", status=204)
    (gone,) = audit(admin, action=allow.DELETED, target=name)
    assert gone["actor"] == ADMIN and gone["before"]["globals"][0].startswith(SK)
    assert version_of(admin, fraud, {"model.pkl": SKLEARN})["status"] == "rejected"


def test_an_allowance_of_the_settings_is_listed_audited_and_applies(admin):
    model = unique("from-settings")
    assert version_of(admin, model, {"model.pkl": SKLEARN})["status"] == "ready"
    (listed,) = [a for a in admin.get(A).json["allowances"] if a["source"] == "settings"]
    assert listed["name"] == "settings-sklearn" and listed["models"] == "from-settings-*"
    assert audit(admin, action=allow.CREATED, target="settings-sklearn")[0]["actor"] == (
        allow.SETTINGS_ACTOR)
    (used,) = audit(admin, action=allow.USED, model=model)
    assert used["after"]["allowance"] == "settings-sklearn"
    answer = admin.delete(f"{A}/settings-sklearn", status=409).json
    assert answer["error"]["code"] == "allowance_from_settings"
    assert "modelreg.scan.allow.settings-sklearn" in answer["error"]["message"]


def test_wrong_requests_get_json_errors_and_change_nothing(admin):
    answer = admin.post_json(A, {"name": "Bad Name", "models": "", "globals": [
        "os.system", "*:*", "sk*:x", "pkg.*"]}, status=422).json["error"]
    assert answer["code"] == "validation_failed"
    assert [p["field"] for p in answer["details"]["problems"]] == [
        "name", "models", "globals/0", "globals/1", "globals/2", "globals/3"]
    admin.post_json(A, {"name": "x", "models": "*", "globals": ["a:b"], "admin": True},
                    status=422)
    admin.post(A, "not json", headers={"Content-Type": "application/json"}, status=400)
    admin.post(A, '{"name": "x", "models": "*", "globals": ["a:b"]}',
               headers={"Content-Type": "text/plain"}, status=415)
    for description in ("nul \u0000", "bell \u0007", "\ud800"):
        error = admin.post_json(A, {"name": "x", "models": "*", "globals": ["a:b"],
                                    "description": description}, status=422).json["error"]
        assert error["code"] in ("invalid_body", "validation_failed")
    admin.post(A, "[]", headers={"Content-Type": "application/json"}, status=400)
    name = unique("dup")
    admin.post_json(A, {"name": name, "models": "*", "globals": ["a:b"]}, status=201)
    assert admin.post_json(A, {"name": name, "models": "*", "globals": ["c:d"]},
                           status=409).json["error"]["code"] == "allowance_exists"
    assert admin.get(f"{A}/{name}").json["globals"] == ["a:b"]
    assert admin.get(f"{A}/nothing-here", status=404).json["error"]["code"] == (
        "allowance_not_found")
    admin.delete(f"{A}/nothing-here", status=404)
    assert len(audit(admin, action=allow.CREATED, target=name)) == 1


def test_only_global_admins_manage_allowances(app, admin):
    admin.post_json(f"{API}/admin/principals", {"name": USER}, status=201)
    user = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1",
                                               "HTTP_X_TEST_PRINCIPAL": USER})
    body = {"name": "mine", "models": "*", "globals": ["sklearn.*:*"]}
    assert user.get(A, status=403).json["error"]["code"]
    user.post_json(A, body, status=403)
    user.get(f"{A}/settings-sklearn", status=403)
    user.delete(f"{A}/settings-sklearn", status=403)
    anonymous = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    anonymous.post_json(A, body, status=(401, 403))  # 403 where anonymous may write
    assert "mine" not in [a["name"] for a in admin.get(A).json["allowances"]]
    paths = admin.get(f"{API}/openapi.json").json["paths"]
    assert {"get", "post"} <= set(paths[A]) and {"get", "delete"} <= set(paths[A + "/{name}"])


@pytest.mark.parametrize("pattern, module, qualname, permitted", [
    ("pkg.*:*", "os", "system", False),          # never a dotted-prefix trick
    ("pkg.*:*", "pkg.mod", "system", True),
    ("pkg.*:*", "pkg", "x", False),              # pkg.* is below pkg, not pkg itself
    ("pkg.mod:*", "pkg.mod.os", "system", False),
    ("pkg.mod:Model", "pkg.mod", "Model.__reduce__", False),
    ("pkg.mod:Model.*", "pkg.mod", "Model.Inner", True),
    ("pkg.mod:*", "pkg.mod", "os.system", False),     # protocol 4 getattr through pkg.mod
    ("pkg.mod:Model.*", "pkg.mod", "Model.Inner.deep", False),
    ("pkg.mod:Model.*", "pkg.mod", "Model.__init__", False),
    ("pkg.mod:*.*", "pkg.mod", "Model.Inner", True),
    ("pkg.mod:Model.__call__", "pkg.mod", "Model.__call__", True),
    ("sklearn.*:*", "sklearn.linear_model._logistic", "LogisticRegression", True),
    ("os:system", "os", "system", True),
])
def test_module_and_qualified_name_match_separately(pattern, module, qualname, permitted):
    allowance = allow.Allowance("a", "fraud-*", (pattern,))
    assert (allowance.permits("fraud-1", module, qualname) is not None) is permitted
    assert allowance.permits("churn", module, qualname) is None


@pytest.mark.parametrize("value", ["sklearn.*:*", "fraud-* sklearn.*:*", "fraud-* : os.system",
                                   "fraud-* : *:*", "fraud* :"])
def test_wrong_settings_stop_start_up_naming_the_setting(value):
    with pytest.raises(ValueError, match=r"modelreg\.scan\.allow\.x"):
        allow.from_settings({"modelreg.scan.allow.x": value})


def test_a_setting_may_list_its_globals_on_continuation_lines():
    (found,) = allow.from_settings({
        "modelreg.scan.allow.risk": "risk-* : sklearn.pipeline:Pipeline\n    a.b:C"}).values()
    assert (found.name, found.models, found.globals) == (
        "risk", "risk-*", ("sklearn.pipeline:Pipeline", "a.b:C"))


def test_the_app_starts_while_the_database_is_down(tmp_path):
    settings = {"sqlalchemy.url": "postgresql+psycopg://postgres@127.0.0.1:1/none",
                "modelreg.storage.local.path": str(tmp_path),
                "modelreg.scan.allow.risk": "risk-* : sklearn.pipeline:Pipeline"}
    wsgi = make_app(settings, PLUGINS)  # the allowances are synced by the first scan
    wsgi.registry["db_engine"].dispose()
