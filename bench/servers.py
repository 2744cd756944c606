"""Which server to run the registry under, measured: Waitress, gunicorn and uvicorn, one run.

One PostgreSQL database and one blob directory, seeded once through the API (models with
ready versions, a small file each, an alias ``champion``, and one large file); then each
server configuration in turn serves that same data:

* ``waitress-4``, ``waitress-8``, ``waitress-16``: ``pserve`` (one process, 4/8/16 threads,
  the throughput settings of ``production.ini``);
* ``gunicorn-2x8``: ``gunicorn --paste`` with 2 gthread workers of 8 threads;
* ``uvicorn-2x8``: ``uvicorn`` with 2 workers running the WSGI app through the adapter of
  ``modelreg.asgi`` (8 adapter threads each).

For each: the registry's read mix (get version, resolve alias, list files, in turn) at 1, 16
and 64 concurrent keep-alive clients for a few seconds each — requests/s, p50/p99 latency,
server CPU per request — and the large file downloaded by 1, 16 and 64 clients at once
(aggregate MiB/s; the single download's sha256 is checked), with the peak RSS of all the
server's processes.  ``GET /healthz`` on ``waitress-8`` at 16 clients is measured first as the
run's baseline: ratios against it survive a noisy machine better than absolute figures.

The clients run on the same cores as the server and cost about 1 ms of CPU per request in
Python, so the rates are lower bounds, and equally so for every server.

Usage::

    .venv/bin/python bench/servers.py                 # 1 GiB file, 1/16/64 clients
    .venv/bin/python bench/servers.py --quick         # 64 MiB file, 1/16 clients, 2 s

Prints a Markdown table; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifacts import SERVER_SETTINGS, Content, parse_size
from compare import (
    BLOCK,
    Conn,
    MiB,
    Modelreg,
    RssPeak,
    get_sha256,
    machine,
    measure,
    modelreg_settings,
)

from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer

API = "/api/v1"
#: name -> (server, workers, threads)
CONFIGURATIONS: dict[str, tuple[str, int, int]] = {
    "waitress-4": ("waitress", 1, 4),
    "waitress-8": ("waitress", 1, 8),
    "waitress-16": ("waitress", 1, 16),
    "gunicorn-2x8": ("gunicorn", 2, 8),
    "uvicorn-2x8": ("uvicorn", 2, 8),
}


@contextmanager
def serving(name: str, settings: dict[str, str]) -> Iterator[LiveServer]:
    """The registry under configuration ``name``, with pool sizes that fit its threads."""
    server, workers, threads = CONFIGURATIONS[name]
    settings = {**settings, "sqlalchemy.pool_size": str(threads),
                "sqlalchemy.max_overflow": "4"}
    with LiveServer(settings, threads=threads, server=server, workers=workers,
                    server_settings=SERVER_SETTINGS, startup_timeout=60) as live:
        yield live


def seed(server: LiveServer, models: int, versions: int, large: Content) -> str:
    """``models`` models of ``versions`` ready versions (one small file each), ``champion``
    on the last; and a version holding ``large``.  The large file's path."""
    adapter = Modelreg("seed", server, chunk=64 * MiB)

    def one(i: int) -> None:
        conn = Conn(server.port)
        try:
            model = f"model-{i:04d}"
            conn.call("POST", f"{API}/models", {"name": model}, expect=(201,))
            for _ in range(versions):
                number = adapter.ready_version(conn, model)
            adapter.set_alias(conn, model, "champion", number)
        finally:
            conn.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(models)))
    Conn(server.port).call("POST", f"{API}/models", {"name": "large"}, expect=(201,))
    return adapter.upload(large, "large", "model.bin")


def read_mix(models: int, versions: int) -> Callable[[Conn, int], None]:
    """Get version, resolve alias and list files, in turn, spread over the models."""

    def operation(conn: Conn, i: int) -> None:
        model = f"model-{(i // 3) % models:04d}"
        kind = i % 3
        if kind == 0:
            conn.call("GET", f"{API}/models/{model}/versions/{1 + (i // 3) % versions}")
        elif kind == 1:
            conn.call("GET", f"{API}/models/{model}/aliases/champion")
        else:
            conn.call("GET", f"{API}/models/{model}/versions/{1 + (i // 3) % versions}/files")

    return operation


