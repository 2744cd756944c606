# ruff: noqa: F811 - the fixtures imported from files_support are redefined as arguments
"""Upload sessions in numbered parts on every storage backend and database: parts in any
order, each with its digest; one claim per number; a wrong digest at completion keeps the
parts; the limits on sessions.

The local store runs on every database; S3 (moto) on one of them (PostgreSQL when selected):
what the S3 store does with parts does not depend on the database, and what the database
does with claims does not depend on the store.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from files_support import (  # noqa: F401 - fixtures
    BACKENDS,
    MAX_PUT,
    MIN_CHUNK,
    blob_digests,
    file_url,
    files_app,
    local_leftovers,
    rows,
    s3_endpoint,
    sha,
    storage_settings,
)
from helpers import API, create_model, create_version, error_code
from modelreg.errors import ApiError
from modelreg.files.gc import collect_garbage
from modelreg.files.uploads import UploadService
from modelreg.testing import make_app

M = "fraud-detector"
OCTETS = "application/octet-stream"
_SELECTED = [b.strip() for b in os.environ.get(
    "MODELREG_TEST_BACKENDS", "sqlite,postgresql,mariadb").split(",")]
#: The one database the S3 store's cases run on.
S3_DATABASE = "postgresql" if "postgresql" in _SELECTED else _SELECTED[0]


@pytest.fixture(scope="module", params=BACKENDS)
def files_wsgi(request, modelreg_database, tmp_path_factory) -> Iterator[Any]:
    """:func:`files_support.files_wsgi`, with S3 on :data:`S3_DATABASE` only."""
    if request.param == "s3" and modelreg_database.backend != S3_DATABASE:
        pytest.skip(f"the S3 store's parts are tested on {S3_DATABASE}")
    settings, plugins = storage_settings(request.param, request, tmp_path_factory)
    app = make_app({"sqlalchemy.url": modelreg_database.url, "retry.attempts": "3",
                    **settings}, plugins)
    app.storage_backend = request.param
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def draft(files_app):
    create_model(files_app, M)
    return create_version(files_app, M)["number"]


@pytest.fixture
def part_size(files_wsgi) -> int:
    return MIN_CHUNK[files_wsgi.storage_backend]


def open_parts(app, number, size, part_size, status=201, **body):
    return app.post_json(f"{API}/models/{M}/versions/{number}/uploads",
                         {"path": "w/model.bin", "size": size, "part_size": part_size, **body},
                         status=status)


def put_part(app, location, n, data, status=201, digest=None):
    digest = base64.b64encode(hashlib.sha256(data if digest is None else digest).digest())
    return app.put(f"{location}/parts/{n}", data, content_type=OCTETS, status=status,
                   headers={"Content-Digest": f"sha-256=:{digest.decode()}:"})


def complete(app, location, digest, status=201):
    return app.put(f"{location}?digest=sha256:{digest}", b"", content_type=OCTETS,
                   status=status)


def test_parts_in_any_order_then_complete(files_app, draft, part_size):
    leftovers = local_leftovers(files_app)
    data = os.urandom(2 * part_size + 10)
    pieces = [data[:part_size], data[part_size:2 * part_size], data[2 * part_size:]]
    opened = open_parts(files_app, draft, len(data), part_size).json
    assert opened["part_size"] == part_size and opened["parts_count"] == 3
    location = opened["location"]
    for n in (3, 1, 2):
        answer = put_part(files_app, location, n, pieces[n - 1])
        assert answer.json == {"number": n, "start": (n - 1) * part_size,
                               "size": len(pieces[n - 1]),
                               "digest": f"sha256:{sha(pieces[n - 1])}"}
    held = files_app.get(location).json
    assert [p["number"] for p in held["parts"]] == [1, 2, 3]
    assert held["offset"] == len(data)
    assert rows(files_app, "files") == []
    done = complete(files_app, location, sha(data))
    assert done.json["sha256"] == sha(data) and done.json["size"] == len(data)
    assert files_app.get(file_url(M, draft, "w/model.bin")).body == data
    assert rows(files_app, "upload_sessions") == [] and rows(files_app, "upload_parts") == []
    assert local_leftovers(files_app) == leftovers


def test_a_short_part_only_as_the_declared_last(files_app, draft, part_size):
    data = os.urandom(part_size + 5)
    location = open_parts(files_app, draft, len(data), part_size).json["location"]
    response = put_part(files_app, location, 1, data[:100], status=422)
    assert error_code(response) == "part_size_mismatch"
    assert response.json["error"]["details"] == {"number": 1, "size": part_size}
    response = put_part(files_app, location, 2, data[part_size:] + b"x", status=422)
    assert response.json["error"]["details"] == {"number": 2, "size": 5}
    response = put_part(files_app, location, 3, b"x", status=416)
    assert error_code(response) == "part_out_of_range"
    assert response.json["error"]["details"] == {"parts": 2}
    response = files_app.put(f"{location}/parts/0", b"x", content_type=OCTETS, status=416)
    assert error_code(response) == "part_out_of_range"
    # Nothing was claimed by the refusals: both parts can be sent now.
    assert rows(files_app, "upload_parts") == []
    response = complete(files_app, location, sha(data), status=422)
    assert error_code(response) == "upload_incomplete"
    assert response.json["error"]["details"]["missing"] == [1, 2]
    put_part(files_app, location, 2, data[part_size:])
    response = complete(files_app, location, sha(data), status=422)
    assert response.json["error"]["details"]["missing"] == [1]
    put_part(files_app, location, 1, data[:part_size])
    complete(files_app, location, sha(data))


def test_each_part_needs_its_digest_and_a_wrong_one_stores_nothing(files_app, draft,
                                                                    part_size):
    leftovers, objects = local_leftovers(files_app), tmp_objects(files_app)
    data = os.urandom(part_size)
    location = open_parts(files_app, draft, len(data), part_size).json["location"]
    response = files_app.put(f"{location}/parts/1", data, content_type=OCTETS, status=400)
    assert error_code(response) == "digest_required"
    response = put_part(files_app, location, 1, data, digest=b"other", status=400)
    assert error_code(response) == "digest_mismatch"
    assert rows(files_app, "upload_parts") == []
    assert files_app.get(location).json["parts"] == []
    assert tmp_objects(files_app) == objects  # nothing of the refused part on S3
    put_part(files_app, location, 1, data)
    assert len(tmp_objects(files_app)) == len(objects) + int(
        files_app.app.storage_backend == "s3")
    files_app.delete(location, status=204)
    assert local_leftovers(files_app) == leftovers
    assert tmp_objects(files_app) == objects


def test_a_part_is_stored_once_and_freed_to_be_sent_again(files_app, draft, part_size):
    data = os.urandom(part_size + 1)
    location = open_parts(files_app, draft, len(data), part_size).json["location"]
    put_part(files_app, location, 1, data[:part_size])
    # The same bytes again (a lost answer): 200, nothing changes.
    again = put_part(files_app, location, 1, data[:part_size], status=200)
    assert again.json["digest"] == f"sha256:{sha(data[:part_size])}"
    # Other bytes for a number that is held: refused, the held part unchanged.
    other = os.urandom(part_size)
    response = put_part(files_app, location, 1, other, status=409)
    assert error_code(response) == "part_exists"
    assert response.json["error"]["details"]["digest"] == f"sha256:{sha(data[:part_size])}"
    (part,) = files_app.get(location).json["parts"]
    assert part["digest"] == f"sha256:{sha(data[:part_size])}"
    # Freed, the number takes other bytes.
    files_app.delete(f"{location}/parts/1", status=204)
    response = files_app.delete(f"{location}/parts/1", status=404)
    assert error_code(response) == "part_not_found"
    put_part(files_app, location, 1, other)
    put_part(files_app, location, 2, data[part_size:])
    complete(files_app, location, sha(other + data[part_size:]))


def test_wrong_digest_keeps_the_parts_and_the_client_resends_what_differs(
        files_app, draft, part_size):
    before = blob_digests(files_app)
    good = os.urandom(2 * part_size)
    bad = good[:part_size] + os.urandom(part_size)
    location = open_parts(files_app, draft, len(good), part_size).json["location"]
    put_part(files_app, location, 1, bad[:part_size])
    put_part(files_app, location, 2, bad[part_size:])
    response = complete(files_app, location, sha(good), status=400)
    assert error_code(response) == "digest_mismatch"
    details = response.json["error"]["details"]
    assert details["actual"] == f"sha256:{sha(bad)}"
    assert [p["digest"] for p in details["parts"]] == [
        f"sha256:{sha(good[:part_size])}", f"sha256:{sha(bad[part_size:])}"]
    assert blob_digests(files_app) == before and rows(files_app, "blobs") == []
    if files_app.app.storage_backend == "local":  # the parts are still on disk
        root = files_app.app.registry["modelreg.blob_store"].root
        (parts_dir,) = [p for p in (root / "uploads").iterdir() if p.is_dir()]
        # Both parts are in place in the upload's data file, each with its record.
        data = parts_dir.with_name(parts_dir.name.removesuffix(".parts"))
        assert data.read_bytes() == bad
        assert sorted(p.name for p in parts_dir.iterdir()) == ["1.in", "2.in"]
    # Only the part that differs is sent again.
    files_app.delete(f"{location}/parts/2", status=204)
    put_part(files_app, location, 2, good[part_size:])
    complete(files_app, location, sha(good))
    assert files_app.get(file_url(M, draft, "w/model.bin")).body == good


def test_one_way_of_sending_per_session(files_app, draft, part_size):
    parts = open_parts(files_app, draft, 10, part_size).json["location"]
    response = files_app.patch(parts, b"0123456789", content_type=OCTETS, status=409)
    assert error_code(response) == "upload_mode"
    chunks = files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads",
                                 {"path": "c.bin"}, status=201).json["location"]
    response = put_part(files_app, chunks, 1, b"abc", status=409)
    assert error_code(response) == "upload_mode"


def test_invalid_part_sizes(files_app, draft, part_size):
    for body in ({"part_size": 1}, {"part_size": MAX_PUT + 1}, {"size": None},
                 {"size": 10 ** 15}):
        response = open_parts(files_app, draft, **{"size": 10, "part_size": part_size,
                                                   **body}, status=400)
        assert error_code(response) == "invalid_part_size", body
    assert rows(files_app, "upload_sessions") == []


def test_open_sessions_per_principal_are_limited(files_app, files_wsgi, draft, monkeypatch):
    leftovers = local_leftovers(files_app)
    monkeypatch.setitem(files_wsgi.registry.settings, "modelreg.upload.max_open_sessions", "2")
    first = files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads",
                                {"path": "a"}, status=201).json["location"]
    files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads", {"path": "b"},
                        status=201)
    response = files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads",
                                   {"path": "c"}, status=409)
    assert error_code(response) == "too_many_uploads"
    assert response.json["error"]["details"] == {"max_open_sessions": 2, "open_sessions": 2}
    assert len(rows(files_app, "upload_sessions")) == 2
    files_app.delete(first, status=204)
    files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads", {"path": "c"},
                        status=201)
    for location in [f"{API}/uploads/{r['public_id']}" for r in rows(files_app,
                                                                     "upload_sessions")]:
        files_app.delete(location, status=204)
    assert local_leftovers(files_app) == leftovers


def tmp_objects(app) -> list[str]:
    """Keys under the S3 store's ``tmp/`` (``[]`` on other backends)."""
    store = app.app.registry["modelreg.blob_store"]
    if app.app.storage_backend != "s3":
        return []
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}tmp/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_garbage_collection_frees_the_parts_of_expired_sessions(files_app, draft, part_size):
    leftovers, objects = local_leftovers(files_app), tmp_objects(files_app)
    data = os.urandom(part_size + 3)
    location = open_parts(files_app, draft, len(data), part_size).json["location"]
    put_part(files_app, location, 1, data[:part_size])
    put_part(files_app, location, 2, data[part_size:])
    registry = files_app.app.registry
    with registry["db_engine"].begin() as conn:
        conn.execute(sa.text("UPDATE upload_sessions SET expires_at = :t"),
                     {"t": dt.datetime(2000, 1, 1)})
    report = collect_garbage(registry["dbsession_factory"], registry["db_engine"],
                             registry["modelreg.blob_store"])
    assert report.uploads == [location.rsplit("/", 1)[1]]
    assert rows(files_app, "upload_sessions") == [] and rows(files_app, "upload_parts") == []
    assert local_leftovers(files_app) == leftovers
    assert tmp_objects(files_app) == objects  # no part objects left on S3


def test_the_upload_service_from_python(files_app, draft, part_size):
    """What the MLflow and Hugging Face front-ends call: no view, no request."""
    registry = files_app.app.registry
    service = UploadService(registry, registry["modelreg.blob_store"],
                            registry["modelreg.plugin_manager"].hook, actor="front-end")
    data = os.urandom(part_size + 9)
    opened = service.open(M, str(draft), path="py.bin", owner=None, size=len(data),
                          part_size=part_size)
    upload_id = opened.upload.public_id
    pieces = {1: data[:part_size], 2: data[part_size:]}
    threads = [threading.Thread(target=service.put_part, args=(
        upload_id, n, io.BytesIO(piece), len(piece)), kwargs={"sha256": sha(piece)})
        for n, piece in pieces.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p["number"] for p in service.status(upload_id).parts] == [1, 2]
    with pytest.raises(ApiError) as refused:
        service.complete(upload_id, sha(b"other"))
    assert refused.value.code == "digest_mismatch"
    assert len(refused.value.details["parts"]) == 2
    file, outcome = service.complete(upload_id, sha(data))
    assert outcome == "created" and file["created_by"] == "front-end"
    assert files_app.get(file_url(M, draft, "py.bin")).body == data
