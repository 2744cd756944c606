"""The public API's pieces for protocols with their own paths, versions and writes
(docs/plugins.md): ``add_route_error_shape``, ``Registry.find_version``,
``link_held_blob``, ``open_held_blob``, ``commit_and_wait``, and ``Registry.require``
answering 404 for a model the caller may not read.  A plugin of this file serves them;
WebTest calls it as ``add_principal``'s principals."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import webtest
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid_retry import is_last_attempt

from modelreg import api
from modelreg.testing import CORE_PLUGINS, clear_database, make_app, run_worker
from security_helpers import add_principal, bearer

OPEN = NO_PERMISSION_REQUIRED


def shaped(request: Any, error: api.ApiError) -> Response:
    response = Response(json_body={"shaped": error.message}, status=error.status)
    response.headers["X-Shape"] = error.code
    return response


def thing(request: Any) -> dict[str, Any]:
    return api.registry_of(request).get_model(request.matchdict["name"])


def stage(request: Any) -> dict[str, Any]:
    info = api.registry_of(request).store_blob(request.body_file_raw,
                                               hold=("t", request.matchdict["key"]))
    return {"sha256": info.sha256}


def link(request: Any) -> dict[str, Any]:
    match = request.matchdict
    file, created = api.registry_of(request).link_held_blob(
        match["model"], match["number"], match["path"], "t", match["key"])
    return {"file": file, "created": created}


def read(request: Any) -> Response:
    with api.registry_of(request).open_held_blob("t", request.matchdict["key"]) as stream:
        return Response(body=stream.read(), content_type="application/octet-stream")


def find(request: Any) -> dict[str, Any]:
    version = api.registry_of(request).find_version(request.matchdict["model"],
                                                    request.matchdict["prefix"])
    return {"number": None if version is None else version["number"]}


def move(request: Any) -> dict[str, Any]:
    match, expected = request.matchdict, request.params.get("expected")
    alias, created = api.registry_of(request).move_alias(
        match["model"], match["alias"], int(match["number"]),
        expected=None if expected is None else int(expected))
    return {"version": alias["version"], "created": created}


def wait(request: Any) -> dict[str, Any]:
    """Finalize version ``number`` and wait briefly; then write a second draft and fail when
    ``?fail`` is given: the first write stays committed, the second does not."""
    reg = api.registry_of(request)
    model, number = request.matchdict["model"], request.matchdict["number"]
    reg.finalize_version(model, number)
    retried_before = not is_last_attempt(request)
    document = reg.commit_and_wait(model, number, timeout=0.3, interval=0.05)
    reg.create_version(model, description="after the wait")
    if "fail" in request.params:
        raise api.Conflict("failing after the wait", code="failed_after_wait")
    return {"status": document["status"], "retried_before": retried_before,
            "retried_after": not is_last_attempt(request)}


class ProtocolPlugin:
    """Routes without a prefix of their own, and a scanner that finds nothing (so that a
    finalized version is ``validating`` until the worker runs)."""

    @api.hookimpl
    def modelreg_pyramid_configure(self, config: Any) -> None:
        """The test routes."""
        for name, pattern, view, method in (
                ("t.thing", "/{name}/thing", thing, "GET"),
                ("t.plain", "/plain/{name}", thing, "GET"),
                ("t.stage", "/t/stage/{key}", stage, "PUT"),
                ("t.link", "/t/{model}/{number}/link/{key}/{path}", link, "POST"),
                ("t.read", "/t/read/{key}", read, "GET"),
                ("t.find", "/t/{model}/find/{prefix}", find, "GET"),
                ("t.wait", "/t/{model}/{number}/wait", wait, "POST"),
                ("t.move", "/t/{model}/move/{alias}/{number}", move, "POST")):
            config.add_route(name, pattern)
            config.add_view(view, route_name=name, request_method=method, permission=OPEN,
                            renderer="json")
        api.add_route_error_shape(config, "t.thing", shaped)
        api.add_streaming_view(config, "t.stage", "PUT")

    @api.hookimpl
    def modelreg_scan_file(self, model: Any, version: Any, file: Any, opener: Any,
                           settings: Any) -> list[api.Finding]:
        """Nothing found."""
        return []


@pytest.fixture
def app(modelreg_settings: dict[str, Any], modelreg_database: Any) -> Any:
    wsgi = make_app({**modelreg_settings, "modelreg.auth.anonymous": "none"},
                    (*CORE_PLUGINS, ProtocolPlugin()))
    yield webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    clear_database(wsgi.registry["db_engine"])
    wsgi.registry["db_engine"].dispose()


def test_a_route_error_shape_and_404_for_an_unreadable_model(app: Any) -> None:
    admin = add_principal(app.app, "admin", admin=True)
    other = add_principal(app.app, "other", grants=[("shared-*", "write")])
    app.post_json("/api/v1/models", {"name": "secret"}, headers=bearer(admin), status=201)
    assert app.get("/secret/thing", headers=bearer(admin)).json["name"] == "secret"
    response = app.get("/secret/thing", headers=bearer(other), status=404)
    assert response.json == {"shaped": "model 'secret' does not exist"}
    assert response.headers["X-Shape"] == "model_not_found"
    response = app.get("/secret/thing", status=401)
    assert response.headers["X-Shape"] == "unauthorized"
    # a route without a shape answers the core's JSON error, 404 all the same
    response = app.get("/plain/secret", headers=bearer(other), status=404)
    assert response.json["error"]["code"] == "model_not_found"
    assert "X-Shape" not in response.headers


def test_a_held_blob_is_read_back_and_linked_into_a_draft(app: Any) -> None:
    admin = add_principal(app.app, "admin", admin=True)
    reader = add_principal(app.app, "reader", grants=[("*", "read")])
    data = b"staged weights " * 100
    sha = app.put("/t/stage/weights", data, headers={
        **bearer(admin), "Content-Type": "application/octet-stream"}).json["sha256"]
    assert sha == hashlib.sha256(data).hexdigest()
    assert app.get("/t/read/weights", headers=bearer(admin)).body == data
    app.get("/t/read/nothing", headers=bearer(admin), status=404)
    app.post_json("/api/v1/models", {"name": "m"}, headers=bearer(admin), status=201)
    app.post_json("/api/v1/models/m/versions", {}, headers=bearer(admin), status=201)
    app.post("/t/m/1/link/weights/w.bin", headers=bearer(reader), status=403)
    app.post("/t/m/1/link/nothing/w.bin", headers=bearer(admin), status=404)
    answer = app.post("/t/m/1/link/weights/w.bin", headers=bearer(admin)).json
    assert answer["created"] is True and answer["file"]["sha256"] == sha
    files = app.get("/api/v1/models/m/versions/1/files", headers=bearer(admin)).json["files"]
    assert [(f["path"], f["size"]) for f in files] == [("w.bin", len(data))]


def test_find_version_by_digest_prefix_and_commit_and_wait(app: Any) -> None:
    admin = add_principal(app.app, "admin", admin=True)
    headers = bearer(admin)
    app.post_json("/api/v1/models", {"name": "m"}, headers=headers, status=201)
    app.post_json("/api/v1/models/m/versions", {}, headers=headers, status=201)
    app.put("/api/v1/models/m/versions/1/files/a.txt", b"a", headers={
        **headers, "Content-Type": "application/octet-stream"}, status=201)
    # the scan is not run (no worker): still validating after the wait, and committed
    # ... and a conflict after the commit is not retried (that would write it again)
    assert app.post("/t/m/1/wait", headers=headers).json == {
        "status": "validating", "retried_before": True, "retried_after": False}
    versions = app.get("/api/v1/models/m/versions", headers=headers).json["versions"]
    assert sorted(v["number"] for v in versions) == [1, 2]
    # what the view wrote after the wait is rolled back with its error; the wait's is kept
    app.post_json("/api/v1/models/m/versions", {}, headers=headers, status=201)  # 3
    app.put("/api/v1/models/m/versions/3/files/b.txt", b"b", headers={
        **headers, "Content-Type": "application/octet-stream"}, status=201)
    app.post("/t/m/3/wait?fail", headers=headers, status=409)
    versions = app.get("/api/v1/models/m/versions", headers=headers).json["versions"]
    assert {v["number"]: v["status"] for v in versions} == {
        1: "validating", 2: "draft", 3: "validating"}
    run_worker(app.app)
    digest = app.get("/api/v1/models/m/versions/1", headers=headers).json["digest"]
    hex_digest = digest.removeprefix("sha256:")
    assert app.get(f"/t/m/find/{hex_digest[:40]}", headers=headers).json == {"number": 1}
    assert app.get(f"/t/m/find/{hex_digest[:12]}", headers=headers).json == {"number": 1}
    assert app.get("/t/m/find/" + "0" * 40, headers=headers).json == {"number": None}
    assert app.get("/t/m/find/abc", headers=headers).json == {"number": None}


def test_move_alias_moves_only_from_the_expected_version(app: Any) -> None:
    admin = add_principal(app.app, "admin", admin=True)
    reader = add_principal(app.app, "reader", grants=[("*", "read")])
    headers = bearer(admin)
    app.post_json("/api/v1/models", {"name": "m"}, headers=headers, status=201)
    for number in (1, 2, 3):
        app.post_json("/api/v1/models/m/versions", {}, headers=headers, status=201)
        app.put(f"/api/v1/models/m/versions/{number}/files/f.txt", str(number).encode(),
                headers={**headers, "Content-Type": "application/octet-stream"}, status=201)
        app.post(f"/api/v1/models/m/versions/{number}/finalize", headers=headers)
    run_worker(app.app)
    assert app.post("/t/m/move/prod/1", headers=headers).json == {"version": 1, "created": True}
    response = app.post("/t/m/move/prod/2", headers=headers, status=409)  # it exists
    assert response.json["error"]["details"] == {"alias": "prod", "version": 1,
                                                 "expected": None}
    assert app.post("/t/m/move/prod/2?expected=1", headers=headers).json["version"] == 2
    # a second move from version 1 (a commit that built on it meanwhile) is refused
    response = app.post("/t/m/move/prod/3?expected=1", headers=headers, status=409)
    assert response.json["error"]["code"] == "alias_moved"
    app.post("/t/m/move/prod/3?expected=2", headers=bearer(reader), status=403)
    app.post("/t/none/move/prod/3", headers=headers, status=404)
    alias = app.get("/api/v1/models/m/aliases/prod", headers=headers).json
    assert alias["version"] == 2
