"""The Hub views declared read-only (``modelreg.api.add_read_only_view``): exactly the ``GET``s
that only read the database run outside pyramid_tm, and they answer as before
(test_hf_client.py runs ``huggingface_hub`` over them, on a live Waitress taking read turns)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest

from modelreg.testing import (
    CORE_PLUGINS,
    TestDatabase,
    TransactionRecorder,
    make_app,
    routes_with_views,
)

PLUGINS = (*CORE_PLUGINS, "modelreg_hf.plugin")
#: The routes whose GET only reads the database: the caller, and everything ``GET`` under
#: ``/api/models/`` (model info, tree, refs, commits).  Not ``resolve``: a file's bytes, or
#: a redirect the blob store makes.
READ_ONLY = {"hf.whoami", "hf.api_models"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[webtest.TestApp, TransactionRecorder]]:
    """The app in this process on SQLite (anonymous callers may write), with the recorder,
    and ``acme--tiny`` with one ready version and the alias ``champion``."""
    db = TestDatabase.create("sqlite", PLUGINS)
    recorder = TransactionRecorder()
    blobs: Path = tmp_path_factory.mktemp("ro-blobs")
    app = make_app({"sqlalchemy.url": db.url, "modelreg.auth.anonymous": "write",
                    "modelreg.storage.local.path": str(blobs),
                    "modelreg.hf.upload_secret": "a-test-secret-of-enough-length"},
                   (*PLUGINS, recorder))
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        client.post_json("/api/v1/models", {"name": "acme--tiny"}, status=201)
        client.post_json("/api/v1/models/acme--tiny/versions", {}, status=201)
        client.put("/api/v1/models/acme--tiny/versions/1/files/config.json", b"{}",
                   headers={"Content-Type": "application/octet-stream"}, status=201)
        client.post("/api/v1/models/acme--tiny/versions/1/finalize", status=200)
        client.put_json("/api/v1/models/acme--tiny/aliases/champion", {"version": 1})
        yield client, recorder
    finally:
        app.registry["db_engine"].dispose()
        db.drop()


def test_exactly_the_read_only_views_run_outside_pyramid_tm(recorded) -> None:
    client, recorder = recorded
    recorder.seen.clear()
    client.get("/api/whoami-v2", status=401)  # anonymous
    for path in ("", "/revision/champion", "/tree/main", "/tree/champion/x", "/refs",
                 "/commits/main"):
        client.get("/api/models/acme/tiny" + path, status=(200, 404))
    client.get("/api/models/acme/tiny/xet-read-token/main", status=501)
    client.get("/acme/tiny/resolve/main/config.json", status=200)
    client.get("/tiny/resolve/main/config.json", status=404)
    assert {name for name, _, _ in recorder.seen} == routes_with_views(client.app, "hf.")
    assert {name for name, _, active in recorder.seen if not active} == READ_ONLY
    assert {(name, active) for name, _, active in recorder.seen} == {
        ("hf.whoami", False), ("hf.api_models", False), ("hf.resolve_org", True),
        ("hf.resolve", True)}
    # HEAD with GET; the writes of the same route stay in pyramid_tm, as resolve's HEAD
    recorder.seen.clear()
    client.head("/api/whoami-v2", status=401)
    client.post("/api/models/acme/tiny/paths-info/main", {"paths": "config.json"})
    client.head("/acme/tiny/resolve/main/config.json", status=200)
    assert recorder.seen == [("hf.whoami", "HEAD", False), ("hf.api_models", "POST", True),
                             ("hf.resolve_org", "HEAD", True)]


def test_a_read_only_view_answers_outside_pyramid_tm(recorded) -> None:
    client, recorder = recorded
    recorder.seen.clear()
    info = client.get("/api/models/acme/tiny", {"blobs": "true"}).json
    assert recorder.seen == [("hf.api_models", "GET", False)]
    assert [s["rfilename"] for s in info["siblings"]] == ["config.json"]
    refs = client.get("/api/models/acme/tiny/refs").json
    assert [b["name"] for b in refs["branches"]] == ["main", "champion"]
    missing = client.get("/api/models/acme/nothing", status=404)
    assert missing.headers["X-Error-Code"] == "RepoNotFound"
