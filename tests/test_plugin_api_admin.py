"""The facade's methods for importers and front-ends beyond ``pluginapi_plugin``
(docs/plugins.md, "The registry in a view"): each is refused as the REST API refuses the
same change, and does what the REST API does.

* ``create_version(number=…)``: global admins only; the counter moves past the number;
  below the counter is ``409 version_number_taken``.
* ``update_model`` renames with ``admin`` on both names, describes with ``write``;
  ``delete_model`` needs ``admin``.
* ``update_version`` and ``delete_version`` (with ``drop_aliases``).
* ``link_held_blob``, ``open_held_blob``, ``release_blob_now`` on a blob the plugin holds.
"""

from __future__ import annotations

import hashlib

import pytest
import webtest

from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from security_helpers import add_principal, bearer
from test_plugin_imports import allowed, modelreg_imports

PLUGINS = (*CORE_PLUGINS, "pluginapi_admin_plugin")


@pytest.fixture
def app(modelreg_settings, modelreg_database):
    wsgi = make_app({**modelreg_settings, "modelreg.auth.anonymous": "none"}, PLUGINS)
    yield webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(wsgi.registry["db_engine"])
    wsgi.registry["db_engine"].dispose()


def test_the_plugin_imports_only_the_public_api():
    from pathlib import Path

    path = Path(__file__).with_name("pluginapi_admin_plugin.py")
    assert {m for _, m in modelreg_imports(path)} == {"modelreg.api"}
    assert [m for _, m in modelreg_imports(path) if not allowed(m)] == []


def test_numbered_versions_are_for_admins_and_move_the_counter(app):
    admin = bearer(add_principal(app.app, "admin", admin=True))
    writer = bearer(add_principal(app.app, "writer", grants=[("*", "write")]))
    app.post_json("/api/v1/models", {"name": "imported"}, headers=admin, status=201)
    response = app.post_json("/y/models/imported/versions", {"number": 5}, headers=writer,
                             status=403)
    assert response.json["error"]["code"] == "forbidden"
    assert app.post_json("/y/models/imported/versions", {"number": 5},
                         headers=admin).json["number"] == 5
    assert app.post_json("/y/models/imported/versions", {},
                         headers=writer).json["number"] == 6
    response = app.post_json("/y/models/imported/versions", {"number": 3}, headers=admin,
                             status=409)
    assert response.json["error"]["code"] == "version_number_taken"
    assert response.json["error"]["details"]["next_version"] == 7
    response = app.post_json("/y/models/imported/versions", {"number": 0}, headers=admin,
                             status=422)
    assert response.json["error"]["code"] == "invalid_version_number"
    numbers = [v["number"] for v in
               app.get("/api/v1/models/imported/versions", headers=admin).json["versions"]]
    assert sorted(numbers) == [5, 6]


def test_models_and_versions_are_renamed_described_and_deleted_as_by_the_rest_api(app):
    admin = bearer(add_principal(app.app, "admin", admin=True))
    writer = bearer(add_principal(app.app, "writer", grants=[("*", "write")]))
    app.post_json("/api/v1/models", {"name": "m"}, headers=admin, status=201)
    assert app.patch_json("/y/models/m", {"description": "d"},
                          headers=writer).json["description"] == "d"
    app.patch_json("/y/models/m", {"name": "m2"}, headers=writer, status=403)
    assert app.patch_json("/y/models/m", {"name": "m2"}, headers=admin).json["name"] == "m2"
    app.get("/api/v1/models/m", headers=admin, status=404)

    version = app.post_json("/y/models/m2/versions", {}, headers=writer).json["number"]
    assert app.patch_json(f"/y/models/m2/versions/{version}", {"description": "v"},
                          headers=writer).json["description"] == "v"
    app.delete(f"/y/models/m2/versions/{version}", headers=writer)
    app.get(f"/api/v1/models/m2/versions/{version}", headers=admin, status=404)

    app.delete("/y/models/m2", headers=writer, status=403)
    app.delete("/y/models/m2", headers=admin, status=204)
    app.get("/api/v1/models/m2", headers=admin, status=404)


def test_a_version_with_an_alias_is_deleted_with_the_alias_named(app):
    admin = bearer(add_principal(app.app, "admin", admin=True))
    app.post_json("/api/v1/models", {"name": "a"}, headers=admin, status=201)
    app.post_json("/api/v1/models/a/versions", {}, headers=admin, status=201)
    app.put("/api/v1/models/a/versions/1/files/w.bin", b"weights", headers={
        **admin, "Content-Type": "application/octet-stream"}, status=201)
    app.post("/api/v1/models/a/versions/1/finalize", headers=admin, status=200)
    app.put_json("/api/v1/models/a/aliases/prod", {"version": 1}, headers=admin)
    response = app.delete("/y/models/a/versions/1", headers=admin, status=409)
    assert response.json["error"]["code"] == "version_has_aliases"
    assert app.delete("/y/models/a/versions/1?drop=prod",
                      headers=admin).json == {"dropped": ["prod"]}
    app.get("/api/v1/models/a/aliases/prod", headers=admin, status=404)


def test_a_held_blob_becomes_a_drafts_file_by_digest(app):
    admin = bearer(add_principal(app.app, "admin", admin=True))
    reader = bearer(add_principal(app.app, "reader", grants=[("*", "read")]))
    content = b"a run artifact" * 100
    stored = app.put("/y/held/run-1", content, headers={
        **admin, "Content-Type": "application/octet-stream"}).json
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()
    assert app.get("/y/held/run-1", headers=admin).body == content
    app.get("/y/held/nothing", headers=admin, status=404)

    app.post_json("/api/v1/models", {"name": "h"}, headers=admin, status=201)
    app.post_json("/api/v1/models/h/versions", {}, headers=admin, status=201)
    app.post("/y/models/h/versions/1/held/run-1?path=model.bin", headers=reader, status=403)
    response = app.post("/y/models/h/versions/1/held/nothing?path=model.bin", headers=admin,
                        status=404)
    assert response.json["error"]["code"] == "blob_not_found"
    linked = app.post("/y/models/h/versions/1/held/run-1?path=model.bin",
                      headers=admin).json
    assert linked["created"] is True
    assert linked["file"]["sha256"] == stored["sha256"]
    app.post("/api/v1/models/h/versions/1/finalize", headers=admin, status=200)
    assert app.get("/api/v1/models/h/versions/1/files/model.bin",
                   headers=reader).body == content

    assert app.delete("/y/held/run-1", headers=admin).json == {"released": True}
    assert app.delete("/y/held/run-1", headers=admin).json == {"released": False}
