"""Conditional reads of metadata through a real Waitress: ``ETag`` on the JSON ``GET``s of
models, versions, aliases, files and their lists, ``If-None-Match`` answered ``304 Not
Modified`` (RFC 9110: weak comparison, lists, ``*``), a new ``ETag`` once anything in the
body changed, and no ``304`` for a caller who may not read the resource."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from live_helpers import LiveClient
from modelreg.files.services import FileService
from modelreg.testing import TestDatabase, make_app
from modelreg.testing.server import LiveServer
from security_helpers import add_principal, bearer, registry_service

MODEL = "fraud-detector"
BASE = f"/api/v1/models/{MODEL}"


@dataclass
class Served:
    server: LiveServer
    admin: str
    reader: str
    stranger: str
    settings: dict[str, str]


@pytest.fixture
def client(served) -> Iterator[LiveClient]:
    """A keep-alive connection to the served registry, closed after the test."""
    live = LiveClient(served.server)
    yield live
    live.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """A registry closed to anonymous callers, with ``fraud-detector`` (ready versions 1
    and 2, ``champion`` on 1, a file in each) and three callers: an admin, a reader of every
    model, and a principal who may read only other models."""
    database = TestDatabase.create("sqlite")
    blobs = Path(tempfile.mkdtemp(prefix="modelreg-conditional-"))
    settings = {
        "sqlalchemy.url": database.url,
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "none",
        "modelreg.auth.allow_anonymous_write": "false",
        "modelreg.storage": "local",
        "modelreg.storage.local.path": str(blobs),
        "modelreg.plugins.disabled": "scan webhooks",
        "modelreg.worker.embedded": "false",
    }
    app = make_app(settings)
    try:
        admin = add_principal(app, "root", admin=True)
        reader = add_principal(app, "reader", grants=[("*", "read")], scopes=["read"])
        stranger = add_principal(app, "stranger", grants=[("other-*", "read")])
        store = app.registry["modelreg.blob_store"]
        with registry_service(app) as registry:
            files = FileService(registry, store)
            registry.create_model(MODEL, "a model", {"team": "risk"})
            for number in (1, 2):
                info = store.put(io.BytesIO(b"weights %d" % number))
                version = registry.create_version(MODEL, description="", metadata={},
                                                  lineage={}, tags={"stage": "prod"})
                files.add_file(version, "model.bin", info, "application/octet-stream")
                registry.finalize_version(MODEL, str(number))
            registry.set_alias(MODEL, "champion", 1)
        app.registry["db_engine"].dispose()
        with LiveServer(settings, threads=4) as server:
            yield Served(server, admin, reader, stranger, settings)
    finally:
        database.drop()
        shutil.rmtree(blobs, ignore_errors=True)


READS = [
    BASE,
    "/api/v1/models",
    f"{BASE}/versions",
    f"{BASE}/versions/1",
    f"{BASE}/versions/champion",
    f"{BASE}/versions/latest",
    f"{BASE}/aliases",
    f"{BASE}/aliases/champion",
    f"{BASE}/aliases/champion/history",
    f"{BASE}/versions/champion/files",
]


@pytest.mark.parametrize("path", READS)
def test_a_read_carries_an_etag_and_answers_304_when_it_still_holds(served, client, path):
    status, headers, body = client.call("GET", path, headers=bearer(served.reader))
    assert status == 200, body
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2

    status, headers304, body304 = client.call(
        "GET", path, headers={**bearer(served.reader), "If-None-Match": etag})
    assert (status, body304) == (304, b"")
    assert headers304["ETag"] == etag
    assert headers304.get("Content-Type") is None

    # RFC 9110 13.1.2: If-None-Match compares weakly, takes a list, and * matches any.
    for header in (f"W/{etag}", f'"other", {etag}', "*"):
        status, _, _ = client.call("GET", path,
                                   headers={**bearer(served.reader), "If-None-Match": header})
        assert status == 304, header
    status, headers, again = client.call(
        "GET", path, headers={**bearer(served.reader), "If-None-Match": '"other"'})
    assert (status, headers["ETag"], again) == (200, etag, body)


def test_the_list_of_models_varies_by_caller(served, client):
    status, headers, _ = client.call("GET", "/api/v1/models",
                                              headers=bearer(served.reader))
    assert status == 200
    assert headers["Vary"] == "Authorization"
    _, headers304, _ = client.call(
        "GET", "/api/v1/models",
        headers={**bearer(served.reader), "If-None-Match": headers["ETag"]})
    assert headers304["Vary"] == "Authorization"


def test_head_answers_the_etag_and_304(served, client):
    _, get_headers, _ = client.call("GET", f"{BASE}/aliases/champion",
                                    headers=bearer(served.reader))
    status, headers, body = client.call("HEAD", f"{BASE}/aliases/champion",
                                        headers=bearer(served.reader))
    assert (status, body, headers["ETag"]) == (200, b"", get_headers["ETag"])
    status, headers, body = client.call(
        "HEAD", f"{BASE}/aliases/champion",
        headers={**bearer(served.reader), "If-None-Match": get_headers["ETag"]})
    assert (status, body, headers["ETag"]) == (304, b"", get_headers["ETag"])


def test_revalidations_keep_their_connection(served, client):
    """A poller's ``304``s (and a ``204``) arrive on one connection: Waitress by itself
    closed it after every answer without a body (modelreg.servers, BodilessKeepAliveTask)."""
    path = f"{BASE}/aliases/champion"
    status, headers, _ = client.call("GET", path, headers=bearer(served.reader))
    assert status == 200
    sock = client.conn.sock
    assert sock is not None
    for _ in range(3):
        status, headers304, body = client.call(
            "GET", path, headers={**bearer(served.reader), "If-None-Match": headers["ETag"]})
        assert (status, body) == (304, b"")
        assert headers304.get("Connection") is None
        assert client.conn.sock is sock, "the connection was closed after a 304"
    # A 204 (a tag deleted) keeps it too, and a request that asks to close still closes.
    client.json("PUT", f"{BASE}/tags/poll", {"value": "x"}, headers=bearer(served.admin))
    status, headers204, body = client.call("DELETE", f"{BASE}/tags/poll",
                                           headers=bearer(served.admin))
    assert (status, body) == (204, b"")
    assert headers204.get("Connection") is None and client.conn.sock is sock
    status, headers304, _ = client.call(
        "GET", path, headers={**bearer(served.reader), "If-None-Match": headers["ETag"],
                              "Connection": "close"})
    assert status == 304 and headers304["Connection"] == "close"
    assert client.conn.sock is None


def _etag(client: LiveClient, served: Served, path: str) -> str:
    status, headers, body = client.call("GET", path, headers=bearer(served.reader))
    assert status == 200, body
    return headers["ETag"]


def _revalidate(client: LiveClient, served: Served, path: str, etag: str) -> tuple[int, str]:
    status, headers, _ = client.call(
        "GET", path, headers={**bearer(served.reader), "If-None-Match": etag})
    return status, headers["ETag"]


def test_a_tag_change_makes_a_new_etag(served, client):
    paths = [f"{BASE}/versions/1", f"{BASE}/versions/champion", f"{BASE}/versions"]
    before = {path: _etag(client, served, path) for path in paths}
    client.json("PUT", f"{BASE}/versions/1/tags/approved", {"value": "yes"},
                headers=bearer(served.admin))
    for path in paths:
        status, etag = _revalidate(client, served, path, before[path])
        assert status == 200 and etag != before[path], path
        assert _revalidate(client, served, path, etag) == (304, etag)
    model_etag = _etag(client, served, BASE)
    client.json("PUT", f"{BASE}/tags/owner", {"value": "ana"}, headers=bearer(served.admin))
    assert _revalidate(client, served, BASE, model_etag)[0] == 200


def test_moving_the_alias_makes_a_new_etag(served, client):
    paths = [f"{BASE}/aliases/champion", f"{BASE}/versions/champion",
             f"{BASE}/versions/champion/files", f"{BASE}/aliases", BASE]
    before = {path: _etag(client, served, path) for path in paths}
    client.json("PUT", f"{BASE}/aliases/champion", {"version": 2},
                headers=bearer(served.admin))
    try:
        for path in paths:
            status, etag = _revalidate(client, served, path, before[path])
            assert status == 200 and etag != before[path], path
    finally:
        client.json("PUT", f"{BASE}/aliases/champion", {"version": 1},
                    headers=bearer(served.admin))


@pytest.mark.parametrize("path", [f"{BASE}/aliases/champion", f"{BASE}/versions/champion"])
def test_no_304_for_a_caller_who_may_not_read(served, client, path):
    etag = _etag(client, served, path)
    # A known caller without read: exactly the "no such model" answer, not 304.
    status, headers, body = client.call(
        "GET", path, headers={**bearer(served.stranger), "If-None-Match": etag})
    assert status == 404, body
    assert b'"model_not_found"' in body and "ETag" not in headers
    for header in (etag, "*"):
        status, headers, body = client.call("GET", path, headers={"If-None-Match": header})
        assert status == 401 and b'"unauthorized"' in body and "ETag" not in headers
        status, _, body = client.call(
            "GET", path, headers={"Authorization": "Bearer mr_0000000000000000_nope",
                                  "If-None-Match": header})
        assert status == 401, body


def test_a_missing_resource_is_404_whatever_the_condition(served, client):
    status, _, body = client.call(
        "GET", f"{BASE}/aliases/nope", headers={**bearer(served.reader), "If-None-Match": "*"})
    assert status == 404 and b'"alias_not_found"' in body


def test_json_reads_answer_as_pyramids_renderer_does(served):
    """The JSON reads rendered with their ETag under Pyramid's renderer
    (:func:`modelreg.openapi.json_etag_view`) answer byte for byte and header for header as
    Pyramid's renderer and the ``etag`` deriver do, which render instead in an app with a
    ``BeforeRender`` subscriber: ``200``, ``304``, ``HEAD`` and the list's ``Vary``."""
    import webtest
    from pyramid.interfaces import IBeforeRender

    rendered: list[Any] = []
    fast, pyramids = make_app(served.settings), make_app(served.settings)
    pyramids.registry.registerHandler(rendered.append, (IBeforeRender,))
    try:
        apps = [webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
                for app in (fast, pyramids)]
        for path in READS:
            for method, condition in [("GET", None), ("GET", "etag"), ("GET", '"other"'),
                                      ("HEAD", None), ("HEAD", "*")]:
                answers = []
                for app in apps:
                    headers = bearer(served.reader)
                    if condition == "etag":
                        headers["If-None-Match"] = app.get(path, headers=headers).headers["ETag"]
                    elif condition:
                        headers["If-None-Match"] = condition
                    response = app.request(path, method=method, headers=headers)
                    answers.append((response.status, [
                        (name, value) for name, value in response.headerlist
                        if name != "X-Request-ID"], response.body))
                assert answers[0] == answers[1], (path, method, condition)
                assert answers[0][0] in ("200 OK", "304 Not Modified"), answers[0]
        assert rendered, "the app with a BeforeRender subscriber rendered through Pyramid"
    finally:
        for app in (fast, pyramids):
            app.registry["db_engine"].dispose()
