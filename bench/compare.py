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
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "mlflow"], check=True)
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
    """One keep-alive connection (``TCP_NODELAY``: no Nagle stall on the client's side)."""

    def __init__(self, port: int) -> None:
        self.port = port
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
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()
            self.conn = self._connect()
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        raw = response.read()
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


# ------------------------------------------------------------------------ measuring


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def measure(adapter: Adapter, operation: Callable[[Conn, int], Any], clients: int,
            seconds: float, max_requests: int, warmup: int = 2) -> dict[str, Any]:
    """Run ``operation(conn, i)`` from ``clients`` threads for ``seconds`` (or
    ``max_requests`` in all); requests/s, p50/p99 ms, server CPU ms per request."""
    conns = [Conn(adapter.port) for _ in range(clients)]
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
    cpu_before = tree_usage(adapter.root_pid)[0]
    start = time.perf_counter()
    deadline[0] = start + seconds
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    elapsed = time.perf_counter() - start
    cpu_after = tree_usage(adapter.root_pid)[0]
    for conn in conns:
        conn.close()
    flat = [s for per in samples for s in per]
    if not flat:
        raise RuntimeError(f"{adapter.name}: every request failed: {errors[:3]}")
    return {"requests": len(flat), "errors": len(errors), "first_error": errors[:1],
            "rps": len(flat) / elapsed, "p50_ms": statistics.median(flat),
            "p99_ms": percentile(flat, 0.99),
            "cpu_ms": (cpu_after - cpu_before) * 1000 / len(flat)}


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
        # MLflow neither scans files nor sends webhooks: switch those plugins off.
        "modelreg.plugins.disabled": "scan webhooks",
        "pyramid.reload_templates": "false",
    }


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
    parser.add_argument("--systems", default="mlflow,modelreg,modelreg-gunicorn")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="every system's metadata store: a SQLite file each, or a "
                             "PostgreSQL database each on MODELREG_TEST_POSTGRESQL_URL's server")
    parser.add_argument("--workdir", default=None, help="where the temporary files go")
    parser.add_argument("--quick", action="store_true",
                        help="--models 300,1000 --seconds 2 --sizes 100MiB")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.seconds, args.sizes = "300,1000", 2.0, "100MiB"
    steps = [int(x) for x in args.models.split(",") if x]
    client_counts = [int(x) for x in args.clients.split(",") if x]
    sizes = [parse_size(x) for x in args.sizes.split(",") if x]
    systems = args.systems.split(",")

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
            if system == "mlflow":
                store = None
                if args.database == "postgresql":  # an empty database: MLflow migrates it
                    mlflow_db = TestDatabase.create("postgresql", migrate=False)
                    databases.append(mlflow_db)
                    store = mlflow_db.url
                server = MlflowServer(work / "mlflow", backend_store=store)
                servers.append(server)  # stopped in any case, also if it fails to start
                server.start()
                adapters.append(Mlflow(server))
            else:
                gunicorn = system == "modelreg-gunicorn"
                database = TestDatabase.create(args.database)  # every migration run
                databases.append(database)
                settings = modelreg_settings(work, system, database.url)
                live = LiveServer(settings,
                                  threads=GUNICORN_THREADS if gunicorn else MODELREG_THREADS,
                                  server_settings=SERVER_SETTINGS,
                                  server="gunicorn" if gunicorn else "waitress",
                                  workers=MLFLOW_WORKERS if gunicorn else 1,
                                  startup_timeout=60)
                live.start()
                servers.append(live)
                adapters.append(Modelreg(
                    "modelreg (gunicorn x4)" if gunicorn else "modelreg (pserve)", live,
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
                    row = {"operation": operation, "clients": clients, "system": adapter.name,
                           **result}
                    if models is not None:
                        row["models"] = models
                    rows.append(row)
                    print(f"{operation:32} {clients:>2} clients {adapter.name:24} "
                          f"{result['rps']:8.1f} req/s p50 {result['p50_ms']:7.1f} ms "
                          f"p99 {result['p99_ms']:7.1f} ms cpu {result['cpu_ms']:6.2f} ms"
                          + (f" ERRORS {result['errors']}: {result['first_error']}"
                             if result["errors"] else ""), flush=True)

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
             "CPU). Clients are Python threads on the same 2 cores (~1 ms CPU per request), "
             "so the fastest rates are lower bounds.", ""]
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
                                                      else ""))
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
