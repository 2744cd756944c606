"""Where the CPU of one write goes, on PostgreSQL, in process: cProfile by layer.

The app (the settings of ``bench/writes.py``: anonymous writes, local storage, the scan and
webhooks plugins off, metrics off; the embedded worker off, since cProfile sees only the
calling thread) is called as a WSGI app in this process (no Waitress), on a PostgreSQL
database created for the run and dropped after it, seeded as ``bench/writes.py`` seeds it.
For each write:

* ``µs/req``: process CPU per request without the profiler (the least of five batches: the
  load of a shared machine only ever adds);
* the share of each layer's CPU (cProfile timed by the thread's CPU clock, so that
  waiting for the database counts nothing) (WebOb/Pyramid, pyramid_tm/transaction/zope.sqlalchemy,
  SQLAlchemy, psycopg, pluggy, rendering, modelreg …) by the functions' own time
  (``bench/reads.py``'s attribution: a standard-library function's time goes to its caller's
  layer).

With ``--callgrind``, the script runs itself under ``valgrind --tool=callgrind`` and counts
instead the instructions per request of each write (the Python process only; the database
server's are not counted): a figure that the machine's load does not change.  Only the
measured requests are counted (they run inside ``collections.deque(map(...), maxlen=0)``,
whose C function ``consume_iterator`` toggles the collection), one dump per write.

Usage::

    .venv/bin/python bench/write_profile.py --requests 2000
    .venv/bin/python bench/write_profile.py --callgrind --requests 100
    .venv/bin/python bench/write_profile.py --only tag --top 40    # and cProfile's top 40
    .venv/bin/python bench/write_profile.py --src /tmp/base/src     # another revision's code
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reads  # noqa: E402  (bench/reads.py: the attribution of time to layers)

API = "/api/v1/models"
LAYERS = (
    ("security", ("modelreg/security/",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("psycopg", ("psycopg/", "psycopg_c/", "psycopg_binary/", "psycopg_pool/")),
    ("pluggy (plugin hooks)", ("pluggy/",)),
    ("validation (modelreg.validation, openapi)", ("modelreg/validation/",
                                                   "modelreg/openapi", "jsonschema")),
    ("rendering (json, documents)", ("json/", "modelreg/registry/documents", "'_json.",
                                     "pyramid/renderers", "modelreg/models/")),
    ("logging (access log)", ("logging/", "modelreg/logs")),
    ("transaction (pyramid_tm, transaction, zope.sqlalchemy)",
     ("pyramid_tm/", "transaction/", "zope/sqlalchemy")),
    ("WebOb/Pyramid", ("webob/", "pyramid/", "zope/interface", "pyramid_retry",
                       "translationstring", "venusian")),
    ("modelreg (views, commands, auditing, tweens)", ("modelreg/",)),
)


def settings_for(url: str, blobs: str) -> dict[str, str]:
    return {
        "sqlalchemy.url": url,
        "sqlalchemy.pool_size": "10",
        "sqlalchemy.max_overflow": "4",
        "modelreg.storage": "local",
        "modelreg.storage.local.path": blobs,
        "modelreg.auth.anonymous": "write",
        "modelreg.auth.allow_anonymous_write": "true",
        "modelreg.metrics.enabled": "false",
        "modelreg.plugins.disabled": "scan webhooks",
        "modelreg.worker.embedded": "false",
        "pyramid.reload_templates": "false",
    }


class Caller:
    """Calls the WSGI app as Waitress would, with a JSON body (or ``raw`` bytes)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, method: str, path: str, body: Any = None,
                 expect: tuple[int, ...] = (200, 201), raw: bytes | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else raw or b""
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8080", "wsgi.url_scheme": "http", "wsgi.version": (1, 0),
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.errors": sys.stderr, "wsgi.input": io.BytesIO(data),
            "CONTENT_LENGTH": str(len(data)),
            "CONTENT_TYPE": "application/json" if raw is None else "application/octet-stream",
        }
        status: list[str] = []
        out = b"".join(self.app(environ, lambda s, h, e=None: status.append(s)))
        code = int(status[0][:3])
        if code not in expect:
            raise RuntimeError(f"{method} {path}: {status[0]} {out[:300]!r}")
        return json.loads(out) if out else None


def seed(call: Caller, name: str) -> None:
    """A model with versions 1 and 2 ready, champion and staging on 1 (bench/writes.py)."""
    call("POST", API, {"name": name})
    for _ in range(2):
        number = call("POST", f"{API}/{name}/versions", {})["number"]
        call("PUT", f"{API}/{name}/versions/{number}/files/w.bin", raw=b"weights")
        call("POST", f"{API}/{name}/versions/{number}/finalize")
    for alias in ("champion", "staging"):
        call("PUT", f"{API}/{name}/aliases/{alias}", {"version": 1})


