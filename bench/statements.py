"""SQL statements and database round trips per write request, on PostgreSQL and SQLite.

Counts, for each write of the API (create model, create version, set an alias, set and
delete a version tag, …), what the app sends its database while it answers one request in
process (WebTest, no server, no other load): figures that do not depend on how busy the
machine is, so that a change to the write path can be measured before and after it.

* ``statements``: what SQLAlchemy's ``before_cursor_execute`` event sees, transaction
  control (``BEGIN``, ``COMMIT``, ``ROLLBACK``) left out;
* ``round trips`` (PostgreSQL): each query psycopg sends the server and waits for: a
  statement, the ``BEGIN`` it sends before the first statement of a transaction, the
  ``COMMIT``, the pool's pre-ping (since ``modelreg.db._ping_idle_connections``, only of a
  connection idle for a second: none here), the ``PREPARE`` of a statement run for the
  fifth time (counted on libpq's calls, through psycopg's Python binding of libpq, which this script
  selects with ``PSYCOPG_IMPL=python``: the same protocol as the C binding);

What the worker then spends on each write's outbox event is measured by ``bench/outbox.py``.

The app runs with the settings of ``bench/compare.py`` except that every plugin stays on (as
``production.ini`` ships), on a database created for the run and dropped after it.

Usage::

    .venv/bin/python bench/statements.py                  # PostgreSQL and SQLite
    .venv/bin/python bench/statements.py --backends postgresql -v   # and each statement
    .venv/bin/python bench/statements.py --json out.json

PostgreSQL is ``MODELREG_TEST_POSTGRESQL_URL``'s server (default ``127.0.0.1:5432``, user
``postgres``), as for the test suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ["PSYCOPG_IMPL"] = "python"  # before psycopg is imported: see counting()

import webtest
from sqlalchemy import event

from modelreg.testing import TestDatabase, make_app, run_worker

API = "/api/v1/models"
#: Each operation runs this many times; the figures are the least of them (the first runs
#: fill per-process caches: compiled statements, settings; and psycopg prepares a statement
#: on the server at its fifth execution on a connection, one more round trip once).
REPEATS = 8


@contextmanager
def counting(engine: Any) -> Iterator[dict[str, Any]]:
    """What ``engine`` (and, on PostgreSQL, psycopg under it) does inside the block."""
    counts: dict[str, Any] = {"statements": [], "tx": 0, "round_trips": 0}

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            counts["tx"] += 1
        else:
            counts["statements"].append(statement)

    event.listen(engine, "before_cursor_execute", before)
    patched: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        from psycopg import pq

        assert pq.__impl__ == "python", pq.__impl__
        for name in _SENDS:
            patched[name] = original = getattr(pq.PGconn, name)

            def send(self, *args, _original=original, **kwargs):
                counts["round_trips"] += 1
                return _original(self, *args, **kwargs)

            setattr(pq.PGconn, name, send)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", before)
        if patched:
            from psycopg import pq

            for name, original in patched.items():
                setattr(pq.PGconn, name, original)


#: The libpq calls that send a query and wait for its result.
_SENDS = ("exec_", "exec_params", "exec_prepared", "send_query", "send_query_params",
          "send_prepare", "send_query_prepared", "send_describe_prepared",
          "send_describe_portal", "send_close_prepared", "send_close_portal")


def settings_for(url: str, blobs: str) -> dict[str, str]:
    """The settings of bench/compare.py's modelreg, every plugin on, metrics off."""
    return {
        "sqlalchemy.url": url,
        "modelreg.storage": "local",
        "modelreg.storage.local.path": blobs,
        "modelreg.auth.anonymous": "write",
        "modelreg.auth.allow_anonymous_write": "true",
        "modelreg.metrics.enabled": "false",
        "modelreg.worker.embedded": "false",  # run_worker below does the worker's part
        "pyramid.reload_templates": "false",
    }


def ready_version(app: webtest.TestApp, model: str) -> int:
    number = app.post_json(f"{API}/{model}/versions", {}, status=201).json["number"]
    app.put(f"{API}/{model}/versions/{number}/files/w.bin", b"weights",
            headers={"Content-Type": "application/octet-stream"}, status=201)
    app.post(f"{API}/{model}/versions/{number}/finalize", status=(200, 202))
    run_worker(app.app)  # the scan, when the scan plugin is on
    status = app.get(f"{API}/{model}/versions/{number}").json["status"]
    assert status == "ready", status
    return number


