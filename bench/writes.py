"""Writes per second on PostgreSQL at 16 connections, driven by wrk: to one model and to many.

One ``pserve`` (Waitress, 8 threads, the throughput settings of ``production.ini``, the
embedded worker on, as ``production.ini`` ships it, delivering every outbox event) on a
PostgreSQL database created for the run and dropped after it, with the settings of
``bench/compare.py`` (anonymous writes, local storage, the scan and webhooks plugins off).
Seeded through the API: a model ``bench`` with two ready versions and the aliases
``champion`` and ``staging`` on the first, and ``--models`` more (``m-0`` …) alike.  Then for
each operation, ``wrk`` (a C load generator: the Python clients of bench/compare.py cost a
core of two) at ``--connections`` for ``--seconds``, with a Lua script that makes every
request's names unique where they must be:

* create model (a new name each);
* create version — of ``bench`` (one model) and round-robin over the ``--models`` (many);
* set an alias (one per wrk thread and round, so that every request creates or moves it)
  to the other ready version than its last — one model, many models;
* set version tag (``k0`` … ``k49`` on the version the aliases point at, as
  bench/compare.py does) — one model, many models.

The code measured is that of the Python running this script (``sys.executable``: its
``pserve``); ``--baseline PYTHON`` also serves the code of another checkout's environment
(its ``pserve``, on a database of its own), and each operation then runs on both in
alternation, ``--rounds`` times, so that both see the same machine (a shared machine's
load drifts)::

    .venv/bin/python bench/writes.py                                        # this tree
    .venv/bin/python bench/writes.py --baseline /work/main/.venv/bin/python  # and main's

``--baseline "$PWD/.venv/bin/python"`` with ``--threads``/``--baseline-threads``,
``--server KEY=VALUE``/``--baseline-server`` (``[server:main]`` options) and ``--app
KEY=VALUE``/``--baseline-app`` (``[app:main]`` settings) compares two settings of one tree.

Prints a Markdown table: requests/s (the best of the rounds), latency p50/p99 and non-2xx
answers per operation, the server's CPU time per request (``/proc/<pid>/stat`` of the
server process, the embedded worker's thread included), and the ratios to the baseline.
Each run's line also splits the CPU per request between Waitress's main thread, its request
threads and the rest (the embedded worker), and gives the server's context switches per
request (every thread's, from ``/proc``; ``--perf`` also counts them with ``perf stat``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifacts import SERVER_SETTINGS
from reads import context_switches, machine_busy

from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer

API = "/api/v1/models"
WRK = "/usr/bin/wrk"

#: The Lua of each operation: ``request()`` builds one request; ``n`` counts per wrk thread
#: and ``tid`` tells the threads apart, so names are unique across the run.
LUA_HEAD = """
tid = 0  -- a global: setup() below sets each thread's own
local n = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
wrk.headers["Content-Type"] = "application/json"
"""
OPERATIONS: dict[str, str] = {
    "create model": """
function request()
  n = n + 1
  return wrk.format("POST", "/api/v1/models",
    nil, '{"name": "w-RUN-' .. tid .. '-' .. n .. '"}')
end
""",
    "create version, one model": """
function request()
  return wrk.format("POST", "/api/v1/models/bench/versions", nil, '{}')
end
""",
    "create version, many models": """
function request()
  n = n + 1
  return wrk.format("POST", "/api/v1/models/m-" .. ((n * 7 + tid) % MODELS) .. "/versions",
    nil, '{}')
end
""",
    "set alias, one model": """
local last = 1
function request()
  last = 3 - last
  return wrk.format("PUT", "/api/v1/models/bench/aliases/s-RUN-" .. tid, nil,
    '{"version": ' .. last .. '}')
end
""",
    "set alias, many models": """
local last = {}
function request()
  n = n + 1
  local k = (n * 7 + tid) % MODELS
  last[k] = 3 - (last[k] or 2)
  return wrk.format("PUT", "/api/v1/models/m-" .. k .. "/aliases/s-RUN-" .. tid, nil,
    '{"version": ' .. last[k] .. '}')
