"""The background worker: scanning at finalize, the job queue, delivery of outbox events.

Apps here register a tiny scanner and an event recorder through ``make_app(plugins=...)``;
the worker runs in the test's thread through :meth:`Worker.run_once`.  The scanner decides
by the file's bytes: ``EVIL`` is an ``error`` finding, ``WARN`` a ``warning``, ``CRASH``
makes it raise, ``DOWN`` makes it raise a blob-store error (the job is tried again).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import API, add_file, create_model, create_version
from modelreg import jobs as queue
from modelreg.api import Finding, StorageError, hookimpl
from modelreg.models import Job, OutboxEvent, utcnow
from modelreg.registry.services import manifest_digest
from modelreg.testing import CORE_PLUGINS, clear_database, make_app
from modelreg.worker.runner import Worker
from openapi_checking import CheckedTestApp

M = "fraud-detector"


class Scanner:
    """A scanner plugin that reads each file through the opener it is given."""

    @hookimpl
    def modelreg_scan_file(self, file: dict[str, Any], opener: Any) -> list[Finding] | None:
        with opener() as stream:
            data = stream.read()
        if b"CRASH" in data:
            raise RuntimeError("the scanner broke")
        if b"DOWN" in data:
            raise StorageError("blob store unreachable")
        found = []
        if b"EVIL" in data:
            found.append(Finding(code="evil", message="evil bytes", severity="error",
                                 path=file["path"], details={"offset": data.index(b"EVIL")}))
        if b"WARN" in data:
            found.append(Finding(code="suspicious", message="odd bytes", severity="warning",
                                 path=file["path"]))
        return found


class Recorder:
    """An event plugin that records what it receives and fails on request."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.fail_types: set[str] = set()
        self.failures = 0

    @hookimpl
    def modelreg_on_event(self, event: Any) -> None:
        if event.type in self.fail_types:
            self.failures += 1
            raise RuntimeError("receiver down")
        self.events.append(event)


RECORDER = Recorder()


@pytest.fixture(scope="module")
def scan_wsgi(modelreg_database, tmp_path_factory) -> Iterator[Any]:
    app = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "retry.attempts": "3",
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("scan-blobs")),
        "modelreg.worker.max_attempts": "2",
    }, plugins=(*CORE_PLUGINS, Scanner(), RECORDER))
    yield app
    app.registry["db_engine"].dispose()


