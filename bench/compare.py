"""modelreg beside MLflow's model registry: the same operations, the same machine, one run.

Starts, on loopback, each with its own SQLite database and local artifact directory in a
temporary directory:

* ``mlflow``: ``mlflow server --serve-artifacts`` (its default uvicorn, ``--workers 4``),
  installed on first use into ``bench/.mlflow-venv`` (gitignored; never a dependency of
  modelreg);
* ``modelreg``: ``pserve`` on a production-like ini (one Waitress process, 8 threads,
  the throughput settings of ``production.ini``, anonymous writes allowed for the bench);
* ``modelreg-gunicorn``: the same ini under ``gunicorn --paste`` with 4 gthread workers,
  the same number of processes as MLflow.

and drives them through one harness with an adapter per system, in alternation (each
operation at each concurrency runs on every system before the next one starts), so that all
see the same machine.  Per operation and number of clients (threads, one keep-alive
``http.client`` connection each, ``TCP_NODELAY`` set): requests/s, p50 and p99 latency, and
the server's CPU time per request from its processes' own accounting (``/proc/<pid>/stat``
of the server and all its descendants, before and after).  Transfers are timed per file and
verified by sha256.  The servers' total RSS (all their processes) is sampled throughout.

Note: the client runs on the same cores as the servers and costs ~1 ms of CPU per request
in Python, so at 16 clients the rates of the faster system are a lower bound.

Usage::

    .venv/bin/python bench/compare.py          # 1,000 and 10,000 models, 100 MiB + 1 GiB
    .venv/bin/python bench/compare.py --quick  # small scale, a minute or two

Writes ``bench/results/compare-<date>.md`` and ``.json``; prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifacts import SERVER_SETTINGS, Content, parse_size
from search import model_name

from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer, free_port

HERE = Path(__file__).resolve().parent
VENV = HERE / ".mlflow-venv"
RESULTS = HERE / "results"
MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = MiB
CLK_TCK = os.sysconf("SC_CLK_TCK")
PREFIX = "fraud-"
MLFLOW_WORKERS = 4
#: Whether modelreg runs its embedded worker thread (``--embedded-worker``; production.ini
#: does).
EMBEDDED_WORKER = [True]
#: The MLflow release the bench installs into bench/.mlflow-venv (issue 18 measured 3.17.2).
MLFLOW_VERSION = "3.17.2"
MODELREG_THREADS = 8
GUNICORN_THREADS = 4


# ------------------------------------------------------------------------ processes


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (ppid, CPU seconds user+system, RSS bytes) of every process."""
    table = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is the state (field 3): ppid is field 4, utime 14, stime 15, rss 24.
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
                             int(fields[21]) * page)
    return table


def database_cpu(command: str = "postgres") -> float:
    """CPU seconds (user + system) of every process named ``command``: a database server
    on this machine (PostgreSQL's postmaster and its backends), which shares the cores
    with the app it serves.  A backend that exited (a client's connection closed) counts
    too: its time is in its parent's ``cutime``/``cstime`` once the postmaster reaped it."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != command:
                continue
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        stats[int(entry)] = text[text.rindex(")") + 2:].split()
    total = 0
    for fields in stats.values():
        # Fields after the name: state, ppid, …; utime, stime, cutime, cstime are 14 to 17.
        total += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in stats:  # the postmaster: its reaped backends' time too
            total += int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def tree_usage(root: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, processes) of ``root`` and all its descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    cpu, rss, count, todo = 0.0, 0, 0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            cpu += table[pid][1]
            rss += table[pid][2]
            count += 1
        todo.extend(children.get(pid, ()))
    return cpu, rss, count


class RssPeak:
    """The highest total RSS of a process tree, sampled every 0.25 s in the background."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, tree_usage(self.root)[1])

    def reset(self) -> None:
        self.peak = tree_usage(self.root)[1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ensure_mlflow(database: str = "sqlite") -> Path:
    """The ``mlflow`` executable of ``bench/.mlflow-venv``, created on first use (with
    psycopg when MLflow's backend store is PostgreSQL)."""
    mlflow = VENV / "bin" / "mlflow"
    if not mlflow.exists():
        print(f"installing MLflow into {VENV} (first use) …", flush=True)
        subprocess.run([sys.executable if not shutil.which("python3") else "python3",
                        "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q",
                        f"mlflow=={MLFLOW_VERSION}"], check=True)
    if database == "postgresql" and subprocess.run(
            [str(VENV / "bin" / "python"), "-c", "import psycopg"],
            capture_output=True).returncode != 0:
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "psycopg[binary]"],
                       check=True)
    return mlflow


def mlflow_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                          "import mlflow, uvicorn; print(mlflow.__version__, uvicorn.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    return f"mlflow {out[0]}, uvicorn {out[1]}"


