# ruff: noqa: F811 - the fixtures imported from files_support are redefined as arguments
"""Resumable upload sessions on every storage backend: chunks, resume, complete, abort."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa

from files_support import (  # noqa: F401 - fixtures
    MAX_PUT,
    MIN_CHUNK,
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
from security_helpers import add_principal, bearer

M = "fraud-detector"
OCTETS = "application/octet-stream"


@pytest.fixture
def draft(files_app):
    create_model(files_app, M)
    return create_version(files_app, M)["number"]


@pytest.fixture
def chunk(files_wsgi) -> int:
    return MIN_CHUNK[files_wsgi.storage_backend]


def open_upload(app, number, path="big/model.bin", status=201, headers=None, **body):
    return app.post_json(f"{API}/models/{M}/versions/{number}/uploads", {"path": path, **body},
                         status=status, headers=headers or {})


def patch(app, location, data, start, status=202, headers=None, total="*"):
    headers = {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
               **(headers or {})}
    return app.patch(location, data, headers=headers, content_type=OCTETS, status=status)


def complete(app, location, digest, data=b"", status=201, headers=None):
    return app.put(f"{location}?digest=sha256:{digest}", data, content_type=OCTETS,
                   status=status, headers=headers or {})


def test_upload_in_chunks_resume_and_complete(files_app, draft, chunk):
    leftovers = local_leftovers(files_app)
    data = os.urandom(2 * chunk + 1234)
    opened = open_upload(files_app, draft)
    session = opened.json
    location = session["location"]
    assert opened.location.endswith(location)
    assert session["offset"] == 0 and session["path"] == "big/model.bin"
    assert session["model"] == M and session["version"] == draft
    assert session["min_chunk_size"] == chunk and session["max_chunk_size"] == MAX_PUT

    first = patch(files_app, location, data[:chunk], 0)
    assert first.json["offset"] == chunk and first.headers["Upload-Offset"] == str(chunk)
    assert first.json["expires_at"] > session["expires_at"]  # a chunk keeps it open
    # The client lost the answer: it asks where to resume, and a repeated chunk is refused
    # with the current offset.
    assert files_app.get(location).json["offset"] == chunk
    again = patch(files_app, location, data[:chunk], 0, status=416)
    assert error_code(again) == "chunk_out_of_order"
    assert again.json["error"]["details"] == {"offset": chunk}
    assert again.headers["Upload-Offset"] == str(chunk)
    ahead = patch(files_app, location, data[2 * chunk:], 2 * chunk, status=416)
    assert ahead.json["error"]["details"] == {"offset": chunk}

    patch(files_app, location, data[chunk:2 * chunk], chunk)
    # Nothing is visible before completion.
    files_app.get(file_url(M, draft, "big/model.bin"), status=404)
    assert rows(files_app, "files") == []
    # The last chunk may be short, and may come with the completing PUT.
    done = complete(files_app, location, sha(data), data[2 * chunk:])
    assert done.json["sha256"] == sha(data) and done.json["size"] == len(data)
    assert done.location.endswith(file_url(M, draft, "big/model.bin"))
    assert files_app.get(file_url(M, draft, "big/model.bin")).body == data
    response = files_app.get(location, status=404)
    assert error_code(response) == "upload_not_found"
    assert rows(files_app, "upload_sessions") == []
    assert local_leftovers(files_app) == leftovers


def test_chunks_without_content_range_append(files_app, draft, chunk):
    data = os.urandom(chunk + 10)
    location = open_upload(files_app, draft, media_type="application/x-onnx").json["location"]
    files_app.patch(location, data[:chunk], content_type=OCTETS, status=202)
    files_app.patch(location, data[chunk:], content_type=OCTETS, status=202)
    complete(files_app, location, sha(data))
    got = files_app.get(file_url(M, draft, "big/model.bin"))
    assert got.body == data and got.headers["Content-Type"] == "application/x-onnx"


def test_short_chunk_must_be_the_last(files_app, draft, chunk):
    data = os.urandom(chunk)
    location = open_upload(files_app, draft).json["location"]
    patch(files_app, location, data[:100], 0)
    # A short chunk was the last one: the size is now known, nothing may follow it.
    response = patch(files_app, location, data[100:], 100, status=416)
    assert error_code(response) == "chunk_out_of_order"
    complete(files_app, location, sha(data[:100]))
    assert files_app.get(file_url(M, draft, "big/model.bin")).body == data[:100]


def test_announced_size_and_digest(files_app, draft, chunk):
    data = os.urandom(chunk + 5)
    location = open_upload(files_app, draft, size=len(data),
                           digest=f"sha256:{sha(data)}").json["location"]
    response = patch(files_app, location, data[:10], 0, status=422)
    assert error_code(response) == "chunk_too_small"
    response = patch(files_app, location, data + b"extra", 0, status=416)
    patch(files_app, location, data[:chunk], 0)
    response = complete(files_app, location, sha(data), status=422)
    assert error_code(response) == "upload_incomplete"
    response = complete(files_app, location, sha(b"other"), status=400)
    assert error_code(response) == "digest_mismatch"
    patch(files_app, location, data[chunk:], chunk)
    complete(files_app, location, sha(data))
    assert files_app.get(file_url(M, draft, "big/model.bin")).body == data


def test_wrong_digest_at_completion_keeps_the_session_and_its_parts(files_app, draft, chunk):
    before, leftovers = blob_digests(files_app), local_leftovers(files_app)
    data = os.urandom(chunk + 7)
    location = open_upload(files_app, draft).json["location"]
    patch(files_app, location, data[:chunk], 0)
    patch(files_app, location, data[chunk:], chunk)
    response = complete(files_app, location, sha(b"not it"), status=400)
    assert error_code(response) == "digest_mismatch"
    details = response.json["error"]["details"]
    assert details["actual"] == f"sha256:{sha(data)}" and details["size"] == len(data)
    held = [{"number": 1, "start": 0, "size": chunk, "digest": f"sha256:{sha(data[:chunk])}"},
            {"number": 2, "start": chunk, "size": 7, "digest": f"sha256:{sha(data[chunk:])}"}]
    assert details["parts"] == held
    # Nothing was stored as a blob or a file; the session and its bytes are kept...
    assert rows(files_app, "files") == [] and rows(files_app, "blobs") == []
    assert blob_digests(files_app) == before
    assert files_app.get(location).json["parts"] == held
    # ...so that the right digest completes it without sending a byte again.
    complete(files_app, location, sha(data))
    assert files_app.get(file_url(M, draft, "big/model.bin")).body == data
    assert local_leftovers(files_app) == leftovers


def test_completion_needs_a_digest(files_app, draft):
    location = open_upload(files_app, draft).json["location"]
    response = files_app.put(location, b"", content_type=OCTETS, status=400)
    assert error_code(response) == "digest_required"
    response = files_app.put(location + "?digest=sha1:abc", b"", content_type=OCTETS,
                             status=400)
    assert error_code(response) == "invalid_digest"


def test_abort_frees_everything(files_app, draft, chunk):
    leftovers = local_leftovers(files_app)
    location = open_upload(files_app, draft).json["location"]
    patch(files_app, location, os.urandom(chunk), 0)
    files_app.delete(location, status=204)
    files_app.get(location, status=404)
    files_app.delete(location, status=404)
    assert rows(files_app, "upload_sessions") == []
    assert local_leftovers(files_app) == leftovers


def test_bad_chunk_headers(files_app, draft, chunk):
    location = open_upload(files_app, draft).json["location"]
    response = files_app.patch(location, b"abc", content_type=OCTETS,
                               headers={"Content-Range": "bytes 0-9/*"}, status=400)
    assert error_code(response) == "invalid_content_range"
    response = files_app.patch(location, b"abc", content_type=OCTETS,
                               headers={"Content-Range": "lots"}, status=400)
    assert error_code(response) == "invalid_content_range"
    response = files_app.patch(location, b"x" * (MAX_PUT + 1), content_type=OCTETS,
                               status=413)
    assert error_code(response) == "payload_too_large"
    assert files_app.get(location).json["offset"] == 0


def test_session_of_a_version_finalized_meanwhile(files_app, draft, chunk):
    location = open_upload(files_app, draft).json["location"]
    files_app.put(file_url(M, draft, "small.bin"), b"x", content_type=OCTETS, status=201)
    files_app.post(f"{API}/models/{M}/versions/{draft}/finalize", status=200)
    response = patch(files_app, location, os.urandom(chunk), 0, status=409)
    assert error_code(response) == "version_immutable"
    response = complete(files_app, location, sha(b""), status=409)
    assert error_code(response) == "version_immutable"
    assert [r["path"] for r in rows(files_app, "files")] == ["small.bin"]


def test_session_of_a_deleted_version_is_gone(files_app, draft):
    location = open_upload(files_app, draft).json["location"]
    files_app.delete(f"{API}/models/{M}/versions/{draft}", status=204)
    files_app.get(location, status=404)
    (session,) = rows(files_app, "upload_sessions")
    assert session["version_id"] is None  # modelreg gc aborts it


def test_expired_session_is_gone(files_app, draft):
    location = open_upload(files_app, draft).json["location"]
    engine = files_app.app.registry["db_engine"]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE upload_sessions SET expires_at = :t"),
                     {"t": dt.datetime(2000, 1, 1)})
    response = files_app.get(location, status=404)
    assert error_code(response) == "upload_not_found"
    files_app.patch(location, b"x", content_type=OCTETS, status=404)


def test_unknown_session(files_app):
    for method in ("get", "delete"):
        response = getattr(files_app, method)(f"{API}/uploads/{'0' * 32}", status=404)
        assert error_code(response) == "upload_not_found"


# --------------------------------------------------------------------------- ownership


def test_sessions_belong_to_the_principal_that_opened_them(secure_app):
    wsgi = secure_app.app
    owner = add_principal(wsgi, "owner", grants=[("fraud-*", "write")])
    colleague = add_principal(wsgi, "colleague", grants=[("fraud-*", "write")])
    admin = add_principal(wsgi, "root", admin=True)
    secure_app.post_json(f"{API}/models", {"name": M}, headers=bearer(owner), status=201)
    secure_app.post_json(f"{API}/models/{M}/versions", {}, headers=bearer(owner), status=201)
    location = open_upload(secure_app, 1, headers=bearer(owner)).json["location"]
    data = b"owned bytes"
    for token in (colleague, admin):
        response = secure_app.get(location, headers=bearer(token), status=404)
        assert error_code(response) == "upload_not_found"
        secure_app.patch(location, data, content_type=OCTETS, headers=bearer(token),
                         status=404)
        complete(secure_app, location, sha(b""), headers=bearer(token), status=404)
        secure_app.delete(location, headers=bearer(token), status=404)
    secure_app.get(location, status=401)
    secure_app.patch(location, data, content_type=OCTETS, status=401)
    # A body naming another model or session changes nothing: the stored session decides.
    secure_app.patch(location, data, content_type=OCTETS, headers=bearer(owner), status=202)
    done = complete(secure_app, location, sha(data), headers=bearer(owner))
    assert done.json["created_by"] == "owner"
