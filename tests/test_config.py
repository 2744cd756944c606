"""Settings: environment overrides, production.ini's requirements, start-up failures."""

from __future__ import annotations

from pathlib import Path

import plaster
import pytest
import webtest

from modelreg.config import apply_environment, configure

ROOT = Path(__file__).resolve().parent.parent


def ini_settings(name: str) -> dict:
    return dict(plaster.get_settings(str(ROOT / name), "app:main"))


def close(app) -> None:
    """Stop the app's embedded worker (production.ini starts one) and its connections."""
    embedded = app.registry.get("modelreg.worker")
    if embedded is not None:
        embedded.stop()
    app.registry["db_engine"].dispose()


def test_environment_fills_unset_settings_only():
    settings = {"sqlalchemy.url": "sqlite:///explicit.sqlite"}
    apply_environment(settings, {"MODELREG_DATABASE_URL": "postgresql://elsewhere/db"})
    assert settings["sqlalchemy.url"] == "sqlite:///explicit.sqlite"
    settings = {}
    apply_environment(settings, {"MODELREG_DATABASE_URL": "postgresql://elsewhere/db"})
    assert settings["sqlalchemy.url"] == "postgresql://elsewhere/db"


def test_env_reference_needs_its_variable():
    with pytest.raises(RuntimeError, match="MODELREG_DATABASE_URL"):
        apply_environment({"sqlalchemy.url": "env:MODELREG_DATABASE_URL"}, {})


def test_production_ini_refuses_to_start_without_a_database(monkeypatch):
    monkeypatch.delenv("MODELREG_DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="MODELREG_DATABASE_URL"):
        configure(ini_settings("production.ini"))


def test_production_ini_starts_with_the_database_from_the_environment(
    monkeypatch, modelreg_database
):
    monkeypatch.setenv("MODELREG_DATABASE_URL", modelreg_database.url)
    app = configure(ini_settings("production.ini"), load_entrypoints=True).make_wsgi_app()
    try:
        assert webtest.TestApp(app).get("/readyz").json["checks"] == {"database": "ok",
                                                                  "storage": "ok"}
        assert app.registry["modelreg.worker"] is not None  # jobs run without another process
    finally:
        close(app)


def test_production_ini_keeps_tracebacks_off_and_sets_limits():
    server = dict(plaster.get_settings(str(ROOT / "production.ini"), "server:main"))
    assert server["expose_tracebacks"] == "false"
    for key in ("threads", "connection_limit", "channel_timeout", "max_request_header_size",
                "max_request_body_size", "recv_bytes"):
        assert key in server, key
    assert "password" not in (ROOT / "production.ini").read_text().lower()


def test_no_database_configured_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MODELREG_DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="no database configured"):
        configure({})


def test_unhandled_errors_are_json_without_traceback(testapp, monkeypatch):
    from modelreg.registry import services

    def boom(*args, **kwargs):
        raise ValueError("secret internal detail at /srv/modelreg/x.py")

    monkeypatch.setattr(services.RegistryService, "get_model", boom)
    response = testapp.get("/api/v1/models/x", status=500)
    assert response.json["error"]["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_production_ini_never_allows_anonymous_writes(monkeypatch, modelreg_database):
    settings = ini_settings("production.ini")
    assert settings["modelreg.auth.anonymous"] == "none"
    assert settings["modelreg.auth.allow_anonymous_write"] == "false"
    assert settings.get("modelreg.metrics.public", "false") == "false"
    monkeypatch.setenv("MODELREG_DATABASE_URL", modelreg_database.url)
    # The environment cannot open it: the ini's explicit "none" wins.
    monkeypatch.setenv("MODELREG_AUTH_ANONYMOUS", "write")
    app = configure(settings).make_wsgi_app()
    try:
        test = webtest.TestApp(app)
        test.post_json("/api/v1/models", {"name": "planted"}, status=401)
        test.get("/api/v1/models", status=401)
    finally:
        close(app)
    # Editing the ini (or any setting) to open it stops start-up.
    with pytest.raises(RuntimeError, match="refusing to start"):
        configure({**settings, "modelreg.auth.anonymous": "write"})
    with pytest.raises(RuntimeError, match="refusing to start"):
        configure({**settings, "modelreg.auth.anonymous": " WRITE "})
    # Unknown values are errors, not silently "none" or "write".
    with pytest.raises(RuntimeError, match="not one of"):
        configure({**settings, "modelreg.auth.anonymous": "yes"})
    # Anonymous reads are the most production allows.
    app = configure({**settings, "modelreg.auth.anonymous": "read"}).make_wsgi_app()
    try:
        test = webtest.TestApp(app)
        test.get("/api/v1/models", status=200)
        test.post_json("/api/v1/models", {"name": "planted"}, status=401)
    finally:
        close(app)


def test_anonymous_access_is_off_unless_configured(modelreg_database, monkeypatch):
    monkeypatch.delenv("MODELREG_AUTH_ANONYMOUS")
    app = configure({"sqlalchemy.url": modelreg_database.url}).make_wsgi_app()
    try:
        webtest.TestApp(app).get("/api/v1/models", status=401)
    finally:
        close(app)