class MlflowServer:
    """``mlflow server`` with served artifacts and a SQLite backend store (or the
    SQLAlchemy URL ``backend_store``)."""

    def __init__(self, directory: Path, workers: int = MLFLOW_WORKERS,
                 backend_store: str | None = None) -> None:
        self.directory = directory
        self.workers = workers
        self.backend_store = backend_store or f"sqlite:///{directory / 'mlflow.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "server.log", "wb")
        self.process = subprocess.Popen(
            [str(VENV / "bin" / "mlflow"), "server",
             "--backend-store-uri", self.backend_store,
             "--serve-artifacts", "--artifacts-destination", str(self.directory / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             # On a loaded machine a worker takes more than uvicorn's default 5 s to import
             # MLflow and answer the supervisor's health check, and is killed in a loop.
             "--uvicorn-opts", "--timeout-worker-healthcheck 120"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.directory, start_new_session=True,
            env={**os.environ, "MLFLOW_HOME": str(self.directory)})
        deadline = time.monotonic() + 600
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("mlflow server exited: "
                                   + (self.directory / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health: "
                                   + (self.directory / "server.log").read_text()[-3000:])
            time.sleep(0.5)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # The job runner's huey consumers leave the process group: stop every descendant.
        table = _proc_table()
        tree, todo = [], [process.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(child for child, row in table.items() if row[0] == pid)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in tree:
            try:
                if pid == process.pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        process.wait()


# --------------------------------------------------------------------------- client


class Conn:
    """One keep-alive connection (``TCP_NODELAY``: no Nagle stall on the client's side); with
    ``keep_alive=False``, a new connection for every request (``Connection: close``)."""

    def __init__(self, port: int, keep_alive: bool = True) -> None:
        self.port = port
        self.keep_alive = keep_alive
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600,
                                          blocksize=BLOCK)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def call(self, method: str, path: str, body: Any = None,
             expect: tuple[int, ...] = (200,)) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if not self.keep_alive:
            headers["Connection"] = "close"
            if self.conn.sock is None:  # the last request's connection was closed
                self.conn = self._connect()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()
            self.conn = self._connect()
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        raw = response.read()
        if not self.keep_alive:
            self.conn.close()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def close(self) -> None:
        self.conn.close()


def put_stream(port: int, path: str, content: Content, start: int = 0, end: int | None = None,
               method: str = "PUT", headers: dict[str, str] | None = None,
               expect: tuple[int, ...] = (200, 201, 202)) -> Any:
    """Send ``content[start:end]`` as the body of one request."""
    end = content.size if end is None else end
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.putrequest(method, path)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(end - start))
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        for piece in content.chunks(start, end):
            conn.send(piece)
        response = conn.getresponse()
        data = response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None
    finally:
        conn.close()


def get_sha256(port: int, path: str) -> tuple[int, str]:
    """GET ``path``; its length and sha256."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {response.read()[:300]!r}")
        digest = hashlib.sha256()
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        total = 0
        while n := response.readinto(view):
            digest.update(view[:n])
            total += n
        return total, digest.hexdigest()
    finally:
        conn.close()


# ------------------------------------------------------------------------- adapters


class Adapter:
    """One system's REST calls; ``name`` names it in the table."""

    name = ""
    port = 0
    root_pid = 0

    def create_model(self, c: Conn, name: str) -> None: ...
    def create_version(self, c: Conn, model: str) -> None: ...
    def get_version(self, c: Conn, model: str, version: int) -> None: ...
    def resolve_alias(self, c: Conn, model: str, alias: str) -> None: ...
    def set_alias(self, c: Conn, model: str, alias: str, version: int) -> None: ...
    def set_tag(self, c: Conn, model: str, version: int, key: str, value: str) -> None: ...
    def search_page(self, c: Conn, prefix: str, token: str | None) -> tuple[int, str | None]: ...
    def ready_version(self, c: Conn, model: str) -> int: ...
    def upload(self, content: Content, model: str, path: str) -> str: ...

    def specs(self, operation: str, fixtures: dict[str, Any]) -> list[dict[str, Any]]:
        """The requests of ``operation`` for ``wrk`` (see :func:`wrk_script`): dicts of
        ``method``, ``path`` and ``body``, where ``{n}`` is a number unique to the request,
        ``{m}`` that number modulo :data:`MANY` (one of the models ``w-0`` …) and ``{k}`` it
        modulo 50 (a tag key)."""
        raise NotImplementedError

    def search(self, c: Conn, prefix: str, all_pages: bool) -> int:
        count, token = self.search_page(c, prefix, None)
        while all_pages and token:
            n, token = self.search_page(c, prefix, token)
            count += n
        return count


class Mlflow(Adapter):
    name = "MLflow"
    api = "/api/2.0/mlflow"

    def __init__(self, server: MlflowServer) -> None:
        self.server = server
        self.port = server.port
        self.root_pid = server.process.pid

    def create_model(self, c: Conn, name: str) -> None:
        c.call("POST", f"{self.api}/registered-models/create", {"name": name})

    def create_version(self, c: Conn, model: str) -> int:
        answer = c.call("POST", f"{self.api}/model-versions/create",
                        {"name": model, "source": f"s3://bench-bucket/models/{model}"})
        return int(answer["model_version"]["version"])

    def get_version(self, c: Conn, model: str, version: int) -> None:
        q = urllib.parse.urlencode({"name": model, "version": str(version)})
        c.call("GET", f"{self.api}/model-versions/get?{q}")

    def resolve_alias(self, c: Conn, model: str, alias: str) -> None:
        q = urllib.parse.urlencode({"name": model, "alias": alias})
        c.call("GET", f"{self.api}/registered-models/alias?{q}")

    def set_alias(self, c: Conn, model: str, alias: str, version: int) -> None:
        c.call("POST", f"{self.api}/registered-models/alias",
               {"name": model, "alias": alias, "version": str(version)})

    def set_tag(self, c: Conn, model: str, version: int, key: str, value: str) -> None:
        c.call("POST", f"{self.api}/model-versions/set-tag",
               {"name": model, "version": str(version), "key": key, "value": value})

    def search_page(self, c: Conn, prefix: str, token: str | None) -> tuple[int, str | None]:
        params = {"filter": f"name LIKE '{prefix}%'", "max_results": "100"}
        if token:
            params["page_token"] = token
        answer = c.call("GET", f"{self.api}/registered-models/search?"
                        + urllib.parse.urlencode(params))
        return len(answer.get("registered_models", [])), answer.get("next_page_token")

    def ready_version(self, c: Conn, model: str) -> int:
        return self.create_version(c, model)

    def specs(self, operation: str, fixtures: dict[str, Any]) -> list[dict[str, Any]]:
        api = self.api
        tag = '"key": "k{k}", "value": "value-{n}"}'
        return {
            "get version": [_spec("GET", f"{api}/model-versions/get?name=bench&version={v}")
                            for v in (fixtures["v1"], fixtures["v2"])],
            "resolve alias": [_spec("GET", f"{api}/registered-models/alias?name=bench"
                                           "&alias=champion")],
            "create version": [_spec("POST", f"{api}/model-versions/create",
                                     '{"name": "bench-versions", "source": '
                                     '"s3://bench-bucket/models/bench-versions"}')],
            "create version, many models": [_spec(
                "POST", f"{api}/model-versions/create",
                '{"name": "w-{m}", "source": "s3://bench-bucket/models/w-{m}"}')],
            "set tag": [_spec("POST", f"{api}/model-versions/set-tag",
                              '{"name": "bench", "version": "' + str(fixtures["v1"]) + '", '
                              + tag)],
            "set tag, many models": [_spec("POST", f"{api}/model-versions/set-tag",
                                           '{"name": "w-{m}", "version": "1", ' + tag)],
        }[operation]

    def upload(self, content: Content, model: str, path: str) -> str:
        location = f"/api/2.0/mlflow-artifacts/artifacts/{model}/{path}"
        put_stream(self.port, location, content)
        return location


class Modelreg(Adapter):
    api = "/api/v1"

    def __init__(self, name: str, server: LiveServer, chunk: int) -> None:
        self.name = name
        self.server = server
        self.port = server.port
        self.root_pid = server.process.pid
        self.chunk = chunk
        self.max_put = 256 * MiB

    def create_model(self, c: Conn, name: str) -> None:
        c.call("POST", f"{self.api}/models", {"name": name}, expect=(201,))

    def create_version(self, c: Conn, model: str) -> int:
        return int(c.call("POST", f"{self.api}/models/{model}/versions", {},
                          expect=(201,))["number"])

    def get_version(self, c: Conn, model: str, version: int) -> None:
        c.call("GET", f"{self.api}/models/{model}/versions/{version}")

    def resolve_alias(self, c: Conn, model: str, alias: str) -> None:
        c.call("GET", f"{self.api}/models/{model}/aliases/{alias}")

    def set_alias(self, c: Conn, model: str, alias: str, version: int) -> None:
        c.call("PUT", f"{self.api}/models/{model}/aliases/{alias}", {"version": version},
               expect=(200, 201))

    def set_tag(self, c: Conn, model: str, version: int, key: str, value: str) -> None:
        c.call("PUT", f"{self.api}/models/{model}/versions/{version}/tags/{key}",
               {"value": value}, expect=(200, 201))

    def search_page(self, c: Conn, prefix: str, token: str | None) -> tuple[int, str | None]:
        params = {"filter": f"name LIKE '{prefix}%'", "page_size": "100"}
        if token:
            params["page_token"] = token
        answer = c.call("GET", f"{self.api}/models?" + urllib.parse.urlencode(params))
        return len(answer["models"]), answer.get("next_page_token")

    def ready_version(self, c: Conn, model: str) -> int:
        number = self.create_version(c, model)
        small = Content(1024)
        put_stream(self.port, f"{self.api}/models/{model}/versions/{number}/files/w.bin"
                   f"?digest=sha256:{small.sha256}", small, expect=(201,))
        c.call("POST", f"{self.api}/models/{model}/versions/{number}/finalize", {},
               expect=(200,))
        return number

    def specs(self, operation: str, fixtures: dict[str, Any]) -> list[dict[str, Any]]:
        api = self.api
        tag = '{"value": "value-{n}"}'
        return {
            "get version": [_spec("GET", f"{api}/models/bench/versions/{v}")
                            for v in (fixtures["v1"], fixtures["v2"])],
            "resolve alias": [_spec("GET", f"{api}/models/bench/aliases/champion")],
            "create version": [_spec("POST", f"{api}/models/bench-versions/versions", "{}")],
            "create version, many models": [_spec("POST", f"{api}/models/w-{{m}}/versions",
                                                  "{}")],
            "set tag": [_spec("PUT", f"{api}/models/bench/versions/{fixtures['v1']}/tags/k{{k}}",
                              tag)],
            "set tag, many models": [_spec("PUT", f"{api}/models/w-{{m}}/versions/1/tags/k{{k}}",
                                           tag)],
        }[operation]

    def upload(self, content: Content, model: str, path: str) -> str:
        number = self.create_version(_conn(self), model)
        base = f"{self.api}/models/{model}/versions/{number}"
        if content.size <= self.max_put:
            put_stream(self.port, f"{base}/files/{path}?digest=sha256:{content.sha256}",
                       content, expect=(201,))
        else:  # a resumable session, as a client sends a large file
            session = _conn(self).call("POST", f"{base}/uploads", {"path": path},
                                       expect=(201,))
            location = session["location"]
            offset = 0
            while offset < content.size:
                end = min(offset + self.chunk, content.size)
                put_stream(self.port, location, content, offset, end, method="PATCH",
                           headers={"Content-Range": f"bytes {offset}-{end - 1}/{content.size}"},
                           expect=(202,))
                offset = end
            put_stream(self.port, f"{location}?digest=sha256:{content.sha256}", Content(0),
                       expect=(200, 201))
        return f"{base}/files/{path}"


def _conn(adapter: Adapter) -> Conn:
    return Conn(adapter.port)


def _spec(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    return {"method": method, "path": path, "body": body}


# ------------------------------------------------------------------------ measuring


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def measure(adapter: Adapter, operation: Callable[[Conn, int], Any], clients: int,
            seconds: float, max_requests: int, warmup: int = 2,
            keep_alive: bool = True) -> dict[str, Any]:
    """Run ``operation(conn, i)`` from ``clients`` threads for ``seconds`` (or
    ``max_requests`` in all); requests/s, p50/p99 ms, server CPU ms per request.  With
    ``keep_alive=False`` each request opens a connection of its own."""
    conns = [Conn(adapter.port, keep_alive) for _ in range(clients)]
    counter = iter(range(10**9))
    lock = threading.Lock()
    samples: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    deadline = [0.0]

    def worker(k: int) -> None:
        conn = conns[k]
        while time.perf_counter() < deadline[0]:
            with lock:
                i = next(counter)
            if i >= max_requests + warmup * clients:
                return
            began = time.perf_counter()
            try:
                operation(conn, i)
            except Exception as exc:
                errors.append(str(exc)[:200])
                if len(errors) > 20:
                    return
                continue
            samples[k].append((time.perf_counter() - began) * 1000)

    def warm(k: int) -> None:  # every connection, and every server worker, once or twice
        for _ in range(warmup):
            with lock:
                i = next(counter)
            try:
                operation(conns[k], i)
            except Exception:  # a failed warm-up request is measured next anyway
                pass

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(warm, range(clients)))
    cpu_before, db_before = tree_usage(adapter.root_pid)[0], database_cpu()
    start = time.perf_counter()
    deadline[0] = start + seconds
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    elapsed = time.perf_counter() - start
    cpu_after, db_after = tree_usage(adapter.root_pid)[0], database_cpu()
    for conn in conns:
        conn.close()
    flat = [s for per in samples for s in per]
    if not flat:
        raise RuntimeError(f"{adapter.name}: every request failed: {errors[:3]}")
    return {"requests": len(flat), "errors": len(errors), "first_error": errors[:1],
            "rps": len(flat) / elapsed, "p50_ms": statistics.median(flat),
            "p99_ms": percentile(flat, 0.99),
            "cpu_ms": (cpu_after - cpu_before) * 1000 / len(flat),
            "db_cpu_ms": (db_after - db_before) * 1000 / len(flat)}


def seed(adapter: Adapter, start: int, stop: int, clients: int = 16) -> float:
    """Create models ``start``..``stop - 1`` (names of bench/search.py) through the API."""
    conns = [Conn(adapter.port) for _ in range(clients)]
    began = time.perf_counter()

    path = ("/api/2.0/mlflow/registered-models/create" if isinstance(adapter, Mlflow)
            else "/api/v1/models")

    def work(k: int) -> None:
        for i in range(start + k, stop, clients):
            for attempt in range(20):  # SQLite "database is locked" (503) under concurrency
                try:
                    conns[k].call("POST", path, {"name": model_name(i)}, expect=(200, 201))
                    break
                except RuntimeError as exc:
                    if " 503 " not in str(exc) or attempt == 19:
                        raise
                    time.sleep(0.05 * (attempt + 1))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    for conn in conns:
        conn.close()
    return time.perf_counter() - began


# ---------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = int(line.split()[1]) * 1024
    import importlib.metadata as md

    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory / GiB, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "modelreg": md.version("modelreg"), "waitress": md.version("waitress"),
            "gunicorn": md.version("gunicorn"), "sqlalchemy": md.version("sqlalchemy"),
            "mlflow": mlflow_version() if (VENV / "bin" / "mlflow").exists() else "-"}


def modelreg_settings(work: Path, name: str, url: str) -> dict[str, str]:
    return {
        "sqlalchemy.url": url,
        "sqlalchemy.pool_size": "10",
        "sqlalchemy.max_overflow": "4",
        "modelreg.storage": "local",
        "modelreg.storage.local.path": str(work / (name + "-blobs")),
        "modelreg.auth.anonymous": "write",
        "modelreg.auth.allow_anonymous_write": "true",
        "modelreg.upload.max_put_size": str(256 * MiB),
        "modelreg.metrics.enabled": "false",
        # As production.ini runs it: a worker thread in each app process.
        "modelreg.worker.embedded": "true" if EMBEDDED_WORKER[0] else "false",
        # MLflow neither scans files nor sends webhooks: switch those plugins off.
        "modelreg.plugins.disabled": "scan webhooks",
        "pyramid.reload_templates": "false",
    }


# ------------------------------------------------------------------- issue 18: wrk


#: ``wrk``, the C load generator of the request-rate rows (Debian's package ``wrk``).
WRK = "wrk"
#: Models ``w-0`` … ``w-<MANY - 1>`` (each with a version 1) that the "many models" writes
#: spread over.
MANY = 64

_LUA = r"""-- Generated by bench/compare.py: cycles through the requests of SPECS; in a path or
-- body, {n} becomes a number unique to the request, {m} that number modulo MODELS and {k}
-- it modulo 50.  Requests without a placeholder are formatted once.
local specs = __SPECS__
local MODELS = __MODELS__
local counter = 0
local static = {}
local nthreads = 0
thread_id = 0

function setup(thread)
  thread:set("thread_id", nthreads)
  nthreads = nthreads + 1
end

local function headers_for(spec)
  local h = {}
  for key, value in pairs(wrk.headers) do h[key] = value end
  h["Accept"] = "application/json"
  if spec.body then h["Content-Type"] = "application/json" end
  return h
end

local function fill(text, n)
  return (text:gsub("{n}", n):gsub("{m}", n % MODELS):gsub("{k}", n % 50))
end

local function dynamic(text)
  return text and (text:find("{n}", 1, true) or text:find("{m}", 1, true)
                   or text:find("{k}", 1, true))
end

function init(args)
  for i, spec in ipairs(specs) do
    if not (dynamic(spec.path) or dynamic(spec.body)) then
      static[i] = wrk.format(spec.method, spec.path, headers_for(spec), spec.body)
    end
  end
end

function request()
  counter = counter + 1
  local i = (counter % #specs) + 1
  if static[i] then return static[i] end
  local spec = specs[i]
  local n = thread_id * 100000000 + counter
  local body = nil
  if spec.body then body = fill(spec.body, n) end
  return wrk.format(spec.method, fill(spec.path, n), headers_for(spec), body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, '
    .. '"p99_us": %d, "mean_us": %.1f}\n', summary.requests, summary.duration, e.connect,
    e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    latency.mean))
end
"""


def _lua_string(text: str) -> str:
    if "]==]" in text:
        raise ValueError(f"cannot quote {text!r}")
    return f"[==[{text}]==]"


def wrk_script(specs: list[dict[str, Any]], models: int = MANY) -> str:
    """The Lua script that makes ``wrk`` send ``specs`` in turn (see :meth:`Adapter.specs`)."""
    entries = []
    for spec in specs:
        body = "nil" if spec["body"] is None else _lua_string(spec["body"])
        entries.append(f"  {{method = {_lua_string(spec['method'])}, "
                       f"path = {_lua_string(spec['path'])}, body = {body}}},")
    table = "{\n" + "\n".join(entries) + "\n}"
    return _LUA.replace("__SPECS__", table, 1).replace("__MODELS__", str(models), 1)


def run_wrk(target: Any, specs: list[dict[str, Any]], connections: int, seconds: int,
            keep_alive: bool = True, workdir: Path | None = None) -> dict[str, Any]:
    """``wrk`` with ``connections`` connections for ``seconds`` against ``target`` (a port
    and a root pid): requests/s of the answers below 400, p50/p99 ms, server CPU ms per
    request.  ``keep_alive=False`` sends ``Connection: close``: a new connection per
    request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=workdir, delete=False) as script:
        script.write(wrk_script(specs))
    command = [WRK, "-t", str(min(2, connections)), "-c", str(connections),
               "-d", f"{seconds}s", "--timeout", "30s", "-s", script.name]
    if not keep_alive:
        command += ["-H", "Connection: close"]
    command.append(f"http://127.0.0.1:{target.port}/")
    try:
        cpu_before, db_before = tree_usage(target.root_pid)[0], database_cpu()
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        cpu_after, db_after = tree_usage(target.root_pid)[0], database_cpu()
    finally:
        os.unlink(script.name)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} "
                           f"{done.stderr[-800:]}")
    raw = json.loads(line[len("WRK_JSON "):])
    ok = raw["requests"] - raw["status"]
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {"requests": ok, "errors": errors, "first_error": [
                f"{k} {raw[k]}" for k in ("connect", "read", "write", "status", "timeout")
                if raw[k]][:1],
            "rps": ok / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "cpu_ms": (cpu_after - cpu_before) * 1000 / max(1, ok),
            "db_cpu_ms": (db_after - db_before) * 1000 / max(1, ok), "wrk": raw}


class HelloServer(LiveServer):
    """The ceiling: ``bench/hello.py``'s hello-world app under the same ``pserve`` runner,
    threads and Waitress settings as modelreg (:class:`LiveServer`'s ini, another app).

    Without read turns (``reads_at_once = 0``): a turn is modelreg's app's choice, given up
    at once by every ``GET`` that is not to a read-only view, and the hello-world app, which
    never gives it up, would serialize its ``GET``s behind one lock for their whole task
    (served 3,600-4,000 req/s at 0.27-0.30 ms of CPU against 6,700 at 0.16 ms without,
    2026-12-06): the ceiling of a ``GET`` row would measure that lock, not Waitress."""

    name = "ceiling (hello world, Waitress)"

    def __init__(self) -> None:
        super().__init__({"sqlalchemy.url": "unused"}, threads=MODELREG_THREADS,
                         server_settings={**SERVER_SETTINGS, "reads_at_once": "0"},
                         startup_timeout=60, environ={"PYTHONPATH": str(HERE)})

    def ini_text(self) -> str:
        text = super().ini_text()
        app = text[:text.index("[server:main]")]
        return text.replace(app, "[app:main]\nuse = call:hello:make_app\n\n", 1)

    @property
    def root_pid(self) -> int:
        assert self.process is not None
        return self.process.pid


#: Python-client operations of the issue-18 rows (the same requests as :meth:`Adapter.specs`).
OPERATIONS: dict[str, Callable[[Adapter, dict[str, Any]], Callable[[Conn, int], Any]]] = {
    "get version": lambda a, fx: lambda c, i: a.get_version(
        c, "bench", fx["v1" if i % 2 else "v2"]),
    "resolve alias": lambda a, fx: lambda c, i: a.resolve_alias(c, "bench", "champion"),
    "create version": lambda a, fx: lambda c, i: a.create_version(c, "bench-versions"),
    "create version, many models": lambda a, fx: lambda c, i: a.create_version(
        c, f"w-{i % MANY}"),
    "set tag": lambda a, fx: lambda c, i: a.set_tag(c, "bench", fx["v1"], f"k{i % 50}",
                                                    f"value-{i}"),
    "set tag, many models": lambda a, fx: lambda c, i: a.set_tag(
        c, f"w-{i % MANY}", 1, f"k{i % 50}", f"value-{i}"),
}
CEILING = HelloServer.name
#: The systems compared by default, and by ``--issue18``: ``modelreg-cpus`` is the same
#: ``pserve`` with ``cpus = 0`` (Waitress's threads on one CPU, see modelreg.servers).
SYSTEMS = "mlflow,modelreg,modelreg-gunicorn"
ISSUE18_SYSTEMS = "mlflow,modelreg,modelreg-cpus,modelreg-gunicorn"
#: The names of the modelreg systems in the tables.
PSERVE, PINNED, X4 = ("modelreg (pserve)", "modelreg (pserve, cpus = 0)",
                      "modelreg (gunicorn x4)")
MODES = {True: "keep-alive", False: "new connection"}
DRIVERS = {"wrk": "wrk", "python": "Python"}


def _replay(specs: list[dict[str, Any]]) -> Callable[[Conn, int], Any]:
    """The requests of ``specs`` for :func:`measure`, as wrk sends them (``{n}``, ``{m}``,
    ``{k}`` filled from the request's number)."""

    def fill(text: str, i: int) -> str:
        return text.replace("{n}", str(i)).replace("{m}", str(i % MANY)).replace(
            "{k}", str(i % 50))

    def operation(c: Conn, i: int) -> Any:
        spec = specs[i % len(specs)]
        body = spec["body"]
        return c.call(spec["method"], fill(spec["path"], i),
                      None if body is None else json.loads(fill(body, i)))

    return operation


def issue18_fixtures(adapter: Adapter) -> dict[str, Any]:
    """``bench`` with two ready versions and ``champion`` on the first, ``bench-versions``
    and ``w-0`` … ``w-<MANY - 1>`` with a version 1 each."""
    c = Conn(adapter.port)
    adapter.create_model(c, "bench")
    v1, v2 = adapter.ready_version(c, "bench"), adapter.ready_version(c, "bench")
    adapter.set_alias(c, "bench", "champion", v1)
    adapter.create_model(c, "bench-versions")
    c.close()

    def many(k: int) -> None:
        conn = Conn(adapter.port)
        for i in range(k, MANY, 8):
            adapter.create_model(conn, f"w-{i}")
            adapter.create_version(conn, f"w-{i}")
        conn.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(many, range(8)))
    return {"v1": v1, "v2": v2}


def issue18_requests(phase: str, adapters: list[Adapter], hello: HelloServer,
                     fixtures: dict[str, dict[str, Any]], operations: list[str],
                     clients: list[int], seconds: float, rows: list[dict[str, Any]],
                     work: Path, drivers: tuple[str, ...] = ("wrk", "python")) -> None:
    """Each operation at each number of clients, by each driver: the ceiling, MLflow over
    keep-alive and over a new connection per request, modelreg over keep-alive; appended
    to ``rows``."""
    for operation in operations:
        for count in clients:
            for driver in drivers:
                runs: list[tuple[Any, bool]] = [(hello, True)]
                for adapter in adapters:
                    runs.append((adapter, True))
                    if isinstance(adapter, Mlflow):
                        runs.append((adapter, False))
                for target, keep_alive in runs:
                    if target is hello:
                        model = next(a for a in adapters if isinstance(a, Modelreg))
                        specs = model.specs(operation, fixtures[model.name])
                    else:
                        specs = target.specs(operation, fixtures[target.name])
                    try:
                        if driver == "wrk":
                            result = run_wrk(target, specs, count, max(1, round(seconds)),
                                             keep_alive, work)
                        elif target is hello:
                            result = measure(target, _replay(specs), count, seconds, 10**9)
                        else:
                            result = measure(target, OPERATIONS[operation](
                                target, fixtures[target.name]), count, seconds, 10**9,
                                keep_alive=keep_alive)
                    except RuntimeError as exc:  # every request failed: say so, go on
                        result = {"requests": 0, "errors": 1, "first_error": [str(exc)[:200]],
                                  "rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "cpu_ms": 0.0}
                    rows.append({"phase": phase, "operation": operation, "clients": count,
                                 "driver": driver, "system": target.name,
                                 "mode": MODES[keep_alive], **result})
                    print(f"[{phase}] {operation:28} {count:>2} {driver:6} {target.name:32} "
                          f"{MODES[keep_alive]:14} {result['rps']:8.1f} req/s "
                          f"p50 {result['p50_ms']:6.1f} p99 {result['p99_ms']:6.1f} ms "
                          f"cpu {result['cpu_ms']:6.2f} ms"
                          + (f" ERRORS {result['errors']}: {result['first_error']}"
                             if result["errors"] else ""), flush=True)


def disk_ceiling(work: Path, size: int) -> dict[str, Any]:
    """This machine's fsync'd disk write of ``size`` bytes where the blobs go: a Python
    loop of 1 MiB ``write`` calls and one ``fsync`` (what a server that keeps its promise
    must at least do: the ceiling of the table's upload target), and ``dd … oflag=direct
    conv=fdatasync`` (the disk without the page cache, shown beside it); MiB/s of each."""
    result: dict[str, Any] = {}
    path = work / "disk-ceiling.bin"
    block = os.urandom(BLOCK)
    began = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // BLOCK):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    result["write_fsync_mib_s"] = size / MiB / (time.perf_counter() - began)
    path.unlink()
    dd = shutil.which("dd")
    if dd:
        began = time.perf_counter()
        done = subprocess.run([dd, "if=/dev/zero", f"of={path}", "bs=1M",
                               f"count={size // MiB}", "oflag=direct", "conv=fdatasync"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            result["dd_direct_mib_s"] = size / MiB / (time.perf_counter() - began)
        else:
            result["dd_error"] = done.stderr.strip()[-200:]
        path.unlink(missing_ok=True)
    return result


def put_file(port: int, path: str, source: Path) -> None:
    """One ``PUT`` of ``source``, streamed from disk in 1 MiB blocks (MLflow's upload)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=BLOCK)
    try:
        with open(source, "rb") as body:
            conn.request("PUT", path, body=body, headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(source.stat().st_size)})
            response = conn.getresponse()
            data = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"PUT {path}: {response.status} {data[:300]!r}")
    finally:
        conn.close()


def _transfer_round(adapter: Adapter, work: Path, source_dir: Path, source: Path, size: int,
                    sha256: str, round_: int, peaks: dict[str, RssPeak]) -> dict[str, Any]:
    """One upload of ``source`` through ``adapter`` and its verified download."""
    peaks[adapter.name].reset()
    cpu0 = tree_usage(adapter.root_pid)[0]
    row: dict[str, Any] = {"round": round_}
    client_cpu = time.process_time()  # this process: the client (the harness waits)
    began = time.perf_counter()
    if isinstance(adapter, Mlflow):
        location = f"/api/2.0/mlflow-artifacts/artifacts/bench/{round_}/model.bin"
        put_file(adapter.port, location, source)
    else:
        from client import Phases

        from modelreg_client import Client

        phases = Phases()
        with Client(adapter.server.url, state_dir=work / f"state-{adapter.port}",
                          cache_dir=work / f"cache-{adapter.port}") as client:
            pushed = client.push(source_dir, f"upload-{round_}", progress=phases)
        location = (f"/api/v1/models/upload-{round_}/versions/{pushed.version.number}"
                    "/files/model.bin")
        row["upload_phase_mib_s"] = size / MiB / phases.seconds["upload"]
        row["hash_s"] = phases.seconds.get("hash")
    up = time.perf_counter() - began
    client_cpu = time.process_time() - client_cpu
    cpu1 = tree_usage(adapter.root_pid)[0]
    row.update(upload_mib_s=size / MiB / up, upload_s=up, upload_cpu_s=cpu1 - cpu0,
               upload_client_cpu_s=client_cpu,
               upload_peak_rss_mib=peaks[adapter.name].peak / MiB)
    peaks[adapter.name].reset()
    began = time.perf_counter()
    total, digest = get_sha256(adapter.port, location)
    down = time.perf_counter() - began
    if total != size or digest != sha256:
        raise RuntimeError(f"{adapter.name}: the download does not match the upload")
    row.update(download_mib_s=size / MiB / down, download_s=down,
               download_cpu_s=tree_usage(adapter.root_pid)[0] - cpu1,
               download_peak_rss_mib=peaks[adapter.name].peak / MiB, location=location)
    return row


def issue18_transfers(adapters: list[Adapter], work: Path, size: int, pull_files: int,
                      pull_repeat: int, peaks: dict[str, RssPeak],
                      rounds: int = 3) -> dict[str, Any]:
    """Upload of ``size`` bytes through each system (modelreg: ``Client.push``, the real
    client, parallel numbered parts above the single-PUT limit; MLflow: one ``PUT``), its
    verified download, the fsync'd disk write of the same size, and a verified pull of a
    ``pull_files``-file model against the ceiling of ``bench/client.py``.

    Uploads and downloads run ``rounds`` times, the systems in turn within each round
    (fresh content each round: a push of bytes already held would send nothing); each
    system's row is its median round by upload rate, all rounds kept in the JSON."""
    from client import Cpu, raw_get, sha256_cost, write_model

    from modelreg_client import Client

    result: dict[str, Any] = {"size": size, "systems": {}, "rounds": {}}
    source_dir = work / "upload-source"
    source_dir.mkdir()
    source = source_dir / "model.bin"
    content = Content(size)
    with open(source, "wb") as out:
        for piece in content.chunks(0, size):
            out.write(piece)
    result["disk"] = disk_ceiling(work, size)
    print(f"disk: {json.dumps(result['disk'])}", flush=True)
    for round_ in range(1, rounds + 1):
        # A fresh first block each round: new bytes for every system.
        head = os.urandom(4096)
        with open(source, "r+b") as out:
            out.write(head)
        digest = hashlib.sha256(head)
        for piece in content.chunks(4096, size):
            digest.update(piece)
        for adapter in adapters:
            row = _transfer_round(adapter, work, source_dir, source, size, digest.hexdigest(),
                                  round_, peaks)
            result["rounds"].setdefault(adapter.name, []).append(row)
            print(f"{adapter.name:32} round {round_}: upload {row['upload_mib_s']:7.1f} MiB/s"
                  + (f" (upload phase {row['upload_phase_mib_s']:.1f})"
                     if "upload_phase_mib_s" in row else "")
                  + f", verified download {row['download_mib_s']:7.1f} MiB/s", flush=True)
    for name, rows in result["rounds"].items():
        result["systems"][name] = sorted(rows, key=lambda r: r["upload_mib_s"])[len(rows) // 2]

    # The pull, on one Waitress process, as bench/client.py measures it.
    ours = next(a for a in adapters if a.name == PSERVE)
    model_dir = work / "pull-model"
    write_model(model_dir, size, pull_files)
    cpu = Cpu(ours.root_pid)
    pulls: list[float] = []
    pull_cpu = Cpu(ours.root_pid)
    with Client(ours.server.url, state_dir=work / "state-pull",
                cache_dir=work / "cache-pull") as client:
        client.push(model_dir, "pull")
        raw_path = result["systems"][ours.name]["location"]
        for attempt in range(pull_repeat):
            cpu.measure(size, lambda: raw_get(ours.port, raw_path, work / "raw-get.bin"))
            target = work / f"pulled-{attempt}"
            began = time.perf_counter()
            pulled = pull_cpu.measure(size, lambda target=target: client.pull(
                "pull/1", target, cache=False))
            pulls.append(time.perf_counter() - began)
            if pulled.downloaded_bytes != size:
                raise RuntimeError(f"the pull received {pulled.downloaded_bytes} bytes")
            shutil.rmtree(target)
    sha256_ms = sha256_cost()
    result["sha256_ms_per_mib"] = sha256_ms
    raw_client_ms, raw_server_ms = cpu.least()
    cores = os.cpu_count() or 1
    ceiling = cores * 1000 / (raw_client_ms + sha256_ms + raw_server_ms)
    best = size / MiB / min(pulls)
    result["pull"] = {"files": pull_files, "mib_s": best,
                      "every_mib_s": [size / MiB / s for s in pulls],
                      "ceiling_mib_s": ceiling, "cores": cores,
                      "raw_get_client_ms_per_mib": raw_client_ms,
                      "raw_get_server_ms_per_mib": raw_server_ms,
                      "sha256_ms_per_mib": sha256_ms,
                      "raw_get_mib_s": [size / MiB * 1000 / (u + s) if u + s else 0
                                        for u, s, _ in cpu.samples]}
    print(f"verified pull of {pull_files} files: {best:.1f} MiB/s; ceiling {ceiling:.1f} MiB/s "
          f"= {cores} x 1000 / ({raw_client_ms:.2f} + {sha256_ms:.2f} + {raw_server_ms:.2f})",
          flush=True)
    shutil.rmtree(model_dir)
    shutil.rmtree(source_dir)
    return result


def issue18(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The table of issue 18: every target beside its figures and its ceiling, one run."""
    if shutil.which(WRK) is None and not args.render:
        print("wrk not found: the request-rate rows are driven by wrk, a C load generator: "
              "apt-get install wrk", file=sys.stderr)
        return 2
    if args.render:
        print(issue18_markdown(json.loads(args.render.read_text())))
        return 0
    seconds = args.seconds
    phases = [x for x in ("sqlite", "postgresql") if x in args.phases.split(",")]
    drivers = tuple(x for x in ("wrk", "python") if x in args.drivers.split(","))
    ensure_mlflow("postgresql" if "postgresql" in phases else "sqlite")
    info = machine()
    print(json.dumps(info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="modelreg-issue18-", dir=args.workdir))
    systems = (args.systems or ISSUE18_SYSTEMS).split(",")
    rows: list[dict[str, Any]] = []
    memory: dict[str, dict[str, float]] = {}
    transfers: dict[str, Any] = {}
    partial = ""
    try:
        for phase in phases:
            servers: list[Any] = []
            databases: list[TestDatabase] = []
            peaks: dict[str, RssPeak] = {}
            try:
                hello = HelloServer()
                servers.append(hello)
                hello.start()
                adapters = [start_system(system, work, phase, databases, servers, args.chunk)
                            for system in systems]
                if phase == "sqlite":
                    for adapter in adapters:
                        usage = tree_usage(adapter.root_pid)
                        memory[adapter.name] = {"idle_rss_mib": usage[1] / MiB,
                                                "processes": usage[2]}
                for adapter in adapters:
                    peaks[adapter.name] = RssPeak(adapter.root_pid)
                fixtures = {a.name: issue18_fixtures(a) for a in adapters}
                if phase == "sqlite":
                    issue18_requests(phase, adapters, hello, fixtures,
                                     ["get version", "resolve alias"], [16], seconds, rows,
                                     work, drivers)
                    issue18_requests(phase, adapters, hello, fixtures,
                                     ["create version", "set tag"], [1, 16], seconds, rows,
                                     work, drivers)
                    transfers.update(issue18_transfers(
                        adapters, work, args.upload_size, args.pull_files,
                        args.pull_repeat, peaks, args.upload_rounds))
                    for adapter in adapters:
                        usage = tree_usage(adapter.root_pid)
                        memory[adapter.name].update(final_rss_mib=usage[1] / MiB,
                                                    peak_rss_mib=peaks[adapter.name].peak / MiB,
                                                    processes=usage[2])
                else:
                    issue18_requests(phase, adapters, hello, fixtures,
                                     ["create version", "create version, many models",
                                      "set tag", "set tag, many models"], [16], seconds,
                                     rows, work, drivers)
            finally:
                for peak in peaks.values():
                    peak.stop()
                for server in servers:
                    server.stop()
                for database in databases:
                    database.drop()
    except (KeyboardInterrupt, Exception) as exc:  # keep what was measured
        if not rows:
            raise
        partial = f"{type(exc).__name__}: {exc}"[:300]
        print(f"stopped early ({partial}); writing what was measured", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "command": " ".join(["bench/compare.py", *(argv if argv is not None
                                                        else sys.argv[1:])]),
              "machine": info, "settings": {"seconds": seconds, "phases": phases,
                                            "upload_size": args.upload_size,
                                            "pull_files": args.pull_files,
                                            "workers": MLFLOW_WORKERS,
                                            "embedded_worker": args.embedded_worker,
                                            "threads": MODELREG_THREADS},
              "rows": rows, "transfers": transfers, "memory": memory, "partial": partial}
    text = issue18_markdown(report)
    print()
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stem = f"issue18-{dt.date.today().isoformat()}"
        (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(text)
        print(f"written: bench/results/{stem}.md and .json")
    return 0


def _x(value: float) -> str:
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def _hash_floor(transfers: dict[str, Any]) -> str:
    """The CPU ceiling of a verified push on this machine: sha256 measured in the same run,
    times the passes a push makes on both ends (the client's digest of the file, the client's
    digest of each part, the server's check of each part, the server's running digest of the
    file), over the machine's cores.  MLflow's PUT hashes nothing."""
    sha256_ms = transfers.get("sha256_ms_per_mib")
    if not sha256_ms:
        return ""
    cores = os.cpu_count() or 1
    return (f"; sha256 {1000 / sha256_ms:.0f} MiB/s per core: a verified push makes 4 passes, "
            f"at most {cores * 1000 / (4 * sha256_ms):.0f} MiB/s on {cores} cores before any "
            f"I/O")


def _cpu_floor(ours: dict[str, Any], theirs: dict[str, Any], size: int) -> str:
    """The CPU each upload took per GiB, client and server (measured in the same round),
    and the rate the machine's cores allow at modelreg's: the upload's CPU ceiling."""
    if "upload_client_cpu_s" not in ours or "upload_client_cpu_s" not in theirs:
        return ""
    gib = size / GiB
    a, b = ours["upload_client_cpu_s"] / gib, ours["upload_cpu_s"] / gib
    c, d = theirs["upload_client_cpu_s"] / gib, theirs["upload_cpu_s"] / gib
    cores = os.cpu_count() or 1
    return (f"; CPU per GiB, client + server: modelreg {a:.2f} + {b:.2f} s, MLflow {c:.2f} + "
            f"{d:.2f} s; {cores} cores at modelreg's allow at most {cores * 1024 / (a + b):.0f} "
            f"MiB/s, 1.5x MLflow is {1.5 * theirs['upload_mib_s']:.0f}")


def issue18_markdown(report: dict[str, Any]) -> str:
    """The issue's table (operation | modelreg | MLflow, best mode | ratio | target | met? |
    ceiling), then every measurement."""
    m = report["machine"]
    pserve, x4 = PSERVE, X4
    lines = [f"# Issue 18: modelreg vs MLflow, with ceilings — {report['date']}", "",
             f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
             f"Python {m['python']}; modelreg {m['modelreg']} (waitress {m['waitress']}, "
             f"gunicorn {m['gunicorn']}, SQLAlchemy {m['sqlalchemy']}); {m['mlflow']}. "
             "Loopback, local storage; reads and the transfers on SQLite (a file each), the "
             "writes at 16 clients also on PostgreSQL (a database each, one server). modelreg "
             "runs the settings of `production.ini` (embedded worker "
             f"{report['settings'].get('embedded_worker', 'on')}; `scan` and `webhooks` off, "
             "as MLflow has neither).", "",
             f"Command: `.venv/bin/python {report['command']}` "
             f"({report['settings']['seconds']:g} s per measurement)", "",
             *([f"**Partial run**, stopped early: {report['partial']}", ""]
               if report.get("partial") else []),
             "modelreg = one `pserve` (Waitress, 8 threads), as `production.ini` ships it; "
             "one CPU = the same with `cpus = 0` (its Waitress threads kept on CPU 0, "
             "uploads on both; a setting of `production.ini`, off there), the ratio after "
             "`/`, and a one-process target counts as met by either; x4 = the same app under "
             "`gunicorn --paste`, 4 workers (MLflow's process count: `mlflow server "
             "--serve-artifacts --workers 4`). MLflow is driven over keep-alive and over a new "
             "connection per request; the ratio is against its faster mode, named in its "
             "cell. wrk = the C load generator (Lua scripts generated by the bench); Python "
             "= the bench's threads (`http.client`), which take CPU from the servers. The "
             "ceiling of a request row is a hello-world WSGI app on the same Waitress "
             "settings under the same load (the same requests by the same driver).", "",
             "| operation | modelreg | one CPU | x4 | MLflow, best mode | ratio / one CPU "
             "(x4) | target | met? | ceiling |", "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, int, str], dict[tuple[str, str], dict[str, Any]]] = {}
    for row in report["rows"]:
        key = (row["phase"], row["operation"], row["clients"], row["driver"])
        groups.setdefault(key, {})[(row["system"], row["mode"])] = row
    cpu_rows: list[str] = []
    for (phase, operation, clients, driver), by in groups.items():
        ours, four = by.get((pserve, "keep-alive")), by.get((x4, "keep-alive"))
        one = by.get((PINNED, "keep-alive"))
        modes = [r for (s, _), r in by.items() if s == "MLflow" and r["rps"]]
        best = max(modes, key=lambda r: r["rps"]) if modes else None
        ceiling = by.get((CEILING, "keep-alive"))
        read = operation in ("get version", "resolve alias")
        ratio = ours["rps"] / best["rps"] if ours and best else None
        ratio4 = four["rps"] / best["rps"] if four and best else None
        ratio1 = one["rps"] / best["rps"] if one and best else None
        either = None if ratio is None else max(ratio, ratio1 or 0)
        if read and clients == 16:
            target, met = "≥ 3x (x4 ≥ 4x)", (None if either is None else
                                            either >= 3 and (ratio4 is None or ratio4 >= 4))
        elif phase == "postgresql" and clients == 16:
            target, met = "≥ 3x", None if either is None else either >= 3
        else:
            target, met = "—", None
        label = (f"{operation}, {clients} conn"
                 + (", PostgreSQL" if phase == "postgresql" else "")
                 + f" ({DRIVERS[driver]})")
        others = ", ".join(f"{r['mode']} {r['rps']:.0f}" for r in modes if r is not best)
        mlflow_cell = (f"{best['rps']:.0f} ({best['mode']}"
                       + (f"; {others}" if others else "") + ")" if best else "-")
        errors = ", ".join(f"{s} {r['mode']}: {r['errors']}" for (s, _), r in by.items()
                           if r["errors"])
        ceiling_cell = "-"
        if ceiling and ceiling["rps"] and ours:
            ceiling_cell = (f"hello {ceiling['rps']:.0f} req/s; modelreg at "
                            f"{100 * ours['rps'] / ceiling['rps']:.0f} %")
        lines.append(
            f"| {label} | {ours['rps']:.0f} req/s" if ours else f"| {label} | -")
        lines[-1] += (f" | {one['rps']:.0f}" if one else " | -") + (
            f" | {four['rps']:.0f}" if four else " | -") + f" | {mlflow_cell} | " + (
            f"{_x(ratio)} / {_x(ratio1) if ratio1 else '-'} ({_x(ratio4) if ratio4 else '-'})"
            if ratio else "-") + (
            f" | {target} | {_met(met)} | {ceiling_cell}"
            + (f" (errors: {errors})" if errors else "") + " |")
        if read and driver == "wrk" and ours and best:
            least = min((r for r in by.values() if r["system"] == "MLflow" and r["cpu_ms"]),
                        key=lambda r: r["cpu_ms"])
            less = least["cpu_ms"] / ours["cpu_ms"] if ours["cpu_ms"] else None
            less4 = least["cpu_ms"] / four["cpu_ms"] if four and four["cpu_ms"] else None
            less1 = least["cpu_ms"] / one["cpu_ms"] if one and one["cpu_ms"] else None
            cpu_rows.append(
                f"| server CPU per read: {operation} (wrk) | {ours['cpu_ms']:.2f} ms | "
                + (f"{one['cpu_ms']:.2f} ms" if one else "-") + " | "
                + (f"{four['cpu_ms']:.2f} ms" if four else "-")
                + f" | {least['cpu_ms']:.2f} ms ({least['mode']}, its least) | "
                + (f"{_x(less)} / {_x(less1) if less1 else '-'} less "
                   f"({_x(less4) if less4 else '-'})" if less else "-")
                + f" | ≤ 1/6 | {_met(None if less is None else max(less, less1 or 0) >= 6)} | "
                + (f"hello {ceiling['cpu_ms']:.2f} ms" if ceiling else "-") + " |")
        if phase == "postgresql" and driver == "wrk" and ours and best:
            cpu_rows.append(_write_cpu_row(operation, ours, one, four, by, best, m["cpus"]))
    lines += cpu_rows
    transfers = report.get("transfers") or {}
    by_system = transfers.get("systems", {})
    if by_system:
        size = transfers["size"]
        label = f"{size / GiB:.0f} GiB" if size >= GiB else f"{size / MiB:.0f} MiB"
        disk = transfers["disk"]
        ours, four, theirs = (by_system.get(pserve), by_system.get(x4),
                              by_system.get("MLflow"))
        one = by_system.get(PINNED)
        if ours and theirs:
            ratio = ours["upload_mib_s"] / theirs["upload_mib_s"]
            ratio4 = four["upload_mib_s"] / theirs["upload_mib_s"] if four else None
            share = ours["upload_mib_s"] / disk["write_fsync_mib_s"]
            dd = (f"; `dd oflag=direct conv=fdatasync` {disk['dd_direct_mib_s']:.0f} MiB/s, "
                  f"modelreg at {100 * ours['upload_mib_s'] / disk['dd_direct_mib_s']:.0f} %"
                  if "dd_direct_mib_s" in disk else "")
            lines.append(
                f"| {label} upload (modelreg: `Client.push`, whole call; MLflow: one PUT) | "
                f"{ours['upload_mib_s']:.0f} MiB/s (upload phase "
                f"{ours['upload_phase_mib_s']:.0f}) | "
                + (f"{one['upload_mib_s']:.0f}" if one else "-") + " | "
                + (f"{four['upload_mib_s']:.0f}" if four else "-")
                + f" | {theirs['upload_mib_s']:.0f} | {_x(ratio)} "
                f"({_x(ratio4) if ratio4 else '-'}) | ≥ 1.5x (goal 2x), ≥ 60 % of disk | "
                f"{_met(ratio >= 1.5 and share >= 0.6)} | disk, 1 MiB writes + fsync: "
                f"{disk['write_fsync_mib_s']:.0f} MiB/s, modelreg at {100 * share:.0f} %{dd}"
                f"{_hash_floor(transfers)}{_cpu_floor(ours, theirs, size)} |")
            lines.append(
                f"| {label} download, sha256 verified | {ours['download_mib_s']:.0f} MiB/s | "
                + (f"{one['download_mib_s']:.0f}" if one else "-") + " | "
                + (f"{four['download_mib_s']:.0f}" if four else "-")
                + f" | {theirs['download_mib_s']:.0f} | "
                f"{_x(ours['download_mib_s'] / theirs['download_mib_s'])} | — | — | - |")
        pull = transfers.get("pull")
        if pull:
            share = pull["mib_s"] / pull["ceiling_mib_s"]
            lines.append(
                f"| verified pull, {label} in {pull['files']} files (`Client.pull`) | "
                f"{pull['mib_s']:.0f} MiB/s | - | - | - | - | ≥ 70 % of ceiling | "
                f"{_met(share >= 0.7)} | {pull['ceiling_mib_s']:.0f} MiB/s = {pull['cores']} x "
                f"1000 / ({pull['raw_get_client_ms_per_mib']:.2f} + "
                f"{pull['sha256_ms_per_mib']:.2f} + {pull['raw_get_server_ms_per_mib']:.2f} ms "
                f"per MiB: raw GET client + sha256 + raw GET server); pull at "
                f"{100 * share:.0f} % |")
    memory = report.get("memory") or {}
    if pserve in memory and "MLflow" in memory:
        ours, theirs = memory[pserve], memory["MLflow"]
        four, one = memory.get(x4), memory.get(PINNED)
        lines.append(
            f"| memory (RSS of all processes, idle / peak) | {ours['idle_rss_mib']:.0f} / "
            f"{ours.get('peak_rss_mib', 0):.0f} MiB | "
            + (f"{one['idle_rss_mib']:.0f} / {one.get('peak_rss_mib', 0):.0f}" if one
               else "-") + " | "
            + (f"{four['idle_rss_mib']:.0f} / {four.get('peak_rss_mib', 0):.0f}" if four
               else "-")
            + f" | {theirs['idle_rss_mib']:.0f} / {theirs.get('peak_rss_mib', 0):.0f} "
            f"({theirs['processes']} processes) | 1/"
            f"{theirs['idle_rss_mib'] / ours['idle_rss_mib']:.0f} | — | — | - |")

    lines += ["", "Every measurement: requests/s of the answers below 400, p50 / p99 ms, "
              "server CPU ms per request (`/proc/<pid>/stat` of the server's processes), "
              "PostgreSQL's CPU ms per request (its processes on this machine; on SQLite "
              "whatever else PostgreSQL did meanwhile), errors (wrk: "
              "connect/read/write/status/timeout; Python: failed requests).", "",
              "| database | operation | clients | driver | system | mode | req/s | p50 | p99 "
              "| CPU ms | PostgreSQL CPU ms | errors |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(
            f"| {row['phase']} | {row['operation']} | {row['clients']} | {row['driver']} | "
            f"{row['system']} | {row['mode']} | {row['rps']:.0f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['cpu_ms']:.2f} | "
            + (f"{row['db_cpu_ms']:.2f} | " if "db_cpu_ms" in row else "- | ")
            + (f"{row['errors']} ({'; '.join(row['first_error'])[:80]})" if row["errors"]
               else "0") + " |")
    return "\n".join(lines) + "\n"


def _write_cpu_row(operation: str, ours: dict[str, Any], one: dict[str, Any] | None,
                   four: dict[str, Any] | None, by: dict[tuple[str, str], dict[str, Any]],
                   best: dict[str, Any], cpus: int) -> str:
    """The CPU a write costs on PostgreSQL — the app's and the database server's, both on
    this machine's cores — and the rate those cores allow at that cost, beside the rate
    that 3x MLflow's best would need."""
    def total(row: dict[str, Any]) -> float:
        return row["cpu_ms"] + row.get("db_cpu_ms", 0.0)

    mlflow = [r for r in by.values() if r["system"] == "MLflow" and r["cpu_ms"]]
    least = min(mlflow, key=total) if mlflow else None
    def cell(row: dict[str, Any]) -> str:
        return f"{row['cpu_ms']:.2f} + {row.get('db_cpu_ms', 0.0):.2f} ms"

    allowed = cpus * 1000 / total(ours) if total(ours) else 0.0
    one_core = 1000 / ours["cpu_ms"] if ours["cpu_ms"] else 0.0
    return (f"| CPU per write (app + PostgreSQL): {operation} (wrk) | {cell(ours)} | "
            + (cell(one) if one else "-") + " | " + (cell(four) if four else "-")
            + (f" | {cell(least)} ({least['mode']}, its least) | "
               f"{_x(total(least) / total(ours))} less" if least and total(ours) else " | - | -")
            + f" | — | — | {cpus} cores at modelreg's app + PostgreSQL CPU per write allow "
            f"{allowed:.0f} writes/s, its app's {ours['cpu_ms']:.2f} ms on one core "
            f"{one_core:.0f}/s"
            + (f" (one CPU: {1000 / one['cpu_ms']:.0f}/s)" if one and one["cpu_ms"] else "")
            + f"; 3x MLflow's best needs {3 * best['rps']:.0f}/s |")


def start_system(system: str, work: Path, database_kind: str, databases: list[TestDatabase],
                 servers: list[Any], chunk: int = 64 * MiB) -> Adapter:
    """Start ``system`` (``mlflow``, ``modelreg``, ``modelreg-cpus`` or
    ``modelreg-gunicorn``) on a database of its own; the database and the server are
    appended to ``databases`` and ``servers`` (so that they are dropped and stopped in any
    case, also when the start fails)."""
    if system == "mlflow":
        store = None
        if database_kind == "postgresql":  # an empty database: MLflow migrates it
            mlflow_db = TestDatabase.create("postgresql", migrate=False)
            databases.append(mlflow_db)
            store = mlflow_db.url
        server = MlflowServer(work / f"mlflow-{database_kind}", backend_store=store)
        servers.append(server)
        server.start()
        return Mlflow(server)
    gunicorn = system == "modelreg-gunicorn"
    database = TestDatabase.create(database_kind)  # every migration run
    databases.append(database)
    settings = modelreg_settings(work, f"{system}-{database_kind}", database.url)
    pinned = system == "modelreg-cpus"
    live = LiveServer(settings, threads=GUNICORN_THREADS if gunicorn else MODELREG_THREADS,
                      server_settings={**SERVER_SETTINGS, **({"cpus": "0"} if pinned else {})},
                      server="gunicorn" if gunicorn else "waitress",
                      workers=MLFLOW_WORKERS if gunicorn else 1, startup_timeout=60)
    servers.append(live)
    live.start()
    return Modelreg(X4 if gunicorn else PINNED if pinned else PSERVE, live, chunk)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1000,10000",
                        help="search steps: total seeded models (1000,10000)")
    parser.add_argument("--clients", default="1,16", help="concurrent clients (1,16)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds per operation, system and concurrency (5)")
    parser.add_argument("--max-requests", type=int, default=5000,
                        help="at most this many requests per measurement (5000)")
    parser.add_argument("--sizes", default="100MiB,1GiB", help="transfer sizes (100MiB,1GiB)")
    parser.add_argument("--chunk", type=parse_size, default=64 * MiB,
                        help="modelreg upload-session chunk (64MiB)")
    parser.add_argument("--systems", default=None,
                        help=f"the systems compared ({SYSTEMS}; with --issue18 "
                             f"{ISSUE18_SYSTEMS})")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="every system's metadata store: a SQLite file each, or a "
                             "PostgreSQL database each on MODELREG_TEST_POSTGRESQL_URL's server")
    parser.add_argument("--workdir", default=None, help="where the temporary files go")
    parser.add_argument("--quick", action="store_true",
                        help="--models 300,1000 --seconds 2 --sizes 100MiB")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    parser.add_argument("--issue18", action="store_true",
                        help="the table of issue 18: MLflow in both client modes, wrk beside "
                             "the Python client, hello-world and disk ceilings, PostgreSQL "
                             "writes to one and to many models, push and pull with the "
                             "client; writes bench/results/issue18-<date>.md and .json")
    parser.add_argument("--embedded-worker", choices=("on", "off"), default="on",
                        help="modelreg's embedded worker thread (on, as production.ini "
                             "runs it)")
    parser.add_argument("--phases", default="sqlite,postgresql",
                        help="--issue18: sqlite (reads, writes, transfers, memory), "
                             "postgresql (writes at 16 clients), or both (the default)")
    parser.add_argument("--drivers", default="wrk,python",
                        help="--issue18: load generators of the request rows (wrk,python)")
    parser.add_argument("--render", type=Path, default=None,
                        help="--issue18: print the table of a saved issue18-<date>.json")
    parser.add_argument("--upload-size", type=parse_size, default=None,
                        help="--issue18: the upload, download and pull size (1GiB; 128MiB "
                             "with --quick)")
    parser.add_argument("--pull-files", type=int, default=8,
                        help="--issue18: files of the pulled model (8)")
    parser.add_argument("--pull-repeat", type=int, default=2,
                        help="--issue18: pulls, each after a raw GET; the best counts (2)")
    parser.add_argument("--upload-rounds", type=int, default=3,
                        help="--issue18: uploads through each system, in turn; the median "
                             "counts (3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.seconds, args.sizes = "300,1000", 2.0, "100MiB"
        args.upload_size = args.upload_size or 128 * MiB
    args.upload_size = args.upload_size or GiB
    EMBEDDED_WORKER[0] = args.embedded_worker == "on"
    if args.issue18:
        return issue18(args, argv)
    steps = [int(x) for x in args.models.split(",") if x]
    client_counts = [int(x) for x in args.clients.split(",") if x]
    sizes = [parse_size(x) for x in args.sizes.split(",") if x]
    systems = (args.systems or SYSTEMS).split(",")

    if "mlflow" in systems:
        ensure_mlflow(args.database)
    info = machine()
    print(json.dumps(info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="modelreg-compare-", dir=args.workdir))
    servers: list[Any] = []
    databases: list[TestDatabase] = []
    adapters: list[Adapter] = []
    peaks: dict[str, RssPeak] = {}
    rows: list[dict[str, Any]] = []
    memory: dict[str, dict[str, float]] = {}
    partial = ""
    try:
        for system in systems:
            adapters.append(start_system(system, work, args.database, databases, servers,
                                         args.chunk))
        for adapter in adapters:
            usage = tree_usage(adapter.root_pid)
            memory[adapter.name] = {"idle_rss_mib": usage[1] / MiB, "processes": usage[2]}
            peaks[adapter.name] = RssPeak(adapter.root_pid)

        # Fixtures: a model with two ready versions and an alias, the same on every system.
        fixtures: dict[str, dict[str, Any]] = {}
        for adapter in adapters:
            c = Conn(adapter.port)
            adapter.create_model(c, "bench")
            v1, v2 = adapter.ready_version(c, "bench"), adapter.ready_version(c, "bench")
            adapter.set_alias(c, "bench", "champion", v1)
            adapter.create_model(c, "bench-versions")
            c.close()
            fixtures[adapter.name] = {"v1": v1, "v2": v2}

        def run(operation: str, make: Callable[[Adapter], Callable[[Conn, int], Any]],
                models: int | None = None, counts: list[int] | None = None) -> None:
            for clients in counts or client_counts:
                for adapter in adapters:
                    result = measure(adapter, make(adapter), clients, args.seconds,
                                     args.max_requests)
                    mode = {"mode": MODES[True]}
                    if isinstance(adapter, Mlflow):  # both client modes; the faster counts
                        other = measure(adapter, make(adapter), clients, args.seconds,
                                        args.max_requests, keep_alive=False)
                        slower, faster = sorted((result, other), key=lambda r: r["rps"])
                        mode = {"mode": MODES[faster is result],
                                "other_mode": MODES[slower is result],
                                "other_rps": slower["rps"], "other_cpu_ms": slower["cpu_ms"]}
                        result = faster
                    row = {"operation": operation, "clients": clients, "system": adapter.name,
                           **result, **mode}
                    if models is not None:
                        row["models"] = models
                    rows.append(row)
                    print(f"{operation:32} {clients:>2} clients {adapter.name:24} "
                          f"{result['rps']:8.1f} req/s p50 {result['p50_ms']:7.1f} ms "
                          f"p99 {result['p99_ms']:7.1f} ms cpu {result['cpu_ms']:6.2f} ms"
                          + (f" ERRORS {result['errors']}: {result['first_error']}"
                             if result["errors"] else "")
                          + (f" ({mode['mode']}; {mode['other_mode']} "
                             f"{mode['other_rps']:.1f} req/s)" if "other_mode" in mode else ""),
                          flush=True)

        fresh = itertools.count()
        run("create model", lambda a: lambda c, i: a.create_model(c, f"bench-new-{next(fresh)}"))
        run("create version", lambda a: lambda c, i: a.create_version(c, "bench-versions"))
        run("get version", lambda a: lambda c, i: a.get_version(
            c, "bench", fixtures[a.name]["v1" if i % 2 else "v2"]))
        run("resolve alias", lambda a: lambda c, i: a.resolve_alias(c, "bench", "champion"))
        run("set alias", lambda a: lambda c, i: a.set_alias(
            c, "bench", "staging", fixtures[a.name]["v1" if i % 2 else "v2"]))
        run("set tag", lambda a: lambda c, i: a.set_tag(
            c, "bench", fixtures[a.name]["v1"], f"k{i % 50}", f"value-{i}"))

        seeded = 0
        for step in steps:
            for adapter in adapters:
                took = seed(adapter, seeded + 1, step + 1)
                print(f"seeded {adapter.name} to {step} models in {took:.1f} s "
                      f"({(step - seeded) / took:.0f} models/s at 16 clients)", flush=True)
            seeded = step
            check = {a.name: a.search(Conn(a.port), PREFIX, True) for a in adapters}
            print(f"matches of {PREFIX}% at {step}: {check}", flush=True)
            run(f"search prefix, first page ({step:,})",
                lambda a: lambda c, i: a.search(c, PREFIX, False), models=step)
            run(f"search prefix, all pages ({step:,})",
                lambda a: lambda c, i: a.search(c, PREFIX, True), models=step)

        for size in sizes:
            content = Content(size)
            label = f"{size / MiB:.0f} MiB" if size < GiB else f"{size / GiB:.0f} GiB"
            for adapter in adapters:
                peaks[adapter.name].reset()
                cpu0 = tree_usage(adapter.root_pid)[0]
                began = time.perf_counter()
                location = adapter.upload(content, "bench", f"blob-{size}.bin")
                up = time.perf_counter() - began
                cpu1 = tree_usage(adapter.root_pid)[0]
                up_peak = peaks[adapter.name].peak
                peaks[adapter.name].reset()
                began = time.perf_counter()
                total, digest = get_sha256(adapter.port, location)
                down = time.perf_counter() - began
                cpu2 = tree_usage(adapter.root_pid)[0]
                if total != size or digest != content.sha256:
                    raise RuntimeError(f"{adapter.name}: download of {label} does not match")
                for op, seconds, cpu, peak in (("upload", up, cpu1 - cpu0, up_peak),
                                               ("download", down, cpu2 - cpu1,
                                                peaks[adapter.name].peak)):
                    rows.append({"operation": f"{op} {label}", "clients": 1,
                                 "system": adapter.name, "mib_s": size / MiB / seconds,
                                 "seconds": seconds, "cpu_ms": cpu * 1000,
                                 "peak_rss_mib": peak / MiB})
                    print(f"{op} {label:8} {adapter.name:24} {size / MiB / seconds:8.1f} MiB/s "
                          f"cpu {cpu:.2f} s peak RSS {peak / MiB:.0f} MiB (sha256 ok)",
                          flush=True)
            del content

    except (KeyboardInterrupt, Exception) as exc:  # keep what was measured
        if not rows:
            raise
        partial = f"{type(exc).__name__}: {exc}"[:300]
        print(f"stopped early ({partial}); writing what was measured", flush=True)
    finally:
        for adapter in adapters:
            usage = tree_usage(adapter.root_pid)
            memory[adapter.name].update({"final_rss_mib": usage[1] / MiB,
                                         "peak_rss_mib": peaks[adapter.name].peak / MiB,
                                         "processes": usage[2]})
        for peak in peaks.values():
            peak.stop()
        for server in servers:
            server.stop()
        for database in databases:
            database.drop()
        shutil.rmtree(work, ignore_errors=True)

    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "command": " ".join(["bench/compare.py", *(argv if argv is not None
                                                        else sys.argv[1:])]),
              "machine": info, "database": args.database,
              "settings": {"seconds": args.seconds,
                                            "max_requests": args.max_requests,
                                            "clients": client_counts, "models": steps,
                                            "chunk": args.chunk},
              "rows": rows, "memory": memory, "partial": partial}
    text = markdown(report, [a.name for a in adapters])
    print()
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        day = dt.date.today().isoformat() + ("" if args.database == "sqlite"
                                             else f"-{args.database}")
        (RESULTS / f"compare-{day}.json").write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / f"compare-{day}.md").write_text(text)
        print(f"written: bench/results/compare-{day}.md and .json")
    return 0


_DATABASES = {"sqlite": "SQLite for both (a file each)",
              "postgresql": "PostgreSQL for both (a database each, one server)"}


def _ratio(ours: float | None, theirs: float | None, lower_is_better: bool = False) -> str:
    if not ours or not theirs:
        return "-"
    value = theirs / ours if lower_is_better else ours / theirs
    return f"{value:.1f}x"


def markdown(report: dict[str, Any], systems: list[str]) -> str:
    m = report["machine"]
    mlflow = "MLflow"
    ours = [s for s in systems if s != mlflow]
    lines = [f"# modelreg vs MLflow model registry — {report['date']}", "",
             f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
             f"Python {m['python']}; modelreg {m['modelreg']} (waitress {m['waitress']}, "
             f"gunicorn {m['gunicorn']}, SQLAlchemy {m['sqlalchemy']}); {m['mlflow']}. "
             f"{_DATABASES[report.get('database', 'sqlite')]}, local artifact storage, "
             "loopback.", "",
             f"Command: `.venv/bin/python {report['command']}`", "",
             *([f"**Partial run**, stopped early: {report['partial']}", ""]
               if report.get("partial") else []),
             "Metadata operations: requests/s (p50 / p99 ms) [server CPU ms per request]; "
             "ratio = modelreg requests/s ÷ MLflow requests/s (and MLflow CPU ÷ modelreg "
             "CPU). MLflow is measured over keep-alive and over a new connection per "
             "request: its cell and the ratio hold the faster mode, named with the other's "
             "requests/s. Clients are Python threads on the same 2 cores (~1 ms CPU per "
             "request), so the fastest rates are lower bounds; `--issue18` adds wrk.", ""]
    header = "| operation | clients | " + " | ".join(systems) + " | " + " | ".join(
        f"ratio {s.replace('modelreg ', '')}" for s in ours) + " |"
    lines += [header, "|" + "---|" * (2 + len(systems) + len(ours))]
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for row in report["rows"]:
        groups.setdefault((row["operation"], row["clients"]), {})[row["system"]] = row
    for (operation, clients), by in groups.items():
        cells = []
        transfer = "mib_s" in next(iter(by.values()))
        for s in systems:
            r = by.get(s)
            if r is None:
                cells.append("-")
            elif transfer:
                cells.append(f"{r['mib_s']:.0f} MiB/s [{r['cpu_ms'] / 1000:.1f} s CPU, "
                             f"peak {r['peak_rss_mib']:.0f} MiB]")
            else:
                cells.append(f"{r['rps']:.0f} ({r['p50_ms']:.1f} / {r['p99_ms']:.0f}) "
                             f"[{r['cpu_ms']:.1f}]" + (f" {r['errors']} err" if r["errors"]
                                                      else "")
                             + (f" {r['mode']}; {r['other_mode']} {r['other_rps']:.0f}"
                                if "other_mode" in r else ""))
        ratios = []
        base = by.get(mlflow)
        for s in ours:
            r = by.get(s)
            if not r or not base:
                ratios.append("-")
            elif transfer:
                ratios.append(_ratio(r["mib_s"], base["mib_s"]))
            else:
                ratios.append(f"{_ratio(r['rps'], base['rps'])} "
                              f"(CPU {_ratio(r['cpu_ms'], base['cpu_ms'], True)})")
        lines.append(f"| {operation} | {clients} | " + " | ".join(cells) + " | "
                     + " | ".join(ratios) + " |")
    lines += ["", "Memory (all processes of each server, RSS):", "",
              "| system | processes | idle | end of run | peak |", "|---|---|---|---|---|"]
    for s in systems:
        mem = report["memory"].get(s, {})
        lines.append(f"| {s} | {mem.get('processes', '-')} | {mem.get('idle_rss_mib', 0):.0f} MiB"
                     f" | {mem.get('final_rss_mib', 0):.0f} MiB | "
                     f"{mem.get('peak_rss_mib', 0):.0f} MiB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
