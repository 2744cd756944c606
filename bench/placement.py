"""Where a served read's CPU goes, by where the server's threads run: the app's own CPU
(its thread's, timed around each call) beside the whole process's, per request.

``production.ini``'s app on a fresh SQLite database (``bench/reads.py``'s set-up: the scan,
webhooks and S3 plugins off, anonymous reads, the embedded worker off) is served in this
process by modelreg's Waitress (``modelreg.servers.create_server``, 8 threads, read turns on)
on a thread of its own, behind a middleware that adds up the thread CPU time of every app
call.  ``wrk -t1`` reads ``GET …/aliases/champion`` for ``--seconds`` at 1 and 16
connections, with the server's threads:

``anywhere``  where the OS puts them (``production.ini`` as shipped);
``cpu0``      on CPU 0 (``cpus = 0``), wrk on CPU 1;
``shared``    on CPU 0, and wrk on CPU 0 too.

Then the same app called in a loop on this thread (no server), with hot and with cold
caches (32 MiB touched between calls).  See docs/performance.md, "One CPU for Waitress's
threads"::

    .venv/bin/python bench/placement.py --seconds 4
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reads

PLACEMENTS = {"anywhere": (None, None), "cpu0": ("0", "1"), "shared": ("0", "0")}


class Timed:
    """The app, with the thread CPU time of its calls added up."""

    def __init__(self, app: Any) -> None:
        self.app, self.seconds, self.calls = app, 0.0, 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        began = time.thread_time()
        body = b"".join(self.app(environ, start_response))
        spent = time.thread_time() - began
        with self.lock:
            self.seconds, self.calls = self.seconds + spent, self.calls + 1
        return [body]


def measure(timed: Timed, port: int, path: str, connections: int, seconds: float,
            wrk_cpu: str | None) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               f"http://127.0.0.1:{port}{path}"]
    if wrk_cpu is not None:
        command = ["taskset", "-c", wrk_cpu, *command]
    subprocess.run([*command[:-2], "-d1s", command[-1]], capture_output=True, check=True)
    timed.seconds, timed.calls = 0.0, 0
    before = os.times()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = os.times()
    match = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or not rate:
        raise RuntimeError(f"wrk: {out}")
    count = int(match.group(1))
    cpu = (after.user + after.system) - (before.user + before.system)
    return {"rps": float(rate.group(1)), "cpu_us": cpu / count * 1e6,
            "app_us": timed.seconds / max(1, timed.calls) * 1e6}


def in_a_loop(app: Any, path: str, port: int, requests: int) -> dict[str, float]:
    environ = reads.get_environ(path, port)
    junk = bytearray(32 << 20)

    def cold() -> None:
        for i in range(0, len(junk), 4096):
            junk[i] = (junk[i] + 1) & 255

    out = {}
    for label, between in (("hot", None), ("cold", cold)):
        spent = 0.0
        for _ in range(requests):
            if between:
                between()
            began = time.thread_time()
            b"".join(app(dict(environ, **{"wsgi.input": io.BytesIO()}),
                         lambda s, h, e=None: None))
            spent += time.thread_time() - began
        out[label] = spent / requests * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--requests", type=int, default=2000,
                        help="calls of the app in a loop, hot and cold")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset (apt-get install -y wrk util-linux)", file=sys.stderr)
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two CPUs", file=sys.stderr)
        return 2
    from pyramid.paster import get_app, setup_logging

    from modelreg.testing.server import serve_in_thread

    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-placement-"))
    s = reads.setup(work)
    access_log = open(work / "access.log", "w")  # closed in the finally below
    try:
        port = reads.free_port()
        with reads.serving(reads.pserve(s.ini(port)), port, work / "seed.log"):
            reads.seed_once(s, port)
        ini = s.ini(port, worker=False)
        setup_logging(str(ini))
        for handler in logging.getLogger().handlers:  # the access log, to a file
            if hasattr(handler, "setStream"):
                handler.setStream(access_log)
        app = get_app(str(ini), "main")
        path = reads.PATHS["resolve alias"]
        print(f"{'placement':10} {'conn':>4} {'req/s':>8} {'server CPU/req':>15} "
              f"{'app CPU/req':>12}")
        for name, (cpus, wrk_cpu) in PLACEMENTS.items():
            timed = Timed(app)
            port = reads.free_port()
            server = serve_in_thread(timed, listen=f"127.0.0.1:{port}", threads=8,
                                     **({"cpus": cpus} if cpus else {}))
            try:
                for connections in (1, 16):
                    row = measure(timed, port, path, connections, args.seconds, wrk_cpu)
                    print(f"{name:10} {connections:>4} {row['rps']:>8.0f} "
                          f"{row['cpu_us']:>12.0f} µs {row['app_us']:>9.0f} µs", flush=True)
            finally:
                server.close()
                server.task_dispatcher.shutdown()
        loop = in_a_loop(app, path, port, args.requests)
        print(f"the app in a loop on one thread: {loop['hot']:.0f} µs a call, "
              f"{loop['cold']:.0f} µs with 32 MiB touched between calls")
    finally:
        access_log.close()
        if s.database is not None:
            s.database.drop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
