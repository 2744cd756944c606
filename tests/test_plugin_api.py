"""The public plugin API carries a front-end (docs/plugins.md, "The registry in a view").

``pluginapi_plugin`` imports nothing of modelreg but ``modelreg.api``; served by a real
Waitress it creates a model, streams a file in through an upload session, links another by
digest, finalizes, moves an alias, searches, keeps a blob of its own through gc and serves a
Range download; its errors come in its own shape.  Through WebTest: its calls are refused as
the REST API's are.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import webtest

from modelreg.files.gc import collect_garbage
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from modelreg.testing.server import LiveServer
from security_helpers import add_principal, bearer
from test_plugin_imports import allowed, modelreg_imports

PLUGINS = (*CORE_PLUGINS, "pluginapi_plugin")
WEIGHTS = bytes(range(256)) * 600  # 153,600 bytes: three parts of 64 KiB
ARTIFACT = b"run artifact \x00\xff" * 1000


def call(server, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={**({"Content-Type": "application/json"}
                                                 if isinstance(body, dict) else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def gc(app):
    import datetime as dt

    registry = app.registry
    return collect_garbage(registry["dbsession_factory"], registry["db_engine"],
                           registry["modelreg.blob_store"], grace=dt.timedelta(0))


def test_the_plugin_imports_only_the_public_api():
    path = Path(__file__).with_name("pluginapi_plugin.py")
    assert [m for _, m in modelreg_imports(path) if not allowed(m)] == []
    assert {m for _, m in modelreg_imports(path)} == {"modelreg.api"}


def test_a_front_end_on_the_public_api_through_waitress(modelreg_settings, modelreg_database):
    settings = {**{key: str(value) for key, value in modelreg_settings.items()},
                "modelreg.upload.min_chunk_size": str(64 * 1024)}
    app = make_app(settings, PLUGINS)
    store = app.registry["modelreg.blob_store"]
    try:
        with LiveServer(settings, threads=2, plugins=PLUGINS) as server:
            status, _, body = call(server, "POST", "/x/models", {"name": "plug-model"})
            assert (status, json.loads(body)) == (201, {"model": "plug-model", "version": 1})
            base = "/x/models/plug-model/versions/1"
            status, _, body = call(server, "PUT", base + "/files/weights.bin", WEIGHTS,
                                   {"Content-Type": "application/octet-stream"})
            answer = json.loads(body)
            assert status == 201, answer
            assert answer["parts"] == 3 and answer["created"] is True
            digest = "sha256:" + hashlib.sha256(WEIGHTS).hexdigest()
            assert "sha256:" + answer["file"]["sha256"] == digest
            status, _, body = call(server, "POST", base + "/links",
                                   {"path": "copy.bin", "digest": digest})
            assert status == 201, body
            status, _, body = call(server, "POST", base + "/finalize", {})
            answer = json.loads(body)
            assert status == 200, answer
            assert answer["status"] == "ready" and answer["alias"]["version"] == 1
            status, _, body = call(server, "GET", "/x/search?filter=tag.source%20%3D%20'x'")
            assert json.loads(body) == {"names": ["plug-model"], "next": None}

            # A blob of its own, held through gc; a released one is collected.
            status, _, body = call(server, "PUT", "/x/artifacts/run-1", ARTIFACT,
                                   {"Content-Type": "application/octet-stream"})
            assert status == 201, body
            held = json.loads(body)["digest"].removeprefix("sha256:")
            status, _, body = call(server, "PUT", "/x/artifacts/run-2", b"dropped",
                                   {"Content-Type": "application/octet-stream"})
            dropped = json.loads(body)["digest"].removeprefix("sha256:")
            assert call(server, "DELETE", "/x/artifacts/run-2")[0] == 204
            report = gc(app)
            assert [sha for sha, _ in report.blobs] == [dropped]
            assert Path(store.file_path(held)).read_bytes() == ARTIFACT
            assert store.file_path(dropped) is None or not Path(
                store.file_path(dropped)).exists()

            # A Range download through Waitress's file wrapper, ETag and all.
            status, headers, body = call(server, "GET", "/x/models/plug-model/prod/copy.bin",
                                         headers={"Range": "bytes=1000-1999"})
            assert (status, body) == (206, WEIGHTS[1000:2000])
            assert headers["Content-Range"] == f"bytes 1000-1999/{len(WEIGHTS)}"
            etag = headers["ETag"]
            status, _, body = call(server, "GET", "/x/models/plug-model/prod/copy.bin",
                                   headers={"If-None-Match": etag})
            assert (status, body) == (304, b"")

            # Errors in the plugin's own shape, everywhere under its prefix.
            status, headers, body = call(server, "GET", "/x/models/nope/prod/a.bin")
            assert status == 404 and set(json.loads(body)) == {"error"}
            assert headers["X-Error-Code"] == "model_not_found"
            status, headers, body = call(server, "POST", "/x/models", b"{not json",
                                         {"Content-Type": "application/json"})
            assert status == 400 and set(json.loads(body)) == {"error"}
            assert headers["X-Error-Code"] == "invalid_json"
            status, headers, _ = call(server, "GET", "/x/no/such/route")
            assert (status, headers["X-Error-Code"]) == (404, "not_found")
            # The REST API keeps its envelope.
            status, _, body = call(server, "GET", "/api/v1/models/nope")
            assert json.loads(body)["error"]["code"] == "model_not_found"
    finally:
        app.registry["db_engine"].dispose()
        clear_database_of(modelreg_settings, app)


def clear_database_of(settings, app):
    engine = make_app(settings, CORE_PLUGINS).registry["db_engine"]
    try:
        clear_database(engine)
    finally:
        engine.dispose()


@pytest.fixture
def closed_app(modelreg_settings, modelreg_database):
    app = make_app({**modelreg_settings, "modelreg.auth.anonymous": "none"}, PLUGINS)
    yield webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(app.registry["db_engine"])
    app.registry["db_engine"].dispose()


def test_the_plugin_is_refused_as_the_rest_api_is(closed_app):
    """Grants apply to what a plugin does for its caller: 401 anonymous, 403 with read
    only, and basic auth with the token as the password is accepted."""
    admin = add_principal(closed_app.app, "admin", admin=True)
    reader = add_principal(closed_app.app, "reader", grants=[("*", "read")])
    response = closed_app.post_json("/x/models", {"name": "m"}, status=401)
    assert set(response.json) == {"error"}
    assert response.headers["X-Error-Code"] == "unauthorized"
    closed_app.post_json("/x/models", {"name": "m"}, headers=bearer(admin), status=201)
    response = closed_app.post_json("/x/models", {"name": "n"}, headers=bearer(reader),
                                    status=403)
    assert set(response.json) == {"error"}
    # MLflow's clients send the token as a basic-auth password.
    import base64

    basic = {"Authorization": "Basic " + base64.b64encode(f"x:{reader}".encode()).decode()}
    response = closed_app.get("/x/search", headers=basic, status=200)
    assert response.json["names"] == ["m"]
    closed_app.get("/api/v1/models/m", headers=basic, status=200)


def test_holding_a_blob_the_registry_lacks_is_refused(closed_app):
    admin = add_principal(closed_app.app, "admin", admin=True)
    missing = "sha256:" + hashlib.sha256(b"never stored").hexdigest()
    response = closed_app.post_json("/x/artifacts/k", {"digest": missing},
                                    headers=bearer(admin), status=404)
    assert response.headers["X-Error-Code"] == "blob_not_found"
    response = closed_app.post_json("/x/artifacts/k", {"digest": "sha256:xyz"},
                                    headers=bearer(admin), status=400)
    assert response.headers["X-Error-Code"] == "invalid_digest"
    response = closed_app.put("/x/artifacts/k", b"bytes", headers={
        **bearer(admin), "Content-Type": "application/octet-stream"}, status=201)
    digest = response.json["digest"]
    held = closed_app.post_json("/x/artifacts/other", {"digest": digest},
                                headers=bearer(admin), status=200).json["held"]
    assert held == {"k": digest.removeprefix("sha256:"), "other": digest.removeprefix("sha256:")}
