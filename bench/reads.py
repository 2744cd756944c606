"""The read path's server cost: get version and resolve alias on one Waitress process.

Serves ``production.ini`` (one ``pserve`` process, 8 threads, its logging: one access-log
line per request) on a fresh SQLite database with the ``scan`` and ``webhooks`` plugins off,
as ``bench/compare.py`` does, and a hello-world WSGI app on Waitress with the same server
settings (the ceiling: what Waitress costs by itself).  The database holds one model with a
ready version (a file, two tags) and the alias ``champion``; reads are made anonymously
(``modelreg.auth.anonymous = read``) and with a reader's bearer token.

Three measurements, each of the same requests:

``wrk``
    ``wrk`` (a C load generator, so that no Python client takes a core) at 16 connections for
    a few seconds per row; requests/s and the server's CPU per request, from its own
    accounting (``/proc/<pid>/stat`` before and after).  Noisy on a shared machine: compare
    the rows of one run.
``callgrind``
    the server under ``valgrind --tool=callgrind`` with instrumentation switched on only
    around ``--requests`` sequential requests (after a warm-up): instructions per request,
    which the machine's load does not change.
``profile``
    the app called in this process (no Waitress) under :mod:`cProfile`: the share of each
    layer (WebOb/Pyramid, security, SQLAlchemy, the driver, rendering, logging, modelreg),
    by the functions' own time.
``turns``
    two servers at once, one with ``reads_at_once = 0`` (every thread reads at once) and
    one with ``1`` (read turns, production.ini's), ``wrk -c16`` on each in turn for
    ``--rounds`` rounds: requests/s, CPU and context switches (all the server's threads,
    ``/proc/<pid>/task/*/status``) per request.  Each round waits until the machine has been
    idle (under 8 % busy) for two seconds first: what turns save shows only when both cores
    are free for the server's threads.

Usage::

    .venv/bin/python bench/reads.py wrk --seconds 3
    .venv/bin/python bench/reads.py callgrind --requests 300
    .venv/bin/python bench/reads.py profile --requests 3000
    .venv/bin/python bench/reads.py turns --rounds 3 --seconds 4
    .venv/bin/python bench/reads.py all

``--src DIR`` serves (and profiles) the modelreg package found in ``DIR`` instead of the
installed one, to measure an older revision in the same run
(``git archive <rev> src | tar -x -C /tmp/base`` then ``--src /tmp/base/src``).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import cProfile
import http.client
import io
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODEL = "bench"
PATHS = {
    "get version": f"/api/v1/models/{MODEL}/versions/1",
    "resolve alias": f"/api/v1/models/{MODEL}/aliases/champion",
}
HELLO = """\
import sys, waitress
def app(environ, start_response):
    body = b'{"status":"ok"}'
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
waitress.serve(app, listen="127.0.0.1:" + sys.argv[1], threads=8, ident="hello",
               _quiet=True)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ---------------------------------------------------------------------------- set-up


@dataclass
class Setup:
    work: Path
    database_url: str
    token: str
    admin: str
    #: ``[server:main] threads`` for modelreg's server (``None``: production.ini's).
    threads: int | None = None
    #: ``[server:main] reads_at_once`` (``None``: production.ini's; an older revision
    #: given with ``--src`` that has no such setting gets none).
    reads_at_once: int | None = None
    src: str | None = None
    #: The :class:`modelreg.testing.TestDatabase` (dropped when the bench ends).
    database: Any = None

    def ini(self, port: int, worker: bool = True) -> Path:
        """production.ini for this database, on ``port``, scan and webhooks off (and the
        embedded worker thread too unless ``worker``: its polls would land in the counts)."""
        parser = configparser.RawConfigParser()
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(ROOT / "production.ini")
        app = parser["app:main"]
        app["sqlalchemy.url"] = self.database_url
        app["modelreg.storage.local.path"] = str(self.work / "blobs")
        # s3 too: not the storage here, and an older revision (--src) cannot load it.
        app["modelreg.plugins.disabled"] = "scan webhooks storage-s3"
        app["modelreg.auth.anonymous"] = "read"
        app["modelreg.worker.embedded"] = "true" if worker else "false"
        parser["server:main"]["listen"] = f"127.0.0.1:{port}"
        if self.threads:
            parser["server:main"]["threads"] = str(self.threads)
        if self.reads_at_once is not None:
            parser["server:main"]["reads_at_once"] = str(self.reads_at_once)
        elif self.src and not (Path(self.src) / "modelreg" / "servers.py").read_text(
                ).count("reads_at_once"):
            parser["server:main"].pop("reads_at_once", None)
        path = self.work / f"reads-{port}.ini"
        with open(path, "w") as out:
            parser.write(out)
        return path