end
""",
    "set tag, one model": """
function request()
  n = n + 1
  return wrk.format("PUT", "/api/v1/models/bench/versions/1/tags/k" .. (n % 50), nil,
    '{"value": "value-' .. tid .. '-' .. n .. '"}')
end
""",
    "set tag, many models": """
function request()
  n = n + 1
  return wrk.format("PUT", "/api/v1/models/m-" .. ((n * 7 + tid) % MODELS) ..
    "/versions/1/tags/k" .. (n % 50), nil, '{"value": "value-' .. tid .. '-' .. n .. '"}')
end
""",
}
LUA_TAIL = """
local told = false
function response(status, headers, body)
  if status >= 300 and not told then
    told = true
    io.write("FIRST-ERROR " .. status .. " " .. string.sub(body, 1, 300) .. "\\n")
  end
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write, summary.errors.timeout))
end
"""


def call(port: int, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,),
         raw: bytes | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        elif raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {text[:300]!r}")
        return json.loads(text) if text else None
    finally:
        conn.close()


def seed_model(port: int, name: str) -> None:
    """A model with versions 1 and 2 ready, and champion and staging on 1."""
    call(port, "POST", API, {"name": name}, expect=(201,))
    for _ in range(2):
        number = call(port, "POST", f"{API}/{name}/versions", {}, expect=(201,))["number"]
        call(port, "PUT", f"{API}/{name}/versions/{number}/files/w.bin", raw=b"weights",
             expect=(201,))
        version = call(port, "POST", f"{API}/{name}/versions/{number}/finalize")
        assert version["status"] == "ready", version
    for alias in ("champion", "staging"):
        call(port, "PUT", f"{API}/{name}/aliases/{alias}", {"version": 1}, expect=(201,))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """The CPU seconds of each thread of process ``pid`` so far, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def cpu_by_part(pid: int, threads: int, before: dict[int, float], after: dict[int, float]
                ) -> dict[str, float]:
    """CPU seconds between ``before`` and ``after`` by part of the server: Waitress's main
    thread (its socket loop), its ``threads`` request threads (started last, so the highest
    thread ids) and the rest (the embedded worker, started with the app)."""
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    newest = sorted(spent)[-threads:]
    parts = {"main": spent.get(pid, 0.0), "requests": sum(spent[tid] for tid in newest)}
    parts["other"] = sum(spent.values()) - parts["main"] - parts["requests"]
    return parts


def perf_switches(pid: int) -> subprocess.Popen[str]:
    """``perf stat -e context-switches`` on process ``pid`` until :func:`perf_result`."""
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", "context-switches", "-p",
                             str(pid)], stderr=subprocess.PIPE, text=True)


def perf_result(perf: subprocess.Popen[str]) -> int:
    """The context switches ``perf`` counted (it is stopped with SIGINT, as by Ctrl-C)."""
    perf.send_signal(2)
    _, err = perf.communicate()
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "context-switches" and fields[0].isdigit():
            return int(fields[0])
    raise RuntimeError(f"perf said: {err}")


def wait_until_quiet(limit: float) -> float:
    """Wait (at most ``limit`` seconds) until the machine was under 8 % busy for two
    seconds; the last share measured.  The GIL convoy shows only when the cores are free
    for the server's threads (docs/performance.md, "Read turns")."""
    waited = 0.0
    while (busy := machine_busy()) > 0.08 and waited < limit:
        waited += 2
    return busy


def server_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text}")
    return key.strip(), value.strip()


