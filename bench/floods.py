"""Floods before authentication, measured: what unauthenticated clients can hold.

Against the registry served by Waitress (SQLite, local storage, in a temporary directory)
with the ``[server:main]`` of a ``production.ini`` — this clone's, or another given with
``--ini`` (e.g. ``git show e88868e:production.ini > /tmp/old.ini``, the settings before
the figures of docs/security.md) — alone or behind the
shipped nginx configuration (``--nginx``), it measures:

* **spool**: ``--connections`` clients with a wrong ``Host`` each send all but the last byte
  of a ``--body-mib`` MiB ``PUT``; the bytes the server process then holds in temporary
  files (unlinked files open in ``/proc/<pid>/fd``) and its RSS, and nginx's temporary files;
* **memory**: ``connection_limit`` clients each send ``inbuf_overflow - 1`` bytes of a 200 MiB
  body (the most Waitress keeps in memory before spooling) and stop: the server's RSS;
* **oversized PUT**: one 300 MB ``PUT`` of a file, no token: how many body bytes the client
  sent before an answer came, the answer's status and the seconds it took;
* **idle**: ``connection_limit + 5`` connections from one address that send nothing, then a
  ``GET /healthz`` on a new connection: seconds until it is answered (``--idle-cap``).

Usage::

    .venv/bin/python bench/floods.py                       # this clone's production.ini
    .venv/bin/python bench/floods.py --ini /tmp/old.ini --server egg:waitress#main
    .venv/bin/python bench/floods.py --nginx
"""

from __future__ import annotations

import argparse
import configparser
import os
import select
import socket
import time
from contextlib import ExitStack
from pathlib import Path

from modelreg.testing import TestDatabase
from modelreg.testing.nginx import NginxProxy
from modelreg.testing.server import LiveServer

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def server_settings(ini: Path) -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.read(ini, encoding="utf-8")
    return {k: v for k, v in parser.items("server:main") if k != "listen"}


def spooled(pid: int) -> int:
    """Bytes in unlinked files the process holds open (Waitress's spooled bodies)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).endswith("(deleted)"):
                total += os.stat(fd).st_size
        except OSError:
            continue
    return total


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def spool(port: int, pid: int, proxy: NginxProxy | None, connections: int, size: int) -> str:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30)
             for _ in range(connections)]
    piece = b"\0" * MiB
    try:
        for sock in socks:
            sock.sendall(b"PUT /api/v1/models/m/versions/1/files/x HTTP/1.1\r\n"
                         b"Host: evil.example\r\nContent-Length: %d\r\n\r\n" % size)
        sent = [0] * connections
        for index, sock in enumerate(socks):
            while sent[index] < size - 1 and not answered(sock):
                data = piece[:min(MiB, size - 1 - sent[index])]
                try:
                    sock.sendall(data)
                except OSError:
                    break
                sent[index] += len(data)
        time.sleep(1.0)
        held = spooled(pid)
        nginx = sum(p.stat().st_size for p in proxy.temp_files()) if proxy else 0
        return (f"spool: {connections} x {size / MiB:.0f} MiB, wrong Host: client sent "
                f"{sum(sent) / MiB:.0f} MiB; Waitress holds {held / MiB:.0f} MiB in temporary "
                f"files, RSS {rss(pid) / MiB:.0f} MiB; nginx temp {nginx / MiB:.0f} MiB")
    finally:
        for sock in socks:
            sock.close()


def memory(port: int, pid: int, connections: int, held: int) -> str:
    """``connections`` clients each send ``held`` bytes of a 200 MiB body and stop."""
    before = rss(pid)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30)
             for _ in range(connections)]
    try:
        for sock in socks:
            sock.sendall(b"PUT /api/v1/models/m/versions/1/files/x HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (200 * MiB))
            sock.sendall(b"\0" * held)
        time.sleep(2.0)
        return (f"memory: {connections} connections x {held / MiB:.2f} MiB of body each: "
                f"RSS {before / MiB:.0f} -> {rss(pid) / MiB:.0f} MiB, temporary files "
                f"{spooled(pid) / MiB:.0f} MiB")
    finally:
        for sock in socks:
            sock.close()


def oversized(port: int) -> str:
    size = 300_000_000
    started = time.monotonic()
    sent = 0
    piece = b"\0" * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"PUT /api/v1/models/m/versions/1/files/w HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n"
                     % size)
        time.sleep(0.2)
        while sent < size and not answered(sock):
            data = piece[:min(MiB, size - sent)]
            try:
                sock.sendall(data)
            except OSError:
                break
            sent += len(data)
        status = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
    return (f"oversized PUT (300 MB, no token): {status!r} after {sent / MiB:.0f} MiB of body "
            f"sent, {time.monotonic() - started:.1f} s")


def idle(port: int, limit: int, cap: float) -> str:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=("127.0.0.3", 0))
             for _ in range(limit + 5)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=cap,
                                      source_address=("127.0.0.4", 0)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                line = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
            except TimeoutError:
                line = "no answer"
        return (f"idle: {limit + 5} idle connections from one address; another client's "
                f"GET /healthz: {line!r} after {time.monotonic() - started:.1f} s")
    finally:
        for sock in socks:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ini", type=Path, default=ROOT / "production.ini")
    parser.add_argument("--server", help="[server:main] use (default: the ini's)")
    parser.add_argument("--nginx", action="store_true", help="behind deploy/nginx/modelreg.conf")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--body-mib", type=int, default=200)
    parser.add_argument("--idle-cap", type=float, default=200.0)
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    settings = server_settings(args.ini)
    if args.server:
        settings["use"] = args.server
    threads = int(settings.pop("threads", "4"))
    if args.nginx:
        settings.update({"trusted_proxy": "127.0.0.1",
                         "trusted_proxy_headers": "x-forwarded-for x-forwarded-host "
                                                  "x-forwarded-proto"})
    db = TestDatabase.create("sqlite")
    try:
        with ExitStack() as stack:
            server = stack.enter_context(LiveServer(
                {"sqlalchemy.url": db.url, "modelreg.auth.anonymous": "none",
                 "modelreg.allowed_hosts": "127.0.0.1"}, threads=threads,
                server_settings=settings))
            assert server.port is not None and server.process is not None
            proxy = stack.enter_context(NginxProxy(server.port)) if args.nginx else None
            port = proxy.port if proxy else server.port
            print(f"{args.ini} use={settings.get('use')} nginx={args.nginx} "
                  f"connection_limit={settings.get('connection_limit')} "
                  f"channel_timeout={settings.get('channel_timeout')} "
                  f"max_request_body_size={settings.get('max_request_body_size')}", flush=True)
            print(spool(port, server.process.pid, proxy, args.connections,
                        args.body_mib * MiB), flush=True)
            print(oversized(port), flush=True)
            limit = int(settings.get("connection_limit", "100"))
            inbuf = int(settings.get("inbuf_overflow", str(512 * 1024)))
            print(memory(port, server.process.pid, limit, inbuf - 1), flush=True)
            if not args.skip_idle:
                print(idle(port, int(settings.get("connection_limit", "100")), args.idle_cap),
                      flush=True)
    finally:
        db.drop()


if __name__ == "__main__":
    main()