@pytest.fixture
def app(scan_wsgi, openapi_checker) -> Iterator[CheckedTestApp]:
    testapp = CheckedTestApp(scan_wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    testapp.checker = openapi_checker
    RECORDER.events.clear()
    RECORDER.fail_types.clear()
    RECORDER.failures = 0
    yield testapp
    clear_database(scan_wsgi.registry["db_engine"])


def make_worker(scan_wsgi: Any, **settings: str) -> Worker:
    registry = scan_wsgi.registry
    return Worker.from_registry(registry, settings)


@pytest.fixture
def worker(scan_wsgi) -> Worker:
    return make_worker(scan_wsgi)


def draft_with(app, files: dict[str, bytes]) -> int:
    if app.get(f"{API}/models/{M}", expect_errors=True).status_int == 404:
        create_model(app, M)
    number = create_version(app, M)["number"]
    for path, data in files.items():
        add_file(app, M, number, path, data)
    return number


def finalize(app, number: int) -> dict[str, Any]:
    return app.post(f"{API}/models/{M}/versions/{number}/finalize", status=202).json


def version(app, number: int) -> dict[str, Any]:
    return app.get(f"{API}/models/{M}/versions/{number}").json


def findings(app, number: int) -> list[dict[str, Any]]:
    return app.get(f"{API}/models/{M}/versions/{number}/findings").json["findings"]


def jobs(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(Job.__table__).order_by(Job.id)).all()


def test_finalize_with_scanners_answers_202_and_the_worker_makes_the_version_ready(
    app, worker, scan_wsgi
):
    data = {"weights/model.bin": b"clean", "notes.txt": b"WARN but fine"}
    number = draft_with(app, data)
    answer = finalize(app, number)
    assert answer["status"] == "validating"
    assert answer["digest"] is None
    assert version(app, number)["status"] == "validating"
    [job] = jobs(scan_wsgi.registry["db_engine"])
    assert (job.kind, job.status, job.payload) == ("scan_version", "queued",
                                                  {"version_id": job.payload["version_id"]})
    # a validating version holds no alias and takes no file
    add_file_status = app.put(f"{API}/models/{M}/versions/{number}/files/late.bin", b"x",
                              headers={"Content-Type": "application/octet-stream"},
                              expect_errors=True).status_int
    assert add_file_status == 409
    app.put_json(f"{API}/models/{M}/aliases/prod", {"version": number}, status=409)

    assert worker.run_once() >= 1
    done = version(app, number)
    assert done["status"] == "ready"
    files = app.get(f"{API}/models/{M}/versions/{number}/files").json["files"]
    assert done["digest"] == manifest_digest(files)
    assert done["problems"] is None
    # warnings are kept and shown, but do not reject by default
    assert findings(app, number) == [{
        "path": "notes.txt", "scanner": findings(app, number)[0]["scanner"],
        "severity": "warning", "code": "suspicious", "message": "odd bytes", "details": {},
    }]
    [job] = jobs(scan_wsgi.registry["db_engine"])
    assert (job.status, job.attempts, job.locked_by) == ("done", 1, None)
    assert app.put_json(f"{API}/models/{M}/aliases/prod", {"version": number}).json[
        "version"] == number


def test_an_error_finding_rejects_the_version_naming_the_file(app, worker):
    number = draft_with(app, {"a.bin": b"fine", "b/evil.pkl": b"xxEVILxx"})
    finalize(app, number)
    worker.run_once()
    done = version(app, number)
    assert done["status"] == "rejected"
    assert done["digest"] is None
    assert done["problems"] == [{"code": "evil", "message": "b/evil.pkl: evil bytes",
                                 "field": "files/b/evil.pkl"}]
    [finding] = findings(app, number)
    assert (finding["path"], finding["severity"], finding["details"]) == (
        "b/evil.pkl", "error", {"offset": 2})


def test_the_policy_decides_which_severities_reject(app, scan_wsgi):
    number = draft_with(app, {"a.bin": b"WARN"})
    finalize(app, number)
    make_worker(scan_wsgi, **{"modelreg.scan.reject": "warning error"}).run_once()
    assert version(app, number)["status"] == "rejected"
    assert [f["code"] for f in findings(app, number)] == ["suspicious"]


def test_a_scanner_that_raises_rejects_the_version(app, worker):
    number = draft_with(app, {"a.bin": b"CRASH"})
    finalize(app, number)
    worker.run_once()
    done = version(app, number)
    assert done["status"] == "rejected"
    [problem] = done["problems"]
    assert problem["code"] == "scanner_failed"
    assert "a.bin" in problem["message"] and "the scanner broke" in problem["message"]


def _make_due(engine: sa.Engine) -> None:
    past = utcnow() - dt.timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(sa.update(Job.__table__).where(Job.__table__.c.status == "queued")
                     .values(run_after=past))
        conn.execute(sa.update(OutboxEvent.__table__)
                     .where(OutboxEvent.__table__.c.delivered_at.is_(None))
                     .values(next_attempt_at=past))


def test_a_job_that_keeps_failing_rejects_the_version(app, worker, scan_wsgi):
    engine = scan_wsgi.registry["db_engine"]
    number = draft_with(app, {"a.bin": b"DOWN"})
    finalize(app, number)
    worker.run_once()
    [job] = jobs(engine)
    assert (job.status, job.attempts) == ("queued", 1)
    assert "blob store unreachable" in job.last_error
    assert version(app, number)["status"] == "validating"  # tried again later, not ready
    _make_due(engine)
    worker.run_once()
    [job] = jobs(engine)
    assert (job.status, job.attempts) == ("failed", 2)
    done = version(app, number)
    assert done["status"] == "rejected"
    assert [p["code"] for p in done["problems"]] == ["scan_failed"]


def test_a_job_whose_worker_died_is_claimed_again_after_its_lease(app, worker, scan_wsgi):
    engine = scan_wsgi.registry["db_engine"]
    number = draft_with(app, {"a.bin": b"clean"})
    finalize(app, number)
    dead = make_worker(scan_wsgi)
    with dead.transaction(write=True) as db:
        assert queue.claim(db, dead.id, dt.timedelta(seconds=60)) is not None
    assert worker.run_once() >= 0
    assert version(app, number)["status"] == "validating"  # the lease still holds
    with engine.begin() as conn:
        conn.execute(sa.update(Job.__table__)
                     .values(locked_until=utcnow() - dt.timedelta(seconds=1)))
    worker.run_once()
    assert version(app, number)["status"] == "ready"
    [job] = jobs(engine)
    assert (job.status, job.attempts) == ("done", 2)


def test_two_workers_never_claim_the_same_job(app, scan_wsgi, backend):
    for _ in range(2):
        finalize(app, draft_with(app, {"a.bin": b"clean"}))
    first, second = make_worker(scan_wsgi), make_worker(scan_wsgi)
    claimed = []
    if backend == "sqlite":  # one writer at a time: claims follow each other
        for runner in (first, second, first):
            with runner.transaction(write=True) as db:
                job = queue.claim(db, runner.id, dt.timedelta(seconds=60))
                claimed.append(job and job.id)
    else:  # the first claim is still uncommitted when the second is made
        with first.transaction(write=True) as db1:
            claimed.append(queue.claim(db1, first.id, dt.timedelta(seconds=60)).id)
            db1.flush()
            with second.transaction(write=True) as db2:
                claimed.append(queue.claim(db2, second.id, dt.timedelta(seconds=60)).id)
        with first.transaction(write=True) as db:
            claimed.append(queue.claim(db, first.id, dt.timedelta(seconds=60)))
    assert claimed[0] != claimed[1] and None not in claimed[:2]
    assert claimed[2] is None


def test_without_scanners_finalize_answers_200(testapp):
    create_model(testapp, M)
    number = create_version(testapp, M)["number"]
    add_file(testapp, M, number)
    done = testapp.post(f"{API}/models/{M}/versions/{number}/finalize", status=200).json
    assert done["status"] == "ready"
    assert testapp.get(f"{API}/models/{M}/versions/{number}/findings").json == {
        "model": M, "version": number, "status": "ready", "findings": []}


def test_findings_of_a_missing_version_answer_404(app):
    create_model(app, M)
    app.get(f"{API}/models/{M}/versions/9/findings", status=404)


# ------------------------------------------------------------------------------ events


def delivered(model: str | None = None) -> list[tuple[str, str | None]]:
    return [(e.type, e.model) for e in RECORDER.events if model is None or e.model == model]


def test_events_are_delivered_after_commit_in_order_per_model(app, worker):
    number = draft_with(app, {"a.bin": b"clean"})
    finalize(app, number)
    create_model(app, "other")
    assert RECORDER.events == []  # nothing before the worker runs
    worker.run_once()
    assert delivered(M) == [
        ("model.created", M), ("version.created", M), ("file.added", M),
        ("version.validating", M), ("version.finalized", M),
    ]
    assert delivered("other") == [("model.created", "other")]
    ids = [e.id for e in RECORDER.events]
    assert len(set(ids)) == len(ids)
    # created_at is timezone-aware UTC (plugins compare it with datetime.now(UTC)).
    assert all(e.created_at.utcoffset() == dt.timedelta(0) for e in RECORDER.events)
    assert worker.run_once() == 0  # delivered rows are marked, not sent again
    assert len(RECORDER.events) == len(ids)


def test_a_failed_delivery_is_retried_and_holds_back_later_events_of_its_model(
    app, worker, scan_wsgi
):
    engine = scan_wsgi.registry["db_engine"]
    create_model(app, M)
    RECORDER.fail_types.add("version.created")
    create_version(app, M)
    app.patch_json(f"{API}/models/{M}", {"description": "after"})
    create_model(app, "other")
    worker.run_once()
    assert RECORDER.failures == 1
    assert delivered(M) == [("model.created", M)]  # the rest waits for version.created
    assert delivered("other") == [("model.created", "other")]
    with engine.connect() as conn:
        row = conn.execute(sa.select(OutboxEvent.__table__)
                           .where(OutboxEvent.__table__.c.type == "version.created")).one()
    assert (row.attempts, row.delivered_at) == (1, None)
    assert "receiver down" in row.last_error and row.next_attempt_at > utcnow()
    assert worker.run_once() == 0  # backing off

    RECORDER.fail_types.clear()
    _make_due(engine)
    worker.run_once()
    assert delivered(M) == [("model.created", M), ("version.created", M),
                            ("model.updated", M)]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(OutboxEvent.__table__)
                            .where(OutboxEvent.__table__.c.delivered_at.is_(None))).scalar() == 0


