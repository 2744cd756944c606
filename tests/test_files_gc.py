# ruff: noqa: F811 - the fixtures imported from files_support are redefined as arguments
"""Garbage collection of blobs and upload sessions, on every storage backend and database."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import sqlalchemy as sa
import transaction
from click.testing import CliRunner

from files_support import (  # noqa: F401 - fixtures
    MIN_CHUNK,
    file_url,
    files_app,
    files_wsgi,
    local_leftovers,
    rows,
    s3_endpoint,
    sha,
)
from helpers import API, create_model, create_version
from modelreg.db import get_tm_session
from modelreg.files.gc import collect_garbage
from modelreg.files.services import touch_blob

M = "fraud-detector"
OCTETS = "application/octet-stream"
HOUR = dt.timedelta(hours=1)


def gc(app, **kwargs):
    registry = app.app.registry
    return collect_garbage(registry["dbsession_factory"], registry["db_engine"],
                           registry["modelreg.blob_store"], **kwargs)


def age_blobs(app, hours: int = 2) -> None:
    """Pretend every blob was last referenced ``hours`` ago."""
    with app.app.registry["db_engine"].begin() as conn:
        conn.execute(sa.text("UPDATE blobs SET last_referenced_at = :t"),
                     {"t": dt.datetime.now(dt.UTC).replace(tzinfo=None)
                      - dt.timedelta(hours=hours)})


@pytest.fixture
def draft(files_app):
    create_model(files_app, M)
    return create_version(files_app, M)["number"]


def test_unreferenced_blobs_past_the_grace_period_are_deleted(files_app, draft):
    store = files_app.app.registry["modelreg.blob_store"]
    for path, data in (("keep.bin", b"kept"), ("drop.bin", b"dropped"),
                       ("replaced.bin", b"old bytes")):
        files_app.put(file_url(M, draft, path), data, content_type=OCTETS, status=201)
    files_app.put(file_url(M, draft, "replaced.bin"), b"new bytes", content_type=OCTETS)
    files_app.delete(file_url(M, draft, "drop.bin"), status=204)
    # Within the grace period nothing goes.
    report = gc(files_app, grace=HOUR)
    assert report.blobs == [] and report.uploads == []
    age_blobs(files_app)
    dry = gc(files_app, grace=HOUR, dry_run=True)
    assert sorted(dry.blobs) == sorted([(sha(b"dropped"), 7), (sha(b"old bytes"), 9)])
    assert store.exists(sha(b"dropped")) and len(rows(files_app, "blobs")) == 4
    report = gc(files_app, grace=HOUR)
    assert sorted(report.blobs) == sorted(dry.blobs) and report.freed_bytes == 16
    assert not store.exists(sha(b"dropped")) and not store.exists(sha(b"old bytes"))
    assert sorted(r["sha256"] for r in rows(files_app, "blobs")) == sorted(
        [sha(b"kept"), sha(b"new bytes")])
    for path, data in (("keep.bin", b"kept"), ("replaced.bin", b"new bytes")):
        assert files_app.get(file_url(M, draft, path)).body == data
    assert gc(files_app, grace=HOUR).blobs == []
    # Deleted content can be uploaded again.
    files_app.put(file_url(M, draft, "drop.bin"), b"dropped", content_type=OCTETS, status=201)
    assert files_app.get(file_url(M, draft, "drop.bin")).body == b"dropped"


def test_blobs_of_deleted_versions_and_models_are_collected(files_app, draft):
    files_app.put(file_url(M, draft, "a.bin"), b"version content", content_type=OCTETS)
    files_app.delete(f"{API}/models/{M}", status=204)
    age_blobs(files_app)
    assert gc(files_app, grace=HOUR).blobs == [(sha(b"version content"), 15)]


def test_an_in_flight_upload_keeps_its_blob(files_app, draft):
    """Stored and touched, not yet recorded as a file: collection leaves it alone."""
    registry = files_app.app.registry
    store = registry["modelreg.blob_store"]
    info = store.put(io.BytesIO(b"in flight"))
    tm = transaction.TransactionManager(explicit=True)
    with tm:
        touch_blob(get_tm_session(registry["dbsession_factory"], tm,
                                  registry["db_writer_engine"]), info)
    assert gc(files_app, grace=HOUR).blobs == []
    assert store.exists(info.sha256)
    # The upload then records its file: the same blob, still there.
    files_app.put(file_url(M, draft, "f.bin"), b"in flight", content_type=OCTETS, status=201)
    assert files_app.get(file_url(M, draft, "f.bin")).body == b"in flight"


def test_a_locked_blob_row_is_skipped(files_app, draft, backend):
    """A transaction that references a blob holds its row: collection, even with no grace
    period at all, skips it (FOR UPDATE SKIP LOCKED)."""
    if backend == "sqlite":
        pytest.skip("SQLite serializes writers: collection waits for the referencing one")
    registry = files_app.app.registry
    store = registry["modelreg.blob_store"]
    files_app.put(file_url(M, draft, "old.bin"), b"old", content_type=OCTETS, status=201)
    files_app.delete(file_url(M, draft, "old.bin"), status=204)
    age_blobs(files_app)
    tm = transaction.TransactionManager(explicit=True)
    with tm:
        db = get_tm_session(registry["dbsession_factory"], tm, registry["db_writer_engine"])
        db.execute(sa.select(sa.text("sha256")).select_from(sa.table("blobs"))
                   .where(sa.text("sha256 = :s")).with_for_update(), {"s": sha(b"old")})
        assert gc(files_app, grace=dt.timedelta(0)).blobs == []
        assert store.exists(sha(b"old"))
    assert gc(files_app, grace=dt.timedelta(0)).blobs == [(sha(b"old"), 3)]


def test_expired_sessions_and_sessions_of_deleted_versions_are_aborted(files_app, draft,
                                                                        files_wsgi):
    leftovers = local_leftovers(files_app)
    chunk = MIN_CHUNK[files_wsgi.storage_backend]
    urls = [files_app.post_json(f"{API}/models/{M}/versions/{draft}/uploads",
                                {"path": f"big{i}.bin"}, status=201).json["location"]
            for i in range(3)]
    for url in urls:
        files_app.patch(url, b"c" * chunk, content_type=OCTETS, status=202)
    other = create_version(files_app, M)["number"]
    gone = files_app.post_json(f"{API}/models/{M}/versions/{other}/uploads",
                               {"path": "x.bin"}, status=201).json
    files_app.delete(f"{API}/models/{M}/versions/{other}", status=204)
    engine = files_app.app.registry["db_engine"]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE upload_sessions SET expires_at = :t WHERE public_id = :p"),
                     {"t": dt.datetime(2000, 1, 1), "p": urls[0].rsplit("/", 1)[1]})
    dry = gc(files_app, dry_run=True)
    assert sorted(dry.uploads) == sorted([urls[0].rsplit("/", 1)[1], gone["id"]])
    assert len(rows(files_app, "upload_sessions")) == 4
    report = gc(files_app)
    assert sorted(report.uploads) == sorted(dry.uploads)
    assert len(rows(files_app, "upload_sessions")) == 2
    for url in urls[1:]:
        files_app.get(url, status=200)
    for url in urls[1:]:
        files_app.delete(url, status=204)
    assert local_leftovers(files_app) == leftovers


def test_cli_gc(files_app, draft, tmp_path, files_wsgi, modelreg_database):
    from modelreg_client.cli import main

    settings = files_wsgi.registry.settings
    ini = tmp_path / "gc.ini"
    storage = "\n".join(f"{key} = {value}" for key, value in settings.items()
                        if key.startswith("modelreg.storage"))
    ini.write_text(f"[app:main]\nuse = egg:modelreg\nsqlalchemy.url = {modelreg_database.url}"
                   f"\n{storage}\n")
    files_app.put(file_url(M, draft, "a.bin"), b"abc", content_type=OCTETS, status=201)
    files_app.delete(file_url(M, draft, "a.bin"), status=204)
    age_blobs(files_app, hours=3)
    result = CliRunner().invoke(main, ["gc", str(ini), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"would delete blob sha256:{sha(b'abc')} (3 bytes)" in result.output
    assert len(rows(files_app, "blobs")) == 1
    result = CliRunner().invoke(main, ["gc", str(ini), "--grace", "20000"])
    assert result.exit_code == 0, result.output
    assert "deleted 0 blob(s)" in result.output
    result = CliRunner().invoke(main, ["gc", str(ini)])
    assert result.exit_code == 0, result.output
    assert f"deleted blob sha256:{sha(b'abc')} (3 bytes)" in result.output
    assert rows(files_app, "blobs") == []