def operations(call: Caller) -> dict[str, Callable[[int], Any]]:
    """The writes of bench/writes.py, one model."""
    return {
        "create model": lambda i: call("POST", API, {"name": f"w-{i}"}),
        "create version": lambda i: call("POST", f"{API}/bench/versions", {}),
        "set alias": lambda i: call("PUT", f"{API}/bench/aliases/s", {"version": 1 + i % 2}),
        "set tag": lambda i: call("PUT", f"{API}/bench/versions/1/tags/k{i % 50}",
                                  {"value": f"value-{i}"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--only", default="", help="operations whose name contains this")
    parser.add_argument("--top", type=int, default=0, help="also print cProfile's top N")
    parser.add_argument("--sort", default="tottime", help="the order of --top")
    parser.add_argument("--src", help="the modelreg package of this directory")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per request, under valgrind")
    parser.add_argument("--under-callgrind", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.callgrind:
        return run_callgrind(args, argv if argv is not None else sys.argv[1:])
    if args.src:
        sys.path.insert(0, args.src)
    os.environ.setdefault("MODELREG_AUTH_ANONYMOUS", "write")
    from modelreg.testing import TestDatabase, make_app

    reads.LAYERS = LAYERS  # the attribution below uses these layers
    database = TestDatabase.create("postgresql")
    blobs = tempfile.mkdtemp(prefix="modelreg-wprof-")
    app = make_app(settings_for(database.url, blobs))
    report: dict[str, Any] = {}
    counter = iter(range(10**9))
    try:
        call = Caller(app)
        seed(call, "bench")
        for name, operation in operations(call).items():
            if args.only not in name:
                continue
            for _ in range(30 if args.under_callgrind else 200):  # warm: caches, prepares
                operation(next(counter))
            if args.under_callgrind:
                collections.deque(map(operation, [next(counter) for _ in range(args.requests)]),
                                  maxlen=0)
                report[name] = {}
                continue
            batch, timings = max(1, args.requests // 5), []
            for _ in range(5):
                started = time.process_time()
                for _ in range(batch):
                    operation(next(counter))
                timings.append((time.process_time() - started) / batch * 1e6)
            profile = cProfile.Profile(time.thread_time)  # CPU, not the waits
            profile.enable()
            for _ in range(args.requests):
                operation(next(counter))
            profile.disable()
            stats = pstats.Stats(profile)
            shares = reads.layer_shares(stats.stats)  # type: ignore[attr-defined]
            total = sum(shares.values())
            report[name] = {
                "cpu_us": min(timings),
                "calls": stats.total_calls / args.requests,  # type: ignore[attr-defined]
                "shares": {k: v / total for k, v in sorted(shares.items(),
                                                            key=lambda kv: -kv[1])}}
            if args.top:
                stats.sort_stats(args.sort).print_stats(args.top)
    finally:
        app.registry["db_engine"].dispose()
        database.drop()
        shutil.rmtree(blobs, ignore_errors=True)
    if args.under_callgrind:
        Path(args.under_callgrind).write_text(json.dumps(list(report)))
        return 0
    for name, data in report.items():
        print(f"{name:<16} {data['cpu_us']:6.0f} µs/req in process (no Waitress), "
              f"{data['calls']:6.0f} Python calls/req")
        for layer, share in data["shares"].items():
            print(f"    {layer:<58} {share:6.1%}  {share * data['cpu_us']:5.0f} µs")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def run_callgrind(args: argparse.Namespace, argv: list[str]) -> int:
    """This script again under callgrind: instructions per request of each write."""
    work = Path(tempfile.mkdtemp(prefix="modelreg-wprof-cg-"))
    names = work / "names.json"
    argv = [a for a in argv if a != "--callgrind"]
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--toggle-collect=consume_iterator",
         "--dump-after=consume_iterator", f"--callgrind-out-file={work}/cg.out",
         sys.executable, __file__, *argv, "--under-callgrind", str(names)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dumps = sorted(work.glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    counts = {}
    for name, dump in zip(json.loads(names.read_text()), dumps, strict=False):
        match = re.search(r"^totals:\s+(\d+)", dump.read_text(errors="replace"), re.M)
        counts[name] = int(match.group(1)) / args.requests if match else float("nan")
    for name, count in counts.items():
        print(f"{name:<16} {count / 1e6:8.3f} M instructions/req (in process, no Waitress)")
    if args.json:
        Path(args.json).write_text(json.dumps(counts, indent=2))
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
