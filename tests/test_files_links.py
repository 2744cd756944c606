# ruff: noqa: F811 - the fixtures imported from files_support are redefined as arguments
"""Adding a file by the digest of content the registry already holds (``POST …/files``).

On every storage backend and database: what a link creates, replaces and refuses; that it
never reveals content held only in models hidden from the caller; and that garbage collection
cannot take a blob from under a link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time

import pytest
import sqlalchemy as sa

from files_support import (  # noqa: F401 - fixtures
    file_url,
    files_app,
    files_wsgi,
    rows,
    s3_endpoint,
    sha,
    store_of,
)
from helpers import API, create_model, create_version, error_code
from modelreg.files.gc import collect_garbage
from modelreg.testing import clear_database, make_app
from openapi_checking import CheckedTestApp
from security_helpers import add_principal, add_token, bearer, session

M = "fraud-detector"
OCTETS = "application/octet-stream"
WEIGHTS = b"\x00weights\xff" * 100


def files_url(model: str, version: int | str) -> str:
    return f"{API}/models/{model}/versions/{version}/files"


def link(app, model, version, path, data_or_digest, status=None, headers=None, **extra):
    digest = data_or_digest if isinstance(data_or_digest, str) else sha(data_or_digest)
    return app.post_json(files_url(model, version),
                         {"path": path, "digest": f"sha256:{digest}", **extra},
                         headers=headers or {}, status=status)


def gc(app, **kwargs):
    registry = app.app.registry
    return collect_garbage(registry["dbsession_factory"], registry["db_engine"],
                           registry["modelreg.blob_store"], **kwargs)


@pytest.fixture
def drafts(files_app):
    """Model M with version 1 holding ``weights.bin`` (ready) and an empty draft 2."""
    create_model(files_app, M)
    create_version(files_app, M)
    files_app.put(file_url(M, 1, "weights.bin"), WEIGHTS, content_type=OCTETS, status=201)
    files_app.post(f"{API}/models/{M}/versions/1/finalize", status=200)
    return create_version(files_app, M)["number"]


def test_link_creates_replaces_and_is_idempotent(files_app, drafts):
    audit_before = len(rows(files_app, "audit_events"))
    response = link(files_app, M, drafts, "nested/copy.bin", WEIGHTS, status=201,
                    size=len(WEIGHTS), media_type="application/x-weights")
    body = response.json
    assert (body["path"], body["size"], body["sha256"], body["media_type"]) == (
        "nested/copy.bin", len(WEIGHTS), sha(WEIGHTS), "application/x-weights")
    assert response.location.endswith(file_url(M, drafts, "nested/copy.bin"))
    assert files_app.get(file_url(M, drafts, "nested/copy.bin")).body == WEIGHTS
    # The same again changes nothing.
    again = link(files_app, M, drafts, "nested/copy.bin", WEIGHTS, status=200).json
    assert again["created_at"] == body["created_at"]
    # Other content to the same path replaces the file.
    files_app.put(file_url(M, drafts, "other.bin"), b"other bytes", content_type=OCTETS,
                  status=201)
    replaced = link(files_app, M, drafts, "nested/copy.bin", b"other bytes", status=200).json
    assert replaced["sha256"] == sha(b"other bytes") and replaced["size"] == 11
    assert files_app.get(file_url(M, drafts, "nested/copy.bin")).body == b"other bytes"
    # Audited like any other file addition; the blob is stored once.
    events = rows(files_app, "audit_events")[audit_before:]
    assert [(e["action"], e["target"]) for e in events] == [
        ("file.added", f"{M}/{drafts}:nested/copy.bin"),
        ("file.added", f"{M}/{drafts}:other.bin"),
        ("file.replaced", f"{M}/{drafts}:nested/copy.bin")]
    assert len([r for r in rows(files_app, "blobs") if r["sha256"] == sha(WEIGHTS)]) == 1
    # The version made of links has the digest of the same files uploaded.
    link(files_app, M, drafts, "nested/copy.bin", WEIGHTS, status=200)
    files_app.delete(file_url(M, drafts, "other.bin"), status=204)
    link(files_app, M, drafts, "weights.bin", WEIGHTS, status=201)
    files_app.delete(file_url(M, drafts, "nested/copy.bin"), status=204)
    finalized = files_app.post(f"{API}/models/{M}/versions/{drafts}/finalize").json
    assert finalized["digest"] == files_app.get(f"{API}/models/{M}/versions/1").json["digest"]


def test_refusals(files_app, drafts):
    unknown = hashlib.sha256(b"never stored").hexdigest()
    response = link(files_app, M, drafts, "a.bin", unknown, status=404)
    assert error_code(response) == "blob_not_found"
    assert response.json["error"]["details"] == {"digest": f"sha256:{unknown}"}
    response = link(files_app, M, drafts, "a.bin", WEIGHTS, size=len(WEIGHTS) + 1, status=400)
    assert error_code(response) == "size_mismatch"
    response = files_app.post_json(files_url(M, drafts), {"path": "a.bin", "digest": "md5:1"},
                                   status=400)
    assert error_code(response) == "invalid_digest"
    response = link(files_app, M, drafts, "../a.bin", WEIGHTS, status=422)
    assert error_code(response) == "invalid_path"
    response = files_app.post_json(files_url(M, drafts), {"path": "a.bin"}, status=422)
    response = link(files_app, M, 1, "a.bin", WEIGHTS, status=409)
    assert error_code(response) == "version_immutable"
    link(files_app, M, 99, "a.bin", WEIGHTS, status=404)
    assert files_app.get(files_url(M, drafts)).json["files"] == []


def test_content_of_deleted_versions_or_missing_from_the_store_is_not_linkable(
        files_app, drafts):
    files_app.put(file_url(M, drafts, "gone.bin"), b"soon gone", content_type=OCTETS,
                  status=201)
    files_app.delete(file_url(M, drafts, "gone.bin"), status=204)
    # The blob is still stored (garbage collection has not run) but no version holds it.
    assert store_of(files_app).exists(sha(b"soon gone"))
    assert error_code(link(files_app, M, drafts, "a.bin", b"soon gone", status=404)) == \
        "blob_not_found"
    # A row whose object the store lost answers the same, so that the client uploads.
    store_of(files_app).delete(sha(WEIGHTS))
    assert error_code(link(files_app, M, drafts, "a.bin", WEIGHTS, status=404)) == \
        "blob_not_found"
    files_app.put(file_url(M, drafts, "a.bin"), WEIGHTS, content_type=OCTETS, status=201)
    assert files_app.get(file_url(M, 1, "weights.bin")).body == WEIGHTS


def test_a_linked_blob_survives_collection(files_app, drafts):
    """The link touches the blob's row: the old version's deletion then leaves it referenced."""
    link(files_app, M, drafts, "copy.bin", WEIGHTS, status=201)
    files_app.delete(f"{API}/models/{M}/versions/1", status=204)
    assert gc(files_app, grace=dt.timedelta(0)).blobs == []
    assert files_app.get(file_url(M, drafts, "copy.bin")).body == WEIGHTS


def test_a_link_waits_for_a_collection_holding_the_row(files_app, drafts, backend):
    """Collection locks the rows it deletes and deletes the objects before it commits; a link
    arriving meanwhile waits for the lock, then finds the row gone: 404, no file without
    content."""
    if backend == "sqlite":
        pytest.skip("SQLite serializes writers: the link simply runs before or after")
    wsgi = files_app.app
    digest = sha(WEIGHTS)
    outcome: dict[str, object] = {}
    with session(wsgi) as db:  # what a collection batch does, stopped before its commit
        db.execute(sa.text("SELECT sha256 FROM blobs WHERE sha256 = :s FOR UPDATE"),
                   {"s": digest})
        db.execute(sa.text("DELETE FROM files WHERE sha256 = :s"), {"s": digest})
        db.execute(sa.text("DELETE FROM blobs WHERE sha256 = :s"), {"s": digest})
        store_of(wsgi).delete(digest)

        def run() -> None:
            outcome["response"] = link(files_app, M, drafts, "copy.bin", WEIGHTS,
                                       status="*")

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive(), "the link did not wait for the row's lock"
    thread.join(30)
    response = outcome["response"]
    assert response.status_int == 404 and error_code(response) == "blob_not_found"
    assert files_app.get(files_url(M, drafts)).json["files"] == []


# ------------------------------------------------------------------ who may link what


def test_content_only_in_hidden_models_answers_like_unknown_content(secure_app):
    wsgi = secure_app.app
    owner = add_principal(wsgi, "owner", grants=[("secret-*", "write")])
    other = add_principal(wsgi, "other", grants=[("public-*", "write")])
    both = add_principal(wsgi, "both", grants=[("public-*", "write"), ("secret-*", "read")])
    narrow = add_token(wsgi, "both", ["write:public-*"])
    secure_app.post_json(f"{API}/models", {"name": "secret-model"}, headers=bearer(owner))
    secure_app.post_json(f"{API}/models/secret-model/versions", {}, headers=bearer(owner))
    secure_app.put(file_url("secret-model", 1, "w.bin"), b"secret weights",
                   content_type=OCTETS, headers=bearer(owner), status=201)
    secure_app.post_json(f"{API}/models", {"name": "public-model"}, headers=bearer(other))
    secure_app.post_json(f"{API}/models/public-model/versions", {}, headers=bearer(other))

    hidden = link(secure_app, "public-model", 1, "w.bin", b"secret weights",
                  headers=bearer(other), status=404).json
    unknown = link(secure_app, "public-model", 1, "w.bin", b"no such content",
                   headers=bearer(other), status=404).json
    assert hidden["error"]["code"] == unknown["error"]["code"] == "blob_not_found"
    assert hidden["error"]["message"].replace(sha(b"secret weights"), "X") == \
        unknown["error"]["message"].replace(sha(b"no such content"), "X")
    # A token narrowed away from the model that holds the content cannot link it either...
    link(secure_app, "public-model", 1, "w.bin", b"secret weights", headers=bearer(narrow),
         status=404)
    # ...while its principal, who may read that model, can.
    body = link(secure_app, "public-model", 1, "w.bin", b"secret weights",
                headers=bearer(both), status=201).json
    assert body["sha256"] == sha(b"secret weights")
    # Once a model the caller may read holds it, the caller may link it.
    link(secure_app, "public-model", 1, "again.bin", b"secret weights", headers=bearer(other),
         status=201)
    assert secure_app.get(file_url("public-model", 1, "again.bin"),
                          headers=bearer(other)).body == b"secret weights"


def test_a_link_is_held_to_the_size_policy_like_an_upload(modelreg_database, openapi_checker,
                                                          tmp_path):
    wsgi = make_app({"sqlalchemy.url": modelreg_database.url, "retry.attempts": "3",
                     "modelreg.storage": "local",
                     "modelreg.storage.local.path": str(tmp_path / "blobs"),
                     "modelreg.policy.max_version_size": "1500"})
    app = CheckedTestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    app.checker = openapi_checker
    try:
        create_model(app, M)
        create_version(app, M)
        app.put(file_url(M, 1, "weights.bin"), WEIGHTS, content_type=OCTETS, status=201)
        draft = create_version(app, M)["number"]
        link(app, M, draft, "a.bin", WEIGHTS, status=201)
        response = link(app, M, draft, "b.bin", WEIGHTS, status=422)  # 2 x 900 > 1500
        assert error_code(response) == "validation_failed"
        assert [p["code"] for p in response.json["error"]["details"]["problems"]] == [
            "version_too_large"]
        assert [f["path"] for f in app.get(files_url(M, draft)).json["files"]] == ["a.bin"]
    finally:
        clear_database(wsgi.registry["db_engine"])
        wsgi.registry["db_engine"].dispose()
