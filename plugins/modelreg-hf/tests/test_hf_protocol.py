"""What the client relies on, seen over HTTP: the headers of ``resolve``, the error shape,
and the signed LFS upload URLs (bound to a model, a sha256, a size and an expiry)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import webtest
from modelreg_hf import signing
from modelreg_hf.plugin import modelreg_web_sections
from pyramid.registry import Registry

from modelreg.testing import CORE_PLUGINS, TestDatabase, make_app

SECRET = b"a-test-secret-of-enough-length"  # conftest.py's modelreg.hf.upload_secret


def call(hub: Any, method: str, path: str, body: Any = None, who: str | None = "admin",
         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = dict(headers or {})
    if isinstance(body, dict):
        sent.setdefault("Content-Type", "application/json")
    if who is not None:
        sent["Authorization"] = f"Bearer {hub.tokens[who]}"
    url = path if path.startswith("http") else hub.url + path
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                     headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_resolve_headers_range_and_errors(hub: Any, pushed: dict[str, Any]) -> None:
    config = pushed["files"]["config.json"]
    commit = pushed["out"]["c1"]
    status, headers, body = call(hub, "HEAD", "/fraud-detector/resolve/champion/config.json")
    assert status == 200 and body == b""
    assert headers["X-Repo-Commit"] == commit
    assert headers["ETag"].strip('"') == hashlib.sha256(config).hexdigest()
    assert headers["X-Linked-Size"] == str(len(config))
    status, headers, body = call(hub, "GET", f"/fraud-detector/resolve/{commit}/config.json",
                                 headers={"Range": "bytes=2-5"})
    assert (status, body) == (206, config[2:6])
    digest = hub.rest("GET", "/models/fraud-detector/versions/1")["digest"]
    status, headers, body = call(hub, "GET", f"/fraud-detector/resolve/{digest}/config.json")
    assert (status, body, headers["X-Repo-Commit"]) == (200, config, commit)
    status, headers, body = call(hub, "GET", "/modelreg/fraud-detector/resolve/1/config.json")
    assert (status, body, headers["X-Repo-Commit"]) == (200, config, commit)
    status, headers, body = call(hub, "GET", "/fraud-detector/resolve/champion/nothing.json")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    assert headers["X-Repo-Commit"] == commit  # the client caches the file's absence
    assert "nothing.json" in json.loads(body)["error"]
    status, headers, _ = call(hub, "GET", "/fraud-detector/resolve/v9/config.json")
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
    status, headers, _ = call(hub, "GET", "/nobody/resolve/main/config.json")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, _ = call(hub, "GET", "/api/models/fraud-detector", who=None)
    assert status == 401 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, _ = call(hub, "GET", "/api/models/fraud-detector/xet-read-token/main")
    assert status == 501 and "HF_HUB_DISABLE_XET" in headers["X-Error-Message"]
    # the core's routes are not shadowed
    status, _, body = call(hub, "GET", "/api/v1/models/fraud-detector")
    assert status == 200 and json.loads(body)["name"] == "fraud-detector"
    status, _, _ = call(hub, "GET", "/healthz", who=None)
    assert status == 200


def batch(hub: Any, repo: str, data: bytes, who: str | None = "admin") -> tuple[int, Any]:
    status, _, body = call(hub, "POST", f"/{repo}.git/info/lfs/objects/batch", {
        "operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
        "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]}, who=who,
        headers={"Content-Type": "application/vnd.git-lfs+json"})
    return status, json.loads(body)


def test_signed_upload_urls_take_exactly_their_bytes(hub: Any, pushed: dict[str, Any]) -> None:
    data = b"weights for the signed URL test" * 10
    oid = hashlib.sha256(data).hexdigest()
    status, answer = batch(hub, "fraud-detector", data, who=None)
    assert status == 401
    status, answer = batch(hub, "fraud-detector", data, who="readonly")
    assert status == 403
    status, answer = batch(hub, "fraud-detector", data)
    assert status == 200 and answer["transfer"] == "basic"
    href = answer["objects"][0]["actions"]["upload"]["href"]
    token = href.rsplit("/", 1)[1]
    # other bytes, another length, a forged or an expired URL: refused, no token needed
    assert call(hub, "PUT", href, b"x" * len(data), who=None)[0] == 400
    assert call(hub, "PUT", href, data[:-1], who=None)[0] == 400
    forged = signing.sign(b"another-secret-of-enough-length",
                          signing.verify(SECRET, token))
    assert call(hub, "PUT", href.replace(token, forged), data, who=None)[0] == 403
    expired = signing.sign(SECRET, signing.UploadGrant("fraud-detector", oid, len(data), 1,
                                                       int(time.time()) - 1))
    status, headers, _ = call(hub, "PUT", href.replace(token, expired), data, who=None)
    assert status == 403 and "expired" in headers["X-Error-Message"]
    assert call(hub, "PUT", href, data, who=None)[0] == 200
    # uploaded now: the batch asks for nothing more
    status, answer = batch(hub, "fraud-detector", data)
    assert "actions" not in answer["objects"][0]
    # bytes uploaded for fraud-detector are not for another model's commits
    commit = (json.dumps({"key": "header", "value": {"summary": "borrow"}}) + "\n"
              + json.dumps({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                        "oid": oid, "size": len(data)}}))
    status, headers, body = call(hub, "POST", "/api/models/acme/tiny/commit/main",
                                 commit.encode(),
                                 headers={"Content-Type": "application/x-ndjson"})
    assert status == 400 and json.loads(body)["code"] == "lfs_object_missing"
    versions = call(hub, "GET", "/api/v1/models/acme--tiny/versions")[2]
    assert len(json.loads(versions)["versions"]) == 1  # nothing half-written


def test_an_upload_never_committed_is_released_after_the_grace(hub: Any,
                                                               pushed: dict[str, Any]) -> None:
    data = b"an upload nobody commits"
    grant = signing.UploadGrant("fraud-detector", hashlib.sha256(data).hexdigest(), len(data),
                                1, int(time.time()) + 2)
    status, _, _ = call(hub, "PUT", f"/hf-lfs/upload/{signing.sign(SECRET, grant)}", data,
                        who=None)
    assert status == 200
    assert "actions" not in batch(hub, "fraud-detector", data)[1]["objects"][0]  # held
    time.sleep(max(0.0, grant.expires + 5 - time.time()) + 0.5)  # hold_grace is 5 s here
    # the next batch releases it to garbage collection: the bytes are asked for again
    assert "actions" in batch(hub, "fraud-detector", data)[1]["objects"][0]


def test_the_version_page_shows_a_fetch_snippet() -> None:
    class Request:
        application_url = "https://registry.example.com"
        registry = Registry("test")  # a Pyramid registry, as in an app, with no settings

    Request.registry.settings = {}

    sections = modelreg_web_sections(
        page="version", subject={"model": "acme--tiny", "number": 3, "aliases": ["champion"]},
        request=Request())
    assert sections is not None
    html = sections[0].html
    assert "HF_ENDPOINT=https://registry.example.com" in html
    assert "snapshot_download(&#x27;acme/tiny&#x27;, revision=&#x27;champion&#x27;)" in html
    assert modelreg_web_sections(page="model", subject={}, request=Request()) is None


def test_the_web_ui_version_page_shows_the_snippet(tmp_path: Path) -> None:
    """With modelreg-web installed, its version page carries the section."""
    pytest.importorskip("modelreg_web")
    plugins = (*CORE_PLUGINS, "modelreg_web.plugin", "modelreg_hf.plugin")
    db = TestDatabase.create("sqlite", plugins)
    app = make_app({"sqlalchemy.url": db.url, "modelreg.auth.anonymous": "write",
                    "modelreg.storage.local.path": str(tmp_path / "blobs"),
                    "modelreg.hf.upload_secret": SECRET.decode()}, plugins)
    try:
        web = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        web.post_json("/api/v1/models", {"name": "acme--tiny"}, status=201)
        web.post_json("/api/v1/models/acme--tiny/versions", {}, status=201)
        web.put("/api/v1/models/acme--tiny/versions/1/files/config.json", b"{}",
                headers={"Content-Type": "application/octet-stream"}, status=201)
        web.post("/api/v1/models/acme--tiny/versions/1/finalize", status=200)
        web.put_json("/api/v1/models/acme--tiny/aliases/champion", {"version": 1})
        page = web.get("/ui/models/acme--tiny/versions/1", headers={"Accept": "text/html"})
        assert "Fetch with Hugging Face clients" in page.text
        assert "snapshot_download(&#x27;acme/tiny&#x27;, revision=&#x27;champion&#x27;)" \
            in page.text
    finally:
        app.registry["db_engine"].dispose()
        db.drop()
