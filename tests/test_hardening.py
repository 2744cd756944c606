"""Secure by default: the Host allow-list, ``nosniff`` on every response, error bodies free of
tracebacks and paths, and no default credentials anywhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plaster
import pytest
import sqlalchemy as sa
import webtest
from webob import Request

import modelreg
from helpers import API
from modelreg.models import ApiToken, Grant, Group, Principal
from modelreg.security.http import AllowedHosts, split_host
from modelreg.testing import TestDatabase, clear_database, make_app
from security_helpers import add_principal, bearer

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = "registry.example.com *.corp.example:8443\n  [::1] 127.0.0.1"


@pytest.fixture(scope="module")
def hosts_wsgi_app(modelreg_database) -> Iterator[Any]:
    app = make_app({"sqlalchemy.url": modelreg_database.url,
                    "modelreg.allowed_hosts": ALLOWED})
    yield app
    clear_database(app.registry["db_engine"])
    app.registry["db_engine"].dispose()


def _get(app: Any, host: str | None, path: str = "/healthz") -> Any:
    """GET ``path`` with that ``Host`` header (``None``: without one, as HTTP/1.0 allows)."""
    request = Request.blank(path)
    if host is None:
        del request.environ["HTTP_HOST"]
    else:
        request.environ["HTTP_HOST"] = host
    return request.get_response(app)


# ------------------------------------------------------------------------ Host allow-list


@pytest.mark.parametrize("host", [
    "registry.example.com", "REGISTRY.Example.COM", "registry.example.com.",
    "registry.example.com:6543", "a.corp.example:8443", "deep.a.corp.example:8443",
    "[::1]", "[::1]:6543", "127.0.0.1", "127.0.0.1:80",
])
def test_allowed_hosts_are_served(hosts_wsgi_app, host):
    response = _get(hosts_wsgi_app, host)
    assert response.status_int == 200, response.text


@pytest.mark.parametrize("host", [
    "evil.example", "registry.example.com.evil.example", "xregistry.example.com",
    "a.corp.example", "a.corp.example:443", "corp.example:8443", "evilcorp.example:8443",
    "127.0.0.2", "[::2]", "registry.example.com@evil.example",
    "registry.example.com/x", "registry.example.com:99999", "registry.example.com:",
    "registry example.com", "", None,
])
def test_other_hosts_get_a_json_400(hosts_wsgi_app, host):
    response = _get(hosts_wsgi_app, host)
    assert response.status_int == 400
    assert response.json["error"]["code"] == "invalid_host"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_refused_host_reaches_nothing(hosts_wsgi_app):
    evil = {"HTTP_HOST": "evil.example"}
    test = webtest.TestApp(hosts_wsgi_app, extra_environ=evil)
    # Not routing (an unknown path is no 404), not authentication, not the database.
    assert test.get("/nowhere", status=400).json["error"]["code"] == "invalid_host"
    test.get(f"{API}/models", headers=bearer("mr_0123456789abcdef_x"), status=400)
    test.post_json(f"{API}/models", {"name": "planted"}, status=400)
    good = webtest.TestApp(hosts_wsgi_app, extra_environ={"HTTP_HOST": "127.0.0.1"})
    good.get(f"{API}/models/planted", status=404)
    with hosts_wsgi_app.registry["db_engine"].connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM auth_failures")).scalar() == 0


def test_no_allow_list_means_any_host(modelreg_app):
    assert _get(modelreg_app, "anything.example:1234").status_int == 200


@pytest.mark.parametrize("setting", ["", "  ", "*", "registry.example.com *"])
def test_empty_or_star_allows_any_host(setting):
    assert AllowedHosts.from_settings({"modelreg.allowed_hosts": setting}) is None


@pytest.mark.parametrize("entry", ["http://registry.example.com", "registry.example.com/",
                                   "**.example.com", "example.*", "host:0", "host:x",
                                   "user@host", "[::1"])
def test_bad_entries_stop_start_up(modelreg_database, entry):
    with pytest.raises(RuntimeError, match=r"modelreg\.allowed_hosts"):
        make_app({"sqlalchemy.url": modelreg_database.url,
                  "modelreg.allowed_hosts": f"localhost {entry}"})


def test_split_host():
    assert split_host("Registry.Example.com.:8080") == ("registry.example.com", 8080)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("a_b.internal") == ("a_b.internal", None)
    for bad in ("", "a b", "a/b", "a:b", "a:70000", "-a", "[zz]"):
        assert split_host(bad) is None, bad


def test_ini_files_set_the_allow_list():
    dev = dict(plaster.get_settings(str(ROOT / "development.ini"), "app:main"))
    allowed = AllowedHosts.from_settings(dev)
    assert allowed is not None
    for host in ("localhost", "localhost:6543", "127.0.0.1:6543"):
        assert allowed.allows(host), host
    assert not allowed.allows("evil.example:6543")
    # production.ini documents it, with an example to copy.
    text = (ROOT / "production.ini").read_text()
    assert re.search(r"^# modelreg\.allowed_hosts =", text, re.M)


# ---------------------------------------------------------------------------- nosniff


def test_every_response_is_nosniff(testapp, monkeypatch):
    from modelreg.registry import services

    created = testapp.post_json(f"{API}/models", {"name": "m"}, status=201)
    responses = [
        testapp.get("/healthz"), testapp.get("/api/v1/openapi.json"), created,
        testapp.get(f"{API}/models/m"), testapp.delete(f"{API}/models/m/tags/none",
                                                       status=404),
        testapp.get("/no/such/route", status=404),
        testapp.put_json(f"{API}/models", {}, status=405),
        testapp.post(f"{API}/models", "{not json", content_type="application/json",
                     status=400),
        testapp.get(f"{API}/audit", status=401),
        testapp.get(f"{API}/models", headers=bearer("mr_0123456789abcdef_x"), status=401),
        testapp.delete(f"{API}/models/m", status=204),
    ]

    def boom(*args: Any, **kwargs: Any) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(services.RegistryService, "get_model", boom)
    responses.append(testapp.get(f"{API}/models/m", status=500))
    for response in responses:
        assert response.headers.get("X-Content-Type-Options") == "nosniff", (
            response.request.path, response.status)


# ------------------------------------------------------------------- errors stay opaque

#: What must never reach a client: tracebacks, source files, where the code lives.
LEAKS = [re.escape(str(Path(modelreg.__file__).resolve().parent.parent)), "Traceback",
         r'File "', r"\.py\b", "site-packages", "sqlalchemy", r"psycopg|pymysql|sqlite3",
         "Exception", r"\bline \d+, in\b"]


def _assert_opaque(response: Any) -> None:
    assert response.content_type == "application/json", response.content_type
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    for leak in LEAKS:
        assert not re.search(leak, response.text, re.I), (leak, response.text)


def test_error_bodies_carry_no_traceback_or_path(secure_app, monkeypatch):
    app = secure_app
    admin = add_principal(app.app, "root", admin=True)
    auth = bearer(admin)
    app.post_json(f"{API}/models", {"name": "m"}, headers=auth, status=201)
    deep = "[" * 100_000 + "]" * 100_000
    errors = [
        app.get("/nowhere", status=404),
        app.get(f"{API}/models/nope", headers=auth, status=404),
        app.put_json(f"{API}/models", {}, headers=auth, status=405),
        app.post(f"{API}/models", "{oops", headers=auth, content_type="application/json",
                 status=400),
        app.post(f"{API}/models", '{"name": ' + deep + "}", headers=auth,
                 content_type="application/json", status=(400, 413)),
        app.post_json(f"{API}/models", {"name": 5}, headers=auth, status=422),
        app.post_json(f"{API}/models", {"name": "M"}, headers=auth, status=409),
        app.get(f"{API}/models", {"filter": "name ==== 'x' AND ((("}, headers=auth,
                status=400),
        app.get(f"{API}/models", {"page_token": "x" * 300}, headers=auth, status=400),
        app.get(f"{API}/models", status=401),
        app.get(f"{API}/models", headers=bearer("mr_0123456789abcdef_x"), status=401),
        app.get(f"{API}/admin/principals", headers=bearer(add_principal(app.app, "u")),
                status=403),
        app.get(f"{API}/audit", {"since": "yesterday"}, headers=auth, status=400),
    ]

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"cannot open {modelreg.__file__}: Traceback in sqlalchemy")

    monkeypatch.setattr("modelreg.registry.services.RegistryService.get_model", boom)
    monkeypatch.setattr("modelreg.security.services.SecurityService.list_principals", boom)
    errors.append(app.get(f"{API}/models/m", headers=auth, status=500))
    errors.append(app.get(f"{API}/admin/principals", headers=auth, status=500))
    for response in errors:
        _assert_opaque(response)


def test_a_database_error_is_opaque(secure_app, monkeypatch):
    admin = add_principal(secure_app.app, "root", admin=True)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise sa.exc.ProgrammingError("SELECT secret FROM models", {}, Exception("relation"))

    monkeypatch.setattr("modelreg.registry.services.RegistryService.list_models", broken)
    response = secure_app.get(f"{API}/models", headers=bearer(admin), status=500)
    _assert_opaque(response)
    assert "SELECT" not in response.text


# --------------------------------------------------------------- no default credentials

#: Shapes of secrets that must never be in a shipped configuration file.
SECRET_SHAPES = [
    r"mr_[0-9a-f]{16}_",  # an API token of ours
    r"://[^/\s:@]+:[^/\s@]+@",  # a URL with a password
    r"AKIA[0-9A-Z]{16}",  # an AWS access key id
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
]
_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|api_key|access_key", re.I)


@pytest.mark.parametrize("name", ["production.ini", "development.ini"])
def test_ini_files_hold_no_credentials(name):
    text = (ROOT / name).read_text()
    for shape in SECRET_SHAPES:
        assert not re.search(shape, text), shape
    for section in ("app:main", "server:main"):
        for key, value in plaster.get_settings(str(ROOT / name), section).items():
            if _SECRET_KEY.search(key):
                assert not value or value.startswith("env:"), (name, key)


def test_a_fresh_database_has_no_principals_and_no_tokens():
    db = TestDatabase.create("sqlite")
    try:
        engine = db.engine()
        with engine.connect() as conn:
            for table in (Principal, ApiToken, Grant, Group):
                count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                assert count == 0, table.__tablename__
        # And nobody gets in: without a principal there is no token to present.
        app = make_app({"sqlalchemy.url": db.url, "modelreg.auth.anonymous": "none"})
        try:
            test = webtest.TestApp(app)
            test.get(f"{API}/models", status=401)
            test.get(f"{API}/admin/principals", status=401)
        finally:
            app.registry["db_engine"].dispose()
    finally:
        db.drop()
