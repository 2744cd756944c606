# ruff: noqa: F811 - the fixtures imported from files_support are redefined as arguments
"""The file API on every storage backend: upload, download, list, delete, finalize, dedupe.

Every test runs on the local backend and on S3 (the ``modelreg-s3`` plugin against moto's
S3 server process), and on every database; responses are checked against the OpenAPI
document.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from files_support import (  # noqa: F401 - fixtures
    MAX_PUT,
    blob_digests,
    file_url,
    files_app,
    files_wsgi,
    local_leftovers,
    rows,
    s3_endpoint,
    sha,
)
from helpers import API, create_model, create_version, error_code

M = "fraud-detector"
OCTETS = {"Content-Type": "application/octet-stream"}


def put(app, version, path, data, status=None, headers=None, **kwargs):
    return app.put(file_url(M, version, path), data, headers={**OCTETS, **(headers or {})},
                   status=status, **kwargs)


def b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode()


@pytest.fixture
def draft(files_app):
    create_model(files_app, M)
    return create_version(files_app, M)["number"]


# ------------------------------------------------------------------- upload, download


def test_put_get_head_list_delete(files_app, draft):
    data = b"\x00weights\xff" * 1000
    response = put(files_app, draft, "weights/model.safetensors", data, status=201)
    body = response.json
    assert body["path"] == "weights/model.safetensors"
    assert body["size"] == len(data) and body["sha256"] == sha(data)
    assert body["media_type"] == "application/octet-stream"
    assert response.location.endswith(file_url(M, draft, "weights/model.safetensors"))

    got = files_app.get(file_url(M, draft, "weights/model.safetensors"), status=200)
    assert got.body == data
    assert got.headers["ETag"] == f'"{sha(data)}"'
    assert got.headers["Content-Length"] == str(len(data))
    assert got.headers["Accept-Ranges"] == "bytes"
    assert got.headers["Content-Disposition"].startswith(
        'attachment; filename="model.safetensors"')
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Type"] == "application/octet-stream"

    head = files_app.head(file_url(M, draft, "weights/model.safetensors"), status=200)
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["ETag"] == f'"{sha(data)}"'

    put(files_app, draft, "config.json", b"{}", status=201,
        headers={"Content-Type": "application/json"})
    listing = files_app.get(f"{API}/models/{M}/versions/{draft}/files").json
    assert listing["model"] == M and listing["version"] == draft and listing["digest"] is None
    assert [(f["path"], f["size"], f["sha256"], f["media_type"]) for f in listing["files"]] == [
        ("config.json", 2, sha(b"{}"), "application/json"),
        ("weights/model.safetensors", len(data), sha(data), "application/octet-stream"),
    ]
    assert files_app.get(file_url(M, draft, "config.json")).headers["Content-Type"] == \
        "application/json"

    files_app.delete(file_url(M, draft, "config.json"), status=204)
    response = files_app.get(file_url(M, draft, "config.json"), status=404)
    assert error_code(response) == "file_not_found"
    response = files_app.delete(file_url(M, draft, "config.json"), status=404)
    assert error_code(response) == "file_not_found"
    assert [f["path"] for f in
            files_app.get(f"{API}/models/{M}/versions/{draft}/files").json["files"]] == [
        "weights/model.safetensors"]
    assert local_leftovers(files_app) == []


def test_unknown_model_and_version(files_app, draft):
    response = files_app.put(file_url("nope", 1, "a.bin"), b"x", headers=OCTETS, status=404)
    assert error_code(response) == "model_not_found"
    response = put(files_app, 99, "a.bin", b"x", status=404)
    assert error_code(response) == "version_not_found"
    response = put(files_app, "latest", "a.bin", b"x", status=422)
    assert error_code(response) == "invalid_version_number"
    assert rows(files_app, "files") == []


def test_empty_file(files_app, draft):
    put(files_app, draft, "empty", b"", status=201)
    got = files_app.get(file_url(M, draft, "empty"))
    assert got.body == b"" and got.headers["ETag"] == f'"{sha(b"")}"'
    files_app.get(file_url(M, draft, "empty"), headers={"Range": "bytes=0-"}, status=416)


def test_unicode_file_name_is_quoted_in_content_disposition(files_app, draft):
    put(files_app, draft, "données/modèle é.bin", b"x", status=201)
    got = files_app.get(file_url(M, draft, "données/modèle é.bin"))
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="mod_le _.bin"')
    assert "filename*=UTF-8''mod%C3%A8le%20%C3%A9.bin" in disposition


# ----------------------------------------------------------------------- ranges, caching


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-0", 0, 1),
    ("bytes=10-19", 10, 20),
    ("bytes=990-", 990, 1000),
    ("bytes=-5", 995, 1000),
    ("bytes=-5000", 0, 1000),
    ("bytes=995-5000", 995, 1000),
])
def test_single_range(files_app, draft, header, start, end):
    data = bytes(range(256)) * 4 + b"x" * (1000 - 1024 + 24)
    data = data[:1000]
    put(files_app, draft, "r.bin", data, status=201)
    got = files_app.get(file_url(M, draft, "r.bin"), headers={"Range": header}, status=206)
    assert got.body == data[start:end]
    assert got.headers["Content-Range"] == f"bytes {start}-{end - 1}/1000"
    assert got.headers["Content-Length"] == str(end - start)
    assert got.headers["ETag"] == f'"{sha(data)}"'


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(files_app, draft, header):
    put(files_app, draft, "r.bin", b"y" * 1000, status=201)
    response = files_app.get(file_url(M, draft, "r.bin"), headers={"Range": header},
                             status=416)
    assert error_code(response) == "range_not_satisfiable"
    assert response.headers["Content-Range"] == "bytes */1000"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=5-1", "bytes=x-"])
def test_multiple_or_malformed_ranges_send_everything(files_app, draft, header):
    put(files_app, draft, "r.bin", b"z" * 100, status=201)
    got = files_app.get(file_url(M, draft, "r.bin"), headers={"Range": header}, status=200)
    assert got.body == b"z" * 100


def test_if_none_match_and_if_range(files_app, draft):
    data = b"cacheable" * 10
    put(files_app, draft, "c.bin", data, status=201)
    etag = f'"{sha(data)}"'
    url = file_url(M, draft, "c.bin")
    not_modified = files_app.get(url, headers={"If-None-Match": etag}, status=304)
    assert not_modified.body == b"" and not_modified.headers["ETag"] == etag
    files_app.get(url, headers={"If-None-Match": f'"other", W/{etag}'}, status=304)
    files_app.get(url, headers={"If-None-Match": "*"}, status=304)
    assert files_app.get(url, headers={"If-None-Match": '"other"'}, status=200).body == data
    # If-Range with another validator: the whole file instead of the range.
    assert files_app.get(url, headers={"Range": "bytes=0-1", "If-Range": '"old"'},
                         status=200).body == data
    assert files_app.get(url, headers={"Range": "bytes=0-1", "If-Range": etag},
                         status=206).body == data[:2]


# ----------------------------------------------------------------------------- digests


def test_client_digest_that_matches(files_app, draft):
    data = b"promised bytes"
    put(files_app, draft, "a.bin", data, status=201,
        headers={"Digest": f"sha-256={b64(sha(data))}"})
    put(files_app, draft, "b.bin", data, status=201,
        headers={"Digest": f"md5=abc, SHA-256={b64(sha(data))}"})
    put(files_app, draft, "c.bin", data, status=201,
        headers={"Content-Digest": f"sha-256=:{b64(sha(data))}:"})
    files_app.put(file_url(M, draft, "d.bin") + f"?digest=sha256:{sha(data).upper()}", data,
                  headers=OCTETS, status=201)


@pytest.mark.parametrize("how", ["header", "query", "content-digest"])
def test_digest_mismatch_is_400_and_stores_nothing(files_app, draft, how):
    data, wrong = b"actual content", sha(b"something else")
    before = blob_digests(files_app)
    url, headers = file_url(M, draft, "a.bin"), dict(OCTETS)
    if how == "header":
        headers["Digest"] = f"sha-256={b64(wrong)}"
    elif how == "content-digest":
        headers["Content-Digest"] = f"sha-256=:{b64(wrong)}:"
    else:
        url += f"?digest=sha256:{wrong}"
    response = files_app.put(url, data, headers=headers, status=400)
    assert error_code(response) == "digest_mismatch"
    assert response.json["error"]["details"] == {"expected": f"sha256:{wrong}",
                                                 "actual": f"sha256:{sha(data)}"}
    assert rows(files_app, "files") == [] and rows(files_app, "blobs") == []
    assert blob_digests(files_app) == before
    assert local_leftovers(files_app) == []


@pytest.mark.parametrize("headers, query", [
    ({"Digest": "sha-256=not base64!"}, ""),
    ({"Digest": "sha-256=" + base64.b64encode(b"short").decode()}, ""),
    ({}, "?digest=md5:abc"),
    ({}, "?digest=sha256:" + "0" * 63),
    ({"Digest": f"sha-256={b64(sha(b'a'))}"}, f"?digest=sha256:{sha(b'b')}"),
])
def test_malformed_or_disagreeing_digests_are_400(files_app, draft, headers, query):
    response = files_app.put(file_url(M, draft, "a.bin") + query, b"a",
                             headers={**OCTETS, **headers}, status=400)
    assert error_code(response) == "invalid_digest"
    assert rows(files_app, "files") == []


# --------------------------------------------------------------- re-upload, immutability


def test_identical_reupload_is_idempotent_and_other_bytes_replace(files_app, draft):
    first = put(files_app, draft, "m.bin", b"one", status=201).json
    again = put(files_app, draft, "m.bin", b"one", status=200).json
    assert again == first
    replaced = put(files_app, draft, "m.bin", b"two", status=200).json
    assert replaced["sha256"] == sha(b"two") and replaced["size"] == 3
    assert files_app.get(file_url(M, draft, "m.bin")).body == b"two"
    assert len(rows(files_app, "files")) == 1
    audit = files_app.get(f"{API}/audit", expect_errors=True)
    if audit.status_int == 200:  # the audit API needs an admin on secured registries
        actions = [e["action"] for e in audit.json.get("events", [])]
        assert "file.added" in actions and "file.replaced" in actions


def test_ready_version_refuses_every_write(files_app, draft):
    put(files_app, draft, "m.bin", b"weights", status=201)
    ready = files_app.post(f"{API}/models/{M}/versions/{draft}/finalize", status=200).json
    assert ready["status"] == "ready"
    for response in (
        put(files_app, draft, "m.bin", b"weights", status=409),
        put(files_app, draft, "m.bin", b"other", status=409),
        put(files_app, draft, "new.bin", b"new", status=409),
        files_app.delete(file_url(M, draft, "m.bin"), status=409),
        files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads", {"path": "x"},
                            status=409),
    ):
        assert error_code(response) == "version_immutable"
    assert files_app.get(file_url(M, draft, "m.bin")).body == b"weights"
    assert [r["path"] for r in rows(files_app, "files")] == ["m.bin"]


def test_body_over_max_put_size_is_json_413_before_reading(files_app, draft):
    response = put(files_app, draft, "big.bin", b"x" * (MAX_PUT + 1), status=413)
    assert error_code(response) == "payload_too_large"
    assert response.json["error"]["details"] == {"max_bytes": MAX_PUT}
    assert rows(files_app, "files") == [] and rows(files_app, "blobs") == []
    assert local_leftovers(files_app) == []


# -------------------------------------------------------------------------- bad paths

BAD_PATHS = [
    ("/etc/passwd", "absolute"),
    ("a/../../etc/passwd", "dot_segment"),
    ("..", "dot_segment"),
    ("a/..", "dot_segment"),
    ("./a", "dot_segment"),
    ("a/./b", "dot_segment"),
    ("a\\b", "backslash"),
    ("..\\..\\windows", "backslash"),
    ("a%00b", "control_character"),
    ("a%01b", "control_character"),
    ("tab%09name", "control_character"),
    ("new%0Aline", "control_character"),
    ("del%7F", "control_character"),
    ("c1%C2%85", "control_character"),
    ("a//b", "empty_segment"),
    ("a/", "empty_segment"),
    ("", "empty"),
    ("x" * 513, "too_long"),
    ("a/" + "y" * 256, "too_long"),
    ("%252e%252e/secret", "percent_encoded"),
    ("a%2525b", "percent_encoded"),
    ("e%CC%81.bin", "not_nfc"),
]


@pytest.mark.parametrize("path, rule", BAD_PATHS, ids=[rule + str(i) for i, (_, rule)
                                                         in enumerate(BAD_PATHS)])
def test_invalid_paths_are_422(files_app, draft, path, rule):
    url = f"{API}/models/{M}/versions/{draft}/files/{path}"
    response = files_app.put(url, b"data", headers=OCTETS, status=422)
    assert error_code(response) == "invalid_path"
    assert response.json["error"]["details"]["rule"] == rule
    for method in ("get", "delete"):
        response = getattr(files_app, method)(url, status=422)
        assert error_code(response) == "invalid_path"
    response = files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads",
                                   {"path": _decoded(path)}, status=422)
    # NUL anywhere in a JSON body is refused before the body is read into its schema.
    assert error_code(response) == ("invalid_body" if "%00" in path else "invalid_path")
    assert rows(files_app, "files") == [] and rows(files_app, "upload_sessions") == []


def _decoded(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path)


@pytest.mark.parametrize("path", ["%2e%2e/x", "a/%2E%2E/b", "a%2F..%2Fb", "%2Fetc"])
def test_percent_encoded_traversal_is_refused(files_app, draft, path):
    # WSGI decodes the URL once: these arrive as '..', '/' and are refused as such.
    response = files_app.put(f"{API}/models/{M}/versions/{draft}/files/{path}", b"x",
                             headers=OCTETS, status=422)
    assert error_code(response) == "invalid_path"
    assert rows(files_app, "files") == []


@pytest.mark.parametrize("path", ["a b.bin", "dir/sub/file.tar.gz", "ünïcode/名前.bin",
                                  ".hidden", "a..b", "-dash", "x" * 255])
def test_unusual_but_valid_paths(files_app, draft, path):
    put(files_app, draft, path, b"ok", status=201)
    assert files_app.get(file_url(M, draft, path)).body == b"ok"


# ------------------------------------------------------------------ finalize and digests


def manifest_digest(files: list[tuple[str, bytes]]) -> str:
    """The version digest as docs/api.md defines it, computed independently here."""
    entries = sorted(({"path": p, "size": len(d), "sha256": sha(d)} for p, d in files),
                     key=lambda e: e["path"])
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_finalize_refuses_an_empty_version(files_app, draft):
    response = files_app.post(f"{API}/models/{M}/versions/{draft}/finalize", status=422)
    assert error_code(response) == "version_empty"
    assert files_app.get(f"{API}/models/{M}/versions/{draft}").json["status"] == "draft"


def test_finalize_digest_and_refs(files_app, draft):
    files = [("weights/b.bin", b"bbb"), ("a.json", b'{"a":1}'), ("é/c", b"")]
    for path, data in files:
        put(files_app, draft, path, data, status=201)
    ready = files_app.post(f"{API}/models/{M}/versions/{draft}/finalize").json
    assert ready["status"] == "ready"
    assert ready["digest"] == manifest_digest(files)
    # The same files in a later version: the same digest; the earliest ready one wins.
    second = create_version(files_app, M)["number"]
    for path, data in reversed(files):
        put(files_app, second, path, data, status=201)
    again = files_app.post(f"{API}/models/{M}/versions/{second}/finalize").json
    assert again["digest"] == ready["digest"]
    by_digest = files_app.get(f"{API}/models/{M}/versions/{ready['digest']}").json
    assert by_digest["number"] == draft
    files_app.put_json(f"{API}/models/{M}/aliases/champion", {"version": second},
                       status=201)
    for ref in (str(draft), ready["digest"], "champion", "latest"):
        listing = files_app.get(f"{API}/models/{M}/versions/{ref}/files").json
        assert listing["digest"] == ready["digest"]
        assert sorted(f["path"] for f in listing["files"]) == sorted(p for p, _ in files)
        assert files_app.get(file_url(M, ref, "weights/b.bin")).body == b"bbb"
    missing = "sha256:" + "0" * 64
    response = files_app.get(f"{API}/models/{M}/versions/{missing}/files", status=404)
    assert error_code(response) == "version_not_found"


# ------------------------------------------------------------------------------ dedupe


def test_same_bytes_in_many_versions_and_models_are_stored_once(files_app):
    data = b"shared weights " * 5000
    before = blob_digests(files_app)
    for model in ("dedupe-a", "dedupe-b"):
        create_model(files_app, model)
        for _ in range(3):
            number = create_version(files_app, model)["number"]
            files_app.put(file_url(model, number, "w.bin"), data, headers=OCTETS, status=201)
            files_app.put(file_url(model, number, "copy/w.bin"), data, headers=OCTETS,
                          status=201)
    after = blob_digests(files_app)
    assert len(after) == len(set(after)) == len(set(before)) + (sha(data) not in before)
    assert after.count(sha(data)) == 1
    assert [(r["sha256"], r["size"]) for r in rows(files_app, "blobs")] == [
        (sha(data), len(data))]
    assert len(rows(files_app, "files")) == 12
    assert local_leftovers(files_app) == []


# ----------------------------------------------------------- rejected versions, redirects


def test_rejected_version_refuses_writes(modelreg_database):
    """A version the policy rejected is as immutable as a ready one."""
    import webtest

    from modelreg.testing import clear_database, make_app

    app = make_app({"sqlalchemy.url": modelreg_database.url,
                    "modelreg.policy.required_metadata": "framework"})
    try:
        test = webtest.TestApp(app)
        create_model(test, M)
        number = create_version(test, M)["number"]
        test.put(file_url(M, number, "m.bin"), b"weights", headers=OCTETS, status=201)
        body = test.post(f"{API}/models/{M}/versions/{number}/finalize").json
        assert body["status"] == "rejected" and body["digest"] is None
        response = test.put(file_url(M, number, "m.bin"), b"other", headers=OCTETS,
                            status=409)
        assert error_code(response) == "version_immutable"
        test.delete(file_url(M, number, "m.bin"), status=409)
        assert test.get(file_url(M, number, "m.bin")).body == b"weights"
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


def test_s3_presigned_downloads_redirect(modelreg_database, s3_endpoint, tmp_path_factory,
                                         request, openapi_checker):
    """With presigned downloads on, S3 answers GETs with a redirect the client follows."""
    import urllib.request

    from files_support import storage_settings
    from modelreg.testing import clear_database, make_app
    from openapi_checking import CheckedTestApp

    settings, plugins = storage_settings("s3", request, tmp_path_factory)
    settings["modelreg.storage.s3.presigned_downloads"] = "true"
    app = make_app({"sqlalchemy.url": modelreg_database.url, **settings}, plugins)
    try:
        test = CheckedTestApp(app)
        test.checker = openapi_checker
        create_model(test, M)
        number = create_version(test, M)["number"]
        data = b"served by S3" * 100
        test.put(file_url(M, number, "dir/m.bin"), data, headers=OCTETS, status=201)
        response = test.get(file_url(M, number, "dir/m.bin"), status=302)
        assert response.headers["ETag"] == f'"{sha(data)}"'
        location = response.headers["Location"]
        assert location.startswith(s3_endpoint)
        with urllib.request.urlopen(location) as fetched:
            assert fetched.read() == data
        test.get(file_url(M, number, "dir/m.bin"), headers={"If-None-Match": f'"{sha(data)}"'},
                 status=304)
    finally:
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()


def test_unknown_storage_backend_stops_start_up(modelreg_database):
    from modelreg.testing import make_app

    with pytest.raises(RuntimeError, match=r"unknown storage backend 'nope'; installed "
                                           r"backends: local \(is the plugin not installed\?\)"):
        make_app({"sqlalchemy.url": modelreg_database.url, "modelreg.storage": "nope"})


def test_streaming_requests_are_never_retried(files_wsgi):
    """A retry would repeat storage writes: uploads get one attempt, however small."""
    from pyramid.request import Request

    from modelreg.db import retry_activate_hook

    def attempts(method: str, path: str, body: bytes) -> int | None:
        request = Request.blank(path, method=method, body=body)
        request.registry = files_wsgi.registry
        return retry_activate_hook(request)

    assert attempts("PUT", file_url(M, 1, "a/b.bin"), b"tiny") == 1
    assert attempts("PATCH", f"{API}/uploads/{'0' * 32}", b"chunk") == 1
    assert attempts("PUT", f"{API}/uploads/{'0' * 32}?digest=sha256:{'0' * 64}", b"") == 1
    # Small JSON bodies elsewhere may be retried (None: pyramid_retry's own setting).
    assert attempts("PATCH", f"{API}/models/{M}", b'{"description": "x"}') is None
    assert attempts("DELETE", file_url(M, 1, "a.bin"), b"") is None
