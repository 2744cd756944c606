"""Scanning is bounded: a per-version file limit (``modelreg.scan.max_files``) at finalize,
and a scan job that yields the queue after ``modelreg.scan.batch_seconds`` so that one huge
version cannot hold it (other jobs are served between its batches).

The scanner is :class:`test_worker.Scanner` (``EVIL`` an error, ``WARN`` a warning); the
worker runs in the test's thread, one claimed job at a time through :meth:`Worker.run_job`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import webtest

from helpers import API, add_file, create_model, create_version
from modelreg.api import hookimpl
from modelreg.models import Job
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from modelreg.worker.runner import Worker
from openapi_checking import CheckedTestApp
from test_worker import RECORDER, Scanner, jobs

BIG, SMALL = "big-model", "small-model"


@pytest.fixture(scope="module")
def bounded_wsgi(modelreg_database, tmp_path_factory) -> Iterator[Any]:
    app = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "retry.attempts": "3",
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("bounded-blobs")),
        "modelreg.scan.max_files": "5",
    }, plugins=(*CORE_PLUGINS, Scanner(), RECORDER))
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def app(bounded_wsgi, openapi_checker) -> Iterator[CheckedTestApp]:
    testapp = CheckedTestApp(bounded_wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    testapp.checker = openapi_checker
    yield testapp
    clear_database(bounded_wsgi.registry["db_engine"])


def worker_of(wsgi: Any, **settings: str) -> Worker:
    registry = wsgi.registry
    return Worker.from_registry(registry, settings)


def draft(app, model: str, files: dict[str, bytes]) -> int:
    create_model(app, model)
    number = create_version(app, model)["number"]
    for path, data in files.items():
        add_file(app, model, number, path, data)
    return number


def status(app, model: str, number: int) -> str:
    return app.get(f"{API}/models/{model}/versions/{number}").json["status"]


def test_another_models_scan_completes_while_a_big_version_is_still_being_scanned(
        app, bounded_wsgi):
    big = draft(app, BIG, {"a.bin": b"WARN a", "b.bin": b"clean", "c.bin": b"WARN c",
                           "d.bin": b"clean", "e.bin": b"clean"})
    app.post(f"{API}/models/{BIG}/versions/{big}/finalize", status=202)
    small = draft(app, SMALL, {"model.bin": b"clean"})
    app.post(f"{API}/models/{SMALL}/versions/{small}/finalize", status=202)
    # batch_seconds = 0: every run of a scan job scans one file, then yields
    worker = worker_of(bounded_wsgi, **{"modelreg.scan.batch_seconds": "0"})
    assert worker.run_job()  # the big version's first file; the rest queued behind
    assert status(app, BIG, big) == "validating"
    assert worker.run_job()  # the small version's job, queued before the rest of the big one
    assert status(app, SMALL, small) == "ready"
    assert status(app, BIG, big) == "validating"
    worker.run_once()
    assert status(app, BIG, big) == "ready"
    found = app.get(f"{API}/models/{BIG}/versions/{big}/findings").json["findings"]
    assert [(f["path"], f["code"]) for f in found] == [("a.bin", "suspicious"),
                                                       ("c.bin", "suspicious")]
    rows = jobs(bounded_wsgi.registry["db_engine"])
    assert len(rows) == 6  # five runs for the big version, one for the small
    assert {row.status for row in rows} == {"done"}
    assert [row.payload.get("next") for row in rows if row.payload.get("next")] == [1, 2, 3, 4]


def test_an_error_in_an_early_batch_rejects_the_version_at_the_end(app, bounded_wsgi):
    big = draft(app, BIG, {"a.bin": b"xEVIL", "b.bin": b"clean", "c.bin": b"CRASH"})
    app.post(f"{API}/models/{BIG}/versions/{big}/finalize", status=202)
    worker = worker_of(bounded_wsgi, **{"modelreg.scan.batch_seconds": "0"})
    assert worker.run_job()
    assert status(app, BIG, big) == "validating"
    worker.run_once()
    done = app.get(f"{API}/models/{BIG}/versions/{big}").json
    assert done["status"] == "rejected"
    assert [p["code"] for p in done["problems"]] == ["scanner_failed", "evil"]
    assert [f["path"] for f in
            app.get(f"{API}/models/{BIG}/versions/{big}/findings").json["findings"]] == ["a.bin"]


def test_a_version_over_the_file_limit_is_rejected_at_finalize_without_a_scan(
        app, bounded_wsgi):
    number = draft(app, BIG, {f"f{i}.bin": b"clean" for i in range(6)})
    answer = app.post(f"{API}/models/{BIG}/versions/{number}/finalize", status=200).json
    assert answer["status"] == "rejected"
    (problem,) = answer["problems"]
    assert problem["code"] == "too_many_files"
    assert "6 files" in problem["message"] and "modelreg.scan.max_files" in problem["message"]
    assert jobs(bounded_wsgi.registry["db_engine"]) == []
    ok = draft(app, SMALL, {f"f{i}.bin": b"clean" for i in range(5)})
    app.post(f"{API}/models/{SMALL}/versions/{ok}/finalize", status=202)


class Thief:
    """A scanner that, on a file holding ``STEAL``, hands the running scan job to another
    worker (as a lease that ran out and was claimed again would)."""

    engine: Any = None

    @hookimpl
    def modelreg_scan_file(self, file: dict[str, Any], opener: Any) -> list[Any]:
        with opener() as stream:
            if b"STEAL" in stream.read() and self.engine is not None:
                with self.engine.begin() as conn:
                    conn.execute(sa.update(Job.__table__)
                                 .where(Job.__table__.c.status == "running")
                                 .values(locked_by="another-worker"))
        return []


def test_a_batch_of_a_job_another_worker_took_over_stores_nothing_and_queues_nothing(
        modelreg_database, tmp_path):
    thief = Thief()
    wsgi = make_app({"sqlalchemy.url": modelreg_database.url, "retry.attempts": "3",
                     "modelreg.storage.local.path": str(tmp_path)},
                    plugins=(*CORE_PLUGINS, Scanner(), thief))
    engine = thief.engine = wsgi.registry["db_engine"]
    try:
        app = webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        number = draft(app, BIG, {"a.bin": b"WARN STEAL", "b.bin": b"clean"})
        app.post(f"{API}/models/{BIG}/versions/{number}/finalize", status=202)
        worker_of(wsgi, **{"modelreg.scan.batch_seconds": "0"}).run_job()
        (job,) = jobs(engine)  # no second job for the rest of the version
        assert (job.status, job.locked_by) == ("running", "another-worker")
        assert app.get(f"{API}/models/{BIG}/versions/{number}/findings").json[
            "findings"] == []
        assert status(app, BIG, number) == "validating"
    finally:
        clear_database(engine)
        engine.dispose()