def operations(app: webtest.TestApp) -> dict[str, Callable[[int], Any]]:
    """Each write, as a function of the run's number ``i`` (for unique names)."""
    app.post_json(API, {"name": "bench"}, status=201)
    v1, v2, v3 = (ready_version(app, "bench") for _ in range(3))
    # champion and staging on v1 (as in bench/compare.py, which tags v1); v3 has no alias.
    app.put_json(f"{API}/bench/aliases/champion", {"version": v1}, status=201)
    app.put_json(f"{API}/bench/aliases/staging", {"version": v1}, status=201)
    tags = itertools.count()

    def delete_tag(i: int) -> None:
        key = f"gone-{i}"
        app.put_json(f"{API}/bench/versions/{v3}/tags/{key}", {"value": "x"}, status=200)
        with counting(app.app.registry["db_engine"]) as counts:
            app.delete(f"{API}/bench/versions/{v3}/tags/{key}", status=204)
        return counts

    return {
        "create model": lambda i: app.post_json(API, {"name": f"m-{i}"}, status=201),
        "create version": lambda i: app.post_json(
            f"{API}/bench/versions", {"description": "d", "tags": {"a": "b"}}, status=201),
        "set alias (move)": lambda i: app.put_json(
            f"{API}/bench/aliases/staging", {"version": v2 if i % 2 == 0 else v1},
            status=200),
        "set alias (new)": lambda i: app.put_json(
            f"{API}/bench/aliases/a{i}", {"version": v2}, status=201),
        "set version tag (new key)": lambda i: app.put_json(
            f"{API}/bench/versions/{v3}/tags/k{next(tags)}", {"value": "v"}, status=200),
        "set version tag (same key)": lambda i: app.put_json(
            f"{API}/bench/versions/{v3}/tags/stage", {"value": f"v{i}"}, status=200),
        "set tag of an aliased version": lambda i: app.put_json(
            f"{API}/bench/versions/{v1}/tags/stage", {"value": f"v{i}"}, status=200),
        "delete version tag": delete_tag,
        "set model tag": lambda i: app.put_json(
            f"{API}/bench/tags/owner", {"value": f"v{i}"}, status=200),
    }


def measure(backend: str, verbose: bool) -> dict[str, dict[str, Any]]:
    database = TestDatabase.create(backend)
    blobs = tempfile.mkdtemp(prefix="modelreg-statements-")
    app_ = make_app(settings_for(database.url, blobs))
    try:
        app = webtest.TestApp(app_, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        engine = app_.registry["db_engine"]
        results: dict[str, dict[str, Any]] = {}
        for name, operation in operations(app).items():
            runs = []
            for i in range(REPEATS):
                with counting(engine) as counts:
                    inner = operation(i)
                if isinstance(inner, dict):  # the operation counted its own part
                    counts = inner
                runs.append(counts)
            counts = min(runs, key=lambda c: (c["round_trips"], len(c["statements"])))
            results[name] = {"statements": len(counts["statements"]),
                             "round_trips": counts["round_trips"] or None,
                             "tx": counts["tx"]}
            if verbose:
                print(f"-- {backend}: {name}", file=sys.stderr)
                for statement in counts["statements"]:
                    print("   " + " ".join(statement.split())[:240], file=sys.stderr)
        return results
    finally:
        app_.registry["db_engine"].dispose()
        database.drop()
        shutil.rmtree(blobs, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each statement")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("MODELREG_AUTH_ANONYMOUS", "write")
    report = {backend: measure(backend, args.verbose) for backend in args.backends.split(",")}
    backends = list(report)
    print("| operation | " + " | ".join(
        f"{b} statements | {b} round trips" if b == "postgresql"
        else f"{b} statements" for b in backends) + " |")
    print("|---|" + "---|" * sum(2 if b == "postgresql" else 1 for b in backends))
    for name in report[backends[0]]:
        cells = []
        for b in backends:
            row = report[b][name]
            cells.append(str(row["statements"]))
            if b == "postgresql":
                cells.append(str(row["round_trips"]))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