def setup(work: Path) -> Setup:
    """A migrated SQLite database with a reader's token and an admin's."""
    from modelreg.testing import TestDatabase, add_principal, make_app

    database = TestDatabase.create("sqlite")
    settings = {"sqlalchemy.url": database.url,
                "modelreg.storage.local.path": str(work / "blobs")}
    app = make_app(settings)
    admin = add_principal(app, "admin", admin=True)
    token = add_principal(app, "reader", grants=[("*", "read")], scopes=["read"])
    app.registry["db_engine"].dispose()
    return Setup(work, database.url, token, admin, database=database)


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, expect: tuple[int, ...] = (200,)) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return data
    finally:
        conn.close()


def seed(port: int, admin: str) -> None:
    """One model with a ready version (a file, two tags) and ``champion`` on it."""
    auth = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    base = f"/api/v1/models/{MODEL}"
    call(port, "POST", "/api/v1/models",
         json.dumps({"name": MODEL, "tags": {"team": "risk"}}).encode(), auth, (201,))
    call(port, "POST", f"{base}/versions",
         json.dumps({"tags": {"stage": "prod", "owner": "ana"},
                     "metadata": {"framework": "torch"}}).encode(), auth, (201,))
    call(port, "PUT", f"{base}/versions/1/files/model.bin", b"\0weights" * 1000,
         {**auth, "Content-Type": "application/octet-stream"}, (200, 201))
    call(port, "POST", f"{base}/versions/1/finalize", b"", auth, (200,))
    call(port, "PUT", f"{base}/aliases/champion", json.dumps({"version": 1}).encode(), auth,
         (200, 201))


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            call(port, "GET", "/healthz", expect=(200,))
            return
        except (OSError, RuntimeError):
            time.sleep(0.2)
    raise RuntimeError("the server did not answer /healthz")


@contextmanager
def serving(command: list[str], port: int, log: Path, src: str | None = None,
            timeout: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, env=env,
                                   start_new_session=True)
    try:
        if "waitress.serve" in " ".join(command):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    call(port, "GET", "/", expect=(200,))
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
        else:
            wait_ready(port, process, timeout)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pserve(ini: Path) -> list[str]:
    return [sys.executable, "-m", "pyramid.scripts.pserve", str(ini)]


def hello(port: int) -> list[str]:
    return [sys.executable, "-c", HELLO, str(port)]


# ------------------------------------------------------------------------------- wrk