def test_another_worker_waits_for_the_backoff_of_a_failed_event(app, worker, scan_wsgi):
    """One worker hands an event to the hook, which fails; another worker must not claim it
    (nor the later events of its model) before the backoff the first one set."""
    engine = scan_wsgi.registry["db_engine"]
    create_model(app, M)
    RECORDER.fail_types.add("model.created")
    assert worker.run_once() == 1
    assert RECORDER.failures == 1
    app.patch_json(f"{API}/models/{M}", {"description": "after"})
    assert make_worker(scan_wsgi)._claim_events(100) == []
    RECORDER.fail_types.clear()
    _make_due(engine)
    worker.run_once()
    assert delivered(M) == [("model.created", M), ("model.updated", M)]


def test_a_delivery_whose_worker_died_is_made_again(app, worker, scan_wsgi):
    engine = scan_wsgi.registry["db_engine"]
    create_model(app, M)
    ((_, event, _),) = make_worker(scan_wsgi)._claim_events(100)  # then the worker dies
    assert worker.run_once() == 0  # held by the dead worker's lease
    with engine.begin() as conn:
        conn.execute(sa.update(OutboxEvent.__table__)
                     .values(locked_until=utcnow() - dt.timedelta(seconds=1)))
    worker.run_once()
    assert [e.id for e in RECORDER.events] == [event.id]


