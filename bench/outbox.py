"""What the worker spends per outbox event, on PostgreSQL: statements, commits, CPU.

Every write adds an outbox event; the worker (embedded in the app by default) hands each to
``modelreg_on_event`` and marks it (or, with no plugin listening, marks them all at once).
Measured with no listener, then with one that takes every event and does nothing.  This
writes 40 model-tag changes (to one model, then spread over four), runs the worker once
over them in this process (``modelreg worker --once``, as the embedded worker's loop does)
and divides what it ran by 40: statements
(``before_cursor_execute``), commits (the engine's ``commit`` event) and this process's CPU
time.  The code measured is that of the Python running it::

    .venv/bin/python bench/outbox.py
    /work/main/.venv/bin/python bench/outbox.py      # another checkout's code
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import webtest
from sqlalchemy import event

from modelreg import keys
from modelreg.api import hookimpl
from modelreg.testing import TestDatabase, make_app, run_worker

EVENTS = 40


class Listener:
    """A plugin that receives every event and does nothing with it (as the webhooks plugin
    does with no subscription)."""

    @hookimpl
    def modelreg_on_event(self, event: object) -> None:
        """Take the event."""


LISTENER = Listener()


def main() -> int:
    os.environ.setdefault("MODELREG_AUTH_ANONYMOUS", "write")
    database = TestDatabase.create("postgresql")
    app_ = make_app({"sqlalchemy.url": database.url,
                     "modelreg.storage.local.path": tempfile.mkdtemp(),
                     "modelreg.auth.anonymous": "write", "modelreg.worker.embedded": "false"})
    try:
        app = webtest.TestApp(app_)
        for name in ("bench", "m0", "m1", "m2"):
            app.post_json("/api/v1/models", {"name": name}, status=201)
        run_worker(app_)
        engine = app_.registry["db_engine"]
        print("| listener | events of | statements per event | commits per event | "
              "CPU ms per event |")
        print("|---|---|---|---|---|")
        pm = app_.registry[keys.PLUGIN_MANAGER]
        spread = ["bench", "m0", "m1", "m2"]
        for listener, label, models in (("none", "one model", ["bench"]),
                                        ("none", "4 models", spread),
                                        ("one", "one model", ["bench"]),
                                        ("one", "4 models", spread)):
            if listener == "one" and not pm.is_registered(LISTENER):
                pm.register(LISTENER)
            for i in range(EVENTS):
                app.put_json(f"/api/v1/models/{models[i % len(models)]}/tags/k{i}",
                             {"value": "v"}, status=200)
            statements: list[str] = []
            commits: list[int] = []

            def count(conn, cursor, statement, parameters, context, executemany,
                      statements=statements):
                if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
                    statements.append(statement)

            def commit(conn, commits=commits):
                commits.append(1)

            event.listen(engine, "before_cursor_execute", count)
            event.listen(engine, "commit", commit)
            began = time.process_time()
            try:
                delivered = run_worker(app_)
            finally:
                event.remove(engine, "before_cursor_execute", count)
                event.remove(engine, "commit", commit)
            cpu = time.process_time() - began
            assert delivered == EVENTS, delivered
            print(f"| {listener} | {label} | {len(statements) / EVENTS:.2f} | "
                  f"{len(commits) / EVENTS:.2f} | {cpu * 1000 / EVENTS:.2f} |")
    finally:
        app_.registry["db_engine"].dispose()
        database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