def wrk(port: int, path: str, seconds: float, headers: dict[str, str],
        pid: int) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) of ``wrk -c16`` on ``path``."""
    args = ["wrk", "-t2", "-c16", f"-d{max(1, round(seconds))}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    before = cpu_seconds(pid)
    output = subprocess.run([*args, f"http://127.0.0.1:{port}{path}"], check=True,
                            capture_output=True, text=True).stdout
    used = cpu_seconds(pid) - before
    match = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not match or not rate or errors:
        raise RuntimeError(f"wrk: {output}")
    return float(rate.group(1)), used / int(match.group(1)) * 1e6


def cases(s: Setup) -> list[tuple[str, str, dict[str, str]]]:
    bearer = {"Authorization": f"Bearer {s.token}"}
    rows = []
    for name, path in PATHS.items():
        rows.append((f"{name}, anonymous", path, {}))
        rows.append((f"{name}, token", path, bearer))
    return rows


def run_wrk(s: Setup, seconds: float, src: str | None) -> list[dict[str, Any]]:
    results = []
    port = free_port()
    with serving(hello(port), port, s.work / "hello.log") as process:
        for _ in range(2):
            rate, cpu = wrk(port, "/", seconds, {}, process.pid)
        results.append({"row": "hello-world WSGI (Waitress)", "rate": rate, "cpu_us": cpu})
    port = free_port()
    with serving(pserve(s.ini(port)), port, s.work / "server.log", src) as process:
        seed_once(s, port)
        for row, path, headers in cases(s):
            wrk(port, path, 1, headers, process.pid)  # warm
            rate, cpu = wrk(port, path, seconds, headers, process.pid)
            results.append({"row": row, "rate": rate, "cpu_us": cpu})
        etag = etag_of(port, PATHS["resolve alias"])
        rate, cpu = wrk(port, PATHS["resolve alias"], seconds, {"If-None-Match": etag},
                        process.pid)
        results.append({"row": "resolve alias, anonymous, 304", "rate": rate, "cpu_us": cpu})
    return results


_seeded: set[str] = set()


def seed_once(s: Setup, port: int) -> None:
    if s.database_url not in _seeded:
        seed(port, s.admin)
        _seeded.add(s.database_url)


def etag_of(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.headers.get("ETag") or '"none"'


# ------------------------------------------------------------------------- callgrind


def _ctl(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def instructions(command: list[str], port: int, rows: list[tuple[str, str, dict[str, str]]],
                 requests: int, work: Path, src: str | None) -> dict[str, float]:
    """Instructions the server process executes per request (all its threads) for each
    ``(row, path, headers)``, counted by callgrind only around ``requests`` sequential
    keep-alive requests after a warm-up (one server under valgrind for all rows)."""
    out = work / f"callgrind.{port}"
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
          *command]
    counts: dict[str, float] = {}
    log = work / ("hello-vg.log" if "waitress.serve" in " ".join(command) else "server-vg.log")
    with serving(vg, port, log, src, timeout=900) as process:
        pid = str(process.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        for row, path, headers in rows:
            for _ in range(30):  # warm: imports, statement caches, connections
                conn.request("GET", path, headers=headers)
                conn.getresponse().read()
            before = set(work.glob(f"callgrind.{port}*"))
            _ctl("-z", pid)
            _ctl("-i", "on", pid)
            for _ in range(requests):
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status in (200, 304), response.status
            _ctl("-i", "off", pid)
            _ctl("-d", pid)
            deadline = time.monotonic() + 60
            while not (set(work.glob(f"callgrind.{port}*")) - before):
                if time.monotonic() > deadline:
                    raise RuntimeError("callgrind wrote no dump")
                time.sleep(0.2)
            time.sleep(0.5)
            (dump,) = set(work.glob(f"callgrind.{port}*")) - before
            text = dump.read_text(errors="replace")
            match = re.search(r"^totals:\s+(\d+)", text, re.M)
            counts[row] = int(match.group(1)) / requests if match else float("nan")
        conn.close()
    for dump in work.glob(f"callgrind.{port}*"):
        dump.unlink()
    return counts


def run_callgrind(s: Setup, requests: int, src: str | None) -> list[dict[str, Any]]:
    results = []
    port = free_port()
    hello_row = "hello-world WSGI (Waitress)"
    count = instructions(hello(port), port, [(hello_row, "/", {})], requests, s.work, None)
    results.append({"row": hello_row, "instructions": count[hello_row]})
    seed_port = free_port()
    with serving(pserve(s.ini(seed_port)), seed_port, s.work / "server.log", src):
        seed_once(s, seed_port)
        etag = etag_of(seed_port, PATHS["resolve alias"])
    rows = [*cases(s), ("resolve alias, anonymous, 304", PATHS["resolve alias"],
                        {"If-None-Match": etag})]
    port = free_port()
    counts = instructions(pserve(s.ini(port, worker=False)), port, rows, requests, s.work, src)
    results += [{"row": row, "instructions": counts[row]} for row, _, _ in rows]
    return results


# --------------------------------------------------------------------------- profile

LAYERS = (
    ("security", ("modelreg/security/",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("driver (sqlite3)", ("sqlite3", "_sqlite3", "'_sqlite3.", "sqlite3.")),
    ("rendering (json, documents)", ("json/", "modelreg/registry/documents", "'_json.",
                                     "pyramid/renderers", "modelreg/models/")),
    ("logging (access log)", ("logging/", "modelreg/logs")),
    ("transaction (pyramid_tm, transaction, zope.sqlalchemy)",
     ("pyramid_tm/", "transaction/", "zope/sqlalchemy")),
    ("WebOb/Pyramid", ("webob/", "pyramid/", "zope/interface", "pyramid_retry",
                       "translationstring", "venusian")),
    ("modelreg (views, queries, tweens)", ("modelreg/",)),
)


def layer_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for layer, needles in LAYERS:
        if any(n in where for n in needles):
            return layer
    return "other (stdlib, builtins)"


OTHER = "other (stdlib, builtins)"


def layer_shares(table: dict[Any, Any]) -> dict[str, float]:
    """Own time per layer; the time of standard-library and built-in functions (``dict.get``,
    ``getattr`` …) goes to the layer of the caller that spent it (through callers that are
    themselves such functions, to the nearest one of a layer)."""
    resolved: dict[Any, str] = {}

    def layer(func: Any, depth: int = 0) -> str:
        if func in resolved:
            return resolved[func]
        found = layer_of(func[0], func[2])
        if found == OTHER and depth < 8 and func in table:
            callers = table[func][4]
            if callers:
                top = max(callers, key=lambda c: callers[c][2] + callers[c][3])
                found = layer(top, depth + 1)
        resolved[func] = found
        return found

    shares: dict[str, float] = {}
    for func, (_cc, _nc, tottime, _ct, callers) in table.items():
        if layer_of(func[0], func[2]) != OTHER or not callers:
            shares[layer(func)] = shares.get(layer(func), 0.0) + tottime
            continue
        for caller, edge in callers.items():
            # edge: (calls, primitive calls, own time, cumulative time) of func from caller
            name = layer(caller)
            shares[name] = shares.get(name, 0.0) + edge[2]
    return shares


def get_environ(path: str, port: int, headers: dict[str, str] | None = None
                ) -> dict[str, Any]:
    """The WSGI environ of a ``GET`` of ``path`` on ``127.0.0.1:port`` (without
    ``wsgi.input``: give each call a fresh one), to call the app in process."""
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": f"127.0.0.1:{port}",
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.errors": sys.stderr,
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()},
    }


def run_profile(s: Setup, requests: int, src: str | None) -> dict[str, Any]:
    if src:
        sys.path.insert(0, src)
        for name in [m for m in sys.modules if m == "modelreg" or m.startswith("modelreg.")]:
            del sys.modules[name]
    from pyramid.paster import get_app, setup_logging

    port = free_port()
    with serving(pserve(s.ini(port)), port, s.work / "server.log", src):
        seed_once(s, port)
    ini = s.ini(port)
    setup_logging(str(ini))
    logging_root = __import__("logging").getLogger()
    for handler in logging_root.handlers:  # the access log, written where nobody reads
        if hasattr(handler, "setStream"):
            handler.setStream(io.StringIO())
    app = get_app(str(ini), "main")
    out: dict[str, Any] = {}
    with serving(pserve(s.ini(port)), port, s.work / "server.log", src):
        etag = etag_of(port, PATHS["resolve alias"])
    for row, path, headers in [*cases(s), ("resolve alias, anonymous, 304",
                                           PATHS["resolve alias"], {"If-None-Match": etag})]:
        environ_base = get_environ(path, port, headers)

        def once(environ_base: dict[str, Any] = environ_base) -> None:
            environ = dict(environ_base, **{"wsgi.input": io.BytesIO()})
            status = []
            body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
            assert status[0][:3] in ("200", "304"), (status, body)

        for _ in range(200):
            once()
        # The least of five batches: the load of a shared machine only ever adds.
        batch, timings = max(1, requests // 5), []
        for _ in range(5):
            started = time.process_time()
            for _ in range(batch):
                once()
            timings.append((time.process_time() - started) / batch * 1e6)
        plain = min(timings)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(requests):
            once()
        profile.disable()
        stats = pstats.Stats(profile)
        shares = layer_shares(stats.stats)  # type: ignore[attr-defined]
        total = sum(shares.values())
        out[row] = {"cpu_us_in_process": plain,
                    "calls": stats.total_calls / requests,  # type: ignore[attr-defined]
                    "shares": {k: v / total for k, v in sorted(shares.items(),
                                                                key=lambda kv: -kv[1])}}
        if os.environ.get("READS_PROFILE_TOP"):
            stats.sort_stats(os.environ.get("READS_PROFILE_SORT", "cumulative")).print_stats(
                int(os.environ["READS_PROFILE_TOP"]))
    return out


# ----------------------------------------------------------------------------- turns


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of process ``pid``."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # a thread that ended
            continue
        total += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return total


def machine_busy(seconds: float = 2.0) -> float:
    """The share of the machine's CPU time that was not idle over ``seconds``."""
    def sample() -> list[int]:
        return [int(n) for n in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    before = sample()
    time.sleep(seconds)
    delta = [b - a for a, b in zip(before, sample(), strict=True)]
    return 1 - (delta[3] + delta[4]) / max(1, sum(delta))


def run_turns(s: Setup, seconds: float, rounds: int, src: str | None,
              quiet_wait: float = 600) -> list[dict[str, Any]]:
    """Rows of :func:`wrk` -c16 on a server without read turns and one with them, in turn."""
    results = []
    with contextlib.ExitStack() as stack:
        servers = []
        for at_once in (0, 1):
            s.reads_at_once = at_once
            port = free_port()
            process = stack.enter_context(serving(
                pserve(s.ini(port, worker=False)), port, s.work / f"turns-{at_once}.log", src))
            seed_once(s, port)
            servers.append((at_once, port, process))
        for round_ in range(rounds):
            waited = 0.0
            while (busy := machine_busy()) > 0.08 and waited < quiet_wait:
                waited += 2
            for at_once, port, process in servers:
                for name, path in PATHS.items():
                    wrk(port, path, 1, {}, process.pid)  # warm
                    switches = context_switches(process.pid)
                    rate, cpu = wrk(port, path, seconds, {}, process.pid)
                    switched = context_switches(process.pid) - switches
                    results.append({"round": round_, "reads_at_once": at_once, "row": name,
                                    "rate": rate, "cpu_us": cpu, "busy_before": busy,
                                    "switches": switched / (rate * max(1, round(seconds)))})
    return results


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("wrk", "callgrind", "profile", "turns", "all"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--src", help="serve the modelreg package of this directory")
    parser.add_argument("--json", action="store_true", help="print JSON, not tables")
    parser.add_argument("--threads", type=int, default=None,
                        help="modelreg's Waitress threads (production.ini's 8 by default)")
    parser.add_argument("--reads-at-once", type=int, default=None,
                        help="[server:main] reads_at_once (production.ini's 1 by default; "
                        "0: every thread reads at once)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the turns mode")
    args = parser.parse_args(argv)
    if args.src:  # that revision's models and migrations make the database too
        sys.path.insert(0, args.src)
    work = Path(tempfile.mkdtemp(prefix="modelreg-reads-"))
    report: dict[str, Any] = {"src": args.src or "installed"}
    s: Setup | None = None
    try:
        s = setup(work)
        s.threads = args.threads
        s.reads_at_once = args.reads_at_once
        s.src = args.src
        if args.mode in ("wrk", "all"):
            report["wrk"] = run_wrk(s, args.seconds, args.src)
        if args.mode in ("callgrind", "all"):
            report["callgrind"] = run_callgrind(s, args.requests, args.src)
        if args.mode in ("profile", "all"):
            report["profile"] = run_profile(s, args.requests * 10, args.src)
        if args.mode == "turns":
            report["turns"] = run_turns(s, args.seconds, args.rounds, args.src)
    finally:
        if s is not None:
            s.database.drop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for row in report.get("wrk", []):
        print(f"wrk  {row['row']:<34} {row['rate']:8.0f} req/s  {row['cpu_us']:7.0f} µs CPU/req")
    for row in report.get("turns", []):
        print(f"turns round {row['round']} (machine {row['busy_before']:3.0%} busy before it) "
              f"reads_at_once={row['reads_at_once']} {row['row']:<14} {row['rate']:6.0f} req/s "
              f"{row['cpu_us']:5.0f} µs CPU/req {row['switches']:5.1f} context switches/req")
    for row in report.get("callgrind", []):
        print(f"cg   {row['row']:<34} {row['instructions'] / 1e6:8.3f} M instructions/req")
    for row, data in report.get("profile", {}).items():
        print(f"prof {row:<34} {data['cpu_us_in_process']:7.0f} µs/req in process (no Waitress)"
              f", {data['calls']:6.0f} Python calls/req")
        for layer, share in data["shares"].items():
            print(f"       {layer:<58} {share:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