def run_wrk(port: int, lua: str, connections: int, seconds: float, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        out = subprocess.run(
            [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
             "--timeout", "30s", "-s", script.name, f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True).stdout
    finally:
        os.unlink(script.name)
    for line in out.splitlines():
        if line.startswith("FIRST-ERROR"):
            print(line, file=sys.stderr)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not match:
        raise RuntimeError(f"wrk said: {out}")
    requests, duration_us, p50, p99, status, sockets, timeouts = map(int, match.groups())
    return {"requests": requests, "rps": requests / (duration_us / 1e6),
            "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "non_2xx": status,
            "socket_errors": sockets + timeouts}


class Server(LiveServer):
    """A :class:`LiveServer` run by another environment's Python (its code, its pserve)."""

    def __init__(self, python: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.python = python

    def command(self, ini: Path) -> list[str]:
        return [self.python if part == sys.executable else part
                for part in super().command(ini)]


def code_of(python: str) -> str:
    """Where the ``modelreg`` package that ``python`` imports lives."""
    return subprocess.run(
        [python, "-c", "import modelreg, pathlib; "
                       "print(pathlib.Path(modelreg.__file__).resolve().parent.parent.parent)"],
        capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--models", type=int, default=64, help="models of the 'many' rows")
    parser.add_argument("--wrk-threads", type=int, default=0,
                        help="wrk threads (default: one per connection, so that each "
                             "connection's requests are in order: its alias always moves)")
    parser.add_argument("--only", default="",
                        help="operations whose name contains this (or one of A|B|…)")
    parser.add_argument("--baseline", help="another environment's Python to compare with")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each operation on each server, alternating (2)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=8, help="Waitress threads (8)")
    parser.add_argument("--baseline-threads", type=int, default=8,
                        help="the baseline's Waitress threads (8)")
    parser.add_argument("--server", type=server_option, action="append", default=[],
                        metavar="KEY=VALUE", help="a [server:main] option of this server")
    parser.add_argument("--baseline-server", type=server_option, action="append",
                        default=[], metavar="KEY=VALUE",
                        help="a [server:main] option of the baseline's server")
    parser.add_argument("--quiet-wait", type=float, default=0,
                        help="before each run, wait up to this many seconds for the machine "
                             "to be idle (under 8 %% busy for 2 s); 0: do not wait")
    parser.add_argument("--perf", action="store_true",
                        help="also count the server's context switches with perf stat")
    parser.add_argument("--app", type=server_option, action="append", default=[],
                        metavar="KEY=VALUE", help="an [app:main] setting of this server")
    parser.add_argument("--baseline-app", type=server_option, action="append", default=[],
                        metavar="KEY=VALUE", help="an [app:main] setting of the baseline's")
    args = parser.parse_args(argv)
    args.wrk_threads = args.wrk_threads or args.connections

    pythons = {"this": sys.executable}
    if args.baseline:
        pythons["baseline"] = args.baseline
    databases: list[TestDatabase] = []
    blobs: list[str] = []
    servers: dict[str, Server] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for label, python in pythons.items():
            database = TestDatabase.create("postgresql")
            databases.append(database)
            blobs.append(tempfile.mkdtemp(prefix="modelreg-writes-"))
            settings = {
                "sqlalchemy.url": database.url,
                "sqlalchemy.pool_size": "10",
                "sqlalchemy.max_overflow": "4",
                "modelreg.storage": "local",
                "modelreg.storage.local.path": blobs[-1],
                "modelreg.auth.anonymous": "write",
                "modelreg.auth.allow_anonymous_write": "true",
                "modelreg.metrics.enabled": "false",
                "modelreg.plugins.disabled": "scan webhooks",
                "modelreg.worker.embedded": "true",
                "pyramid.reload_templates": "false",
                **dict(args.baseline_app if label == "baseline" else args.app),
            }
            baseline = label == "baseline"
            threads = args.baseline_threads if baseline else args.threads
            options = dict(args.baseline_server if baseline else args.server)
            server = Server(python, settings, threads=threads,
                            server_settings={**SERVER_SETTINGS, **options}, startup_timeout=60)
            servers[label] = server
            server.start()
            seed_model(server.port, "bench")
            for k in range(args.models):
                seed_model(server.port, f"m-{k}")
        for name, body in OPERATIONS.items():
            if not any(part in name for part in args.only.split("|")):
                continue
            for round_ in range(args.rounds):
                lua = (LUA_HEAD + body.replace("MODELS", str(args.models))
                       .replace("RUN", str(round_)) + LUA_TAIL)
                order = list(servers.items())
                if round_ % 2:
                    order.reverse()
                for label, server in order:
                    pid = server.process.pid
                    busy = wait_until_quiet(args.quiet_wait) if args.quiet_wait else None
                    before, switches = cpu_seconds(pid), context_switches(pid)
                    per_thread = thread_cpu(pid)
                    perf = perf_switches(pid) if args.perf else None
                    result = run_wrk(server.port, lua, args.connections, args.seconds,
                                     args.wrk_threads)
                    if perf is not None:
                        result["perf_switches"] = (perf_result(perf)
                                                   / max(result["requests"], 1))
                    result["cpu_ms"] = ((cpu_seconds(pid) - before) * 1000
                                        / max(result["requests"], 1))
                    result["cpu_parts_ms"] = {
                        part: seconds * 1000 / max(result["requests"], 1)
                        for part, seconds in cpu_by_part(pid, server.threads, per_thread,
                                                         thread_cpu(pid)).items()}
                    result["switches"] = ((context_switches(pid) - switches)
                                          / max(result["requests"], 1))
                    print(f"{name:30} {label:8} {result['rps']:7.1f} req/s "
                          f"p50 {result['p50_ms']:6.1f} ms p99 {result['p99_ms']:6.1f} ms "
                          f"cpu {result['cpu_ms']:5.2f} ms ("
                          + "/".join(f"{v:.2f}" for v in result["cpu_parts_ms"].values())
                          + f" main/requests/other) cs/req {result['switches']:5.1f} "
                          + (f"perf cs/req {result['perf_switches']:5.1f} "
                             if perf is not None else "")
                          + (f"busy before {busy:.0%} " if busy is not None else "")
                          + f"non-2xx {result['non_2xx']} "
                          f"socket errors {result['socket_errors']}",
                          file=sys.stderr, flush=True)
                    best = rows.get((name, label))
                    if best is None or result["rps"] > best["rps"]:
                        result["cpu_ms"] = min(result["cpu_ms"],
                                               best["cpu_ms"] if best else result["cpu_ms"])
                        rows[(name, label)] = result
                    else:
                        best["cpu_ms"] = min(best["cpu_ms"], result["cpu_ms"])
    finally:
        for server in servers.values():
            server.stop()
        for blob_dir in blobs:
            shutil.rmtree(blob_dir, ignore_errors=True)
        for database in databases:
            database.drop()

    print(f"{args.connections} connections, {args.seconds} s per run, best of {args.rounds} "
          f"runs, {args.models} models; "
          + "; ".join(f"{label}: {code_of(python)}" for label, python in pythons.items()))
    labels = list(pythons)
    head = "| operation | " + " | ".join(
        f"{label} req/s (p50 / p99 ms) [CPU ms/req]" for label in labels)
    if args.baseline:
        head += " | ratio req/s (CPU) |"
    print(head if head.endswith("|") else head + " |")
    print("|---" * (len(labels) + 1 + bool(args.baseline)) + "|")
    for name in OPERATIONS:
        if (name, "this") not in rows:
            continue
        cells = []
        for label in labels:
            row = rows[(name, label)]
            errors = f", {row['non_2xx']} non-2xx" if row["non_2xx"] else ""
            cells.append(f"{row['rps']:.0f} ({row['p50_ms']:.0f} / {row['p99_ms']:.0f})"
                         f" [{row['cpu_ms']:.2f}]{errors}")
        if args.baseline:
            this, base = rows[(name, "this")], rows[(name, "baseline")]
            cells.append(f"{this['rps'] / base['rps']:.2f}x "
                         f"({base['cpu_ms'] / this['cpu_ms']:.2f}x less)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"operation": name, "system": label, **row} for (name, label), row in rows.items()],
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