def downloads(server: LiveServer, path: str, large: Content, clients: int) -> dict[str, Any]:
    """``clients`` simultaneous downloads of ``path``: aggregate MiB/s, slowest seconds."""
    if clients == 1:
        began = time.perf_counter()
        size, sha256 = get_sha256(server.port, path)
        seconds = time.perf_counter() - began
        if (size, sha256) != (large.size, large.sha256):
            raise RuntimeError(f"{path}: got {size} bytes, sha256 {sha256}")
        return {"clients": 1, "mib_s": size / MiB / seconds, "slowest_s": seconds}
    barrier = threading.Barrier(clients)

    def one(_: int) -> tuple[int, float]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        buffer = memoryview(bytearray(BLOCK))
        try:
            barrier.wait()
            began = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status}")
            total = 0
            while n := response.readinto(buffer):
                total += n
            return total, time.perf_counter() - began
        finally:
            conn.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    elapsed = time.perf_counter() - began
    if any(size != large.size for size, _ in results):
        raise RuntimeError(f"{path}: a download came back short")
    return {"clients": clients, "mib_s": clients * large.size / MiB / elapsed,
            "slowest_s": max(seconds for _, seconds in results)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    large = Content(args.size)
    report: dict[str, Any] = {"machine": machine(), "size": args.size, "results": {}}
    db = TestDatabase.create("postgresql")
    try:
        with tempfile.TemporaryDirectory(prefix="modelreg-bench-servers-") as directory:
            settings = modelreg_settings(Path(directory), "servers", db.url)
            with serving("waitress-8", settings) as live:
                began = time.perf_counter()
                large_path = seed(live, args.models, args.versions, large)
                print(f"seeded {args.models} models x {args.versions} versions and "
                      f"{args.size / MiB:.0f} MiB in {time.perf_counter() - began:.1f} s",
                      file=sys.stderr)
                baseline = measure(_Target(live), lambda c, i: c.call("GET", "/healthz"),
                                   16, args.seconds, 10**9)
                report["baseline"] = baseline
            mix = read_mix(args.models, args.versions)
            for name in args.servers:
                with serving(name, settings) as live:
                    target = _Target(live)
                    rss = RssPeak(live.process.pid)
                    rows = []
                    for clients in args.clients:
                        rss.reset()
                        row = measure(target, mix, clients, args.seconds, 10**9)
                        row["rss_mib"] = rss.peak / MiB
                        rows.append({"clients": clients, **row})
                        print(f"{name} read mix {clients}: {row['rps']:.0f} req/s",
                              file=sys.stderr)
                    transfers = []
                    get_sha256(live.port, large_path)  # the page cache, as for a fresh file
                    for clients in args.download_clients:
                        rss.reset()
                        row = downloads(live, large_path, large, clients)
                        row["rss_mib"] = rss.peak / MiB
                        transfers.append(row)
                        print(f"{name} download {clients}: {row['mib_s']:.0f} MiB/s",
                              file=sys.stderr)
                    rss.stop()
                    report["results"][name] = {"read_mix": rows, "downloads": transfers}
    finally:
        db.drop()
    return report


class _Target:
    """What :func:`compare.measure` needs of a server: its port, root pid and name."""

    def __init__(self, live: LiveServer) -> None:
        self.name = live.server
        self.port = live.port
        self.root_pid = live.process.pid


def markdown(report: dict[str, Any]) -> str:
    base = report["baseline"]
    lines = [
        f"Baseline: GET /healthz on waitress-8, 16 clients: {base['rps']:.0f} req/s, "
        f"p50 {base['p50_ms']:.2f} ms.",
        "",
        "| server | clients | read mix req/s | x baseline | p50 ms | p99 ms "
        "| CPU ms/req | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in report["results"].items():
        for row in result["read_mix"]:
            lines.append(
                f"| {name} | {row['clients']} | {row['rps']:.0f} | "
                f"{row['rps'] / base['rps']:.2f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['cpu_ms']:.1f} | {row['rss_mib']:.0f} |")
    size = report["size"] / MiB
    lines += ["", f"| server | {size:.0f} MiB download, clients | aggregate MiB/s | "
              "slowest s | peak RSS MiB |", "|---|---|---|---|---|"]
    for name, result in report["results"].items():
        for row in result["downloads"]:
            lines.append(f"| {name} | {row['clients']} | {row['mib_s']:.0f} | "
                         f"{row['slowest_s']:.1f} | {row['rss_mib']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(CONFIGURATIONS),
                        help="configurations to run (default: all)")
    parser.add_argument("--clients", default="1,16,64", help="read-mix clients")
    parser.add_argument("--download-clients", default="1,16,64",
                        help="simultaneous downloads")
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="the large file (1GiB)")
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per read-mix row")
    parser.add_argument("--quick", action="store_true",
                        help="64 MiB, 1 and 16 clients, 2 s per row, 20 models")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.seconds, args.models = 64 * MiB, 2.0, 20
        args.clients = args.download_clients = "1,16"
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(args.servers) - set(CONFIGURATIONS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; known: {', '.join(CONFIGURATIONS)}")
    args.clients = [int(n) for n in str(args.clients).split(",")]
    args.download_clients = [int(n) for n in str(args.download_clients).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