# ------------------------------------------------------------------------ embedded


def test_the_embedded_worker_scans_in_the_app_and_stops_cleanly(modelreg_database, tmp_path):
    import webtest

    app = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "modelreg.storage.local.path": str(tmp_path),
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.05",
    }, plugins=(*CORE_PLUGINS, Scanner()))
    embedded = app.registry["modelreg.worker"]
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        number = draft_with(client, {"a.bin": b"clean"})
        assert finalize(client, number)["status"] == "validating"
        deadline = time.monotonic() + 30
        while version(client, number)["status"] == "validating":
            assert time.monotonic() < deadline, "the embedded worker did not scan"
            time.sleep(0.05)
        assert version(client, number)["status"] == "ready"
    finally:
        embedded.stop()
        app.registry["db_engine"].dispose()
        clear_database(app.registry["db_engine"])
        app.registry["db_engine"].dispose()
    assert not any(t.name == "modelreg-worker" for t in threading.enumerate())


def test_finalize_and_readyz_say_when_no_worker_runs_the_jobs(modelreg_database, tmp_path,
                                                              openapi_checker):
    wsgi = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "modelreg.storage.local.path": str(tmp_path / "blobs"),
        "modelreg.worker.stale_after": "0.5",
    }, plugins=(*CORE_PLUGINS, Scanner()))
    app = CheckedTestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    app.checker = openapi_checker
    engine = wsgi.registry["db_engine"]
    try:
        assert "warnings" not in app.get("/readyz").json  # nothing waits
        number = draft_with(app, {"model.bin": b"clean"})
        answer = finalize(app, number)
        assert answer["status"] == "validating"
        assert "no worker has run yet" in answer["notice"]
        assert "modelreg worker" in answer["notice"]
        time.sleep(0.6)
        ready = app.get("/readyz", status=200).json  # informs, never takes the process out
        assert ready["status"] == "ok"
        [warning] = ready["warnings"]
        assert warning.startswith("1 job(s) have waited over 0.5 s")
        assert "no worker has run yet" in warning

        worker = make_worker(wsgi, **{"modelreg.worker.stale_after": "0.5"})
        worker.beat()  # a worker shows up: the queue is served again
        assert "warnings" not in app.get("/readyz").json
        second = finalize(app, draft_with(app, {"other.bin": b"clean"}))
        assert second["notice"] is None
        worker.run_once()
        assert version(app, number)["status"] == "ready"
        time.sleep(0.6)  # the worker is gone again, but nothing waits
        assert "warnings" not in app.get("/readyz").json
    finally:
        clear_database(engine)
        engine.dispose()


def test_a_polling_worker_shows_a_sign_of_life_and_removes_it_when_stopped(scan_wsgi):
    worker = make_worker(scan_wsgi, **{"modelreg.worker.poll_interval": "0.05"})
    engine = scan_wsgi.registry["db_engine"]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT id FROM workers")).scalars().all()
            if rows:
                break
            time.sleep(0.05)
        assert rows == [worker.id]
    finally:
        stop.set()
        thread.join(10)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workers")).scalar() == 0


def test_without_a_listener_events_are_retired_in_one_statement(testapp, modelreg_app):
    """No plugin implements ``modelreg_on_event``: the worker marks every pending event
    delivered with one UPDATE, not three transactions per event."""
    for name in ("quiet-a", "quiet-b", "quiet-c"):
        create_model(testapp, name)
    create_version(testapp, "quiet-a")
    engine = modelreg_app.registry["db_engine"]
    worker = Worker.from_registry(modelreg_app.registry)
    assert not worker.hook.modelreg_on_event.get_hookimpls()
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert worker.deliver_events() == 4
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert [s.split()[0].upper() for s in statements
            if s.split()[0].upper() not in ("BEGIN", "COMMIT", "SET", "SELECT")] == ["UPDATE"]
    with engine.connect() as conn:
        pending = conn.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)
                              .where(OutboxEvent.delivered_at.is_(None)))
        attempts = conn.scalars(sa.select(OutboxEvent.attempts)).all()
    assert pending == 0 and attempts == [1, 1, 1, 1]
    assert worker.deliver_events() == 0
