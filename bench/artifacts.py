"""Artifact benchmark: model files through a real Waitress on the local backend.

In one run, beside the machine's own limits measured in the same run:

* the disk: ``dd`` writing the same amount with ``conv=fdatasync``;
* loopback TCP: a raw-socket sender and receiver in this process;

it measures through :class:`modelreg.testing.server.LiveServer` (Waitress with the tuned
``recv_bytes`` of ``production.ini``, SQLite in a temporary directory):

* an upload of ``--size`` bytes through a resumable session (chunks of ``--chunk``), split
  into receiving the chunks and completing (the store reads the assembled file again to
  verify its digest);
* a download of that file, and ``--concurrent`` downloads at once;
* the server's RSS (``/proc/<pid>/status``) before and at its highest during each;
* a resumed upload: the connection drops half-way through a chunk, the client asks for the
  offset and sends only what is missing (the bytes sent in all are reported).

Usage::

    python bench/artifacts.py --size 1GiB --chunk 64MiB --workdir /work/tmp-bench

Everything it creates lives in a temporary directory under ``--workdir`` and is deleted at the
end.  This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = MiB
#: Waitress settings of production.ini that matter for throughput (``send_bytes`` is
#: deprecated in Waitress 3: each send is as large as the socket's send buffer).
SERVER_SETTINGS = {
    "recv_bytes": "262144",
    "max_request_body_size": str(4 * GiB),
    "inbuf_overflow": "1048576",
    "channel_timeout": "600",
}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text.strip(), re.I)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text}")
    unit = (match.group(2) or "").upper()[:1]
    return int(match.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": GiB}[unit]


def rate(nbytes: int, seconds: float) -> float:
    """MiB/s."""
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


# --------------------------------------------------------------------------- baselines


def disk_write_rate(directory: Path, size: int) -> float:
    """MiB/s of ``dd`` writing ``size`` bytes with fdatasync."""
    target = directory / "dd.bin"
    start = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", f"bs={BLOCK}",
                    f"count={size // BLOCK}", "conv=fdatasync"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - start
    target.unlink()
    return rate(size, seconds)


def loopback_rate(size: int) -> float:
    """MiB/s of a raw-socket sender and receiver on 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = [0]

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            buffer = bytearray(BLOCK)
            while n := conn.recv_into(buffer):
                received[0] += n

    thread = threading.Thread(target=receive)
    thread.start()
    block = os.urandom(BLOCK)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(size // BLOCK):
            sock.sendall(block)
    thread.join()
    seconds = time.perf_counter() - start
    listener.close()
    assert received[0] == size
    return rate(size, seconds)


# ------------------------------------------------------------------------------ memory


class RssSampler:
    """Samples a process's resident memory every 20 ms while in a ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.rss()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssSampler:
        self.before = self.rss()
        self.peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        """MiB the peak exceeds the RSS at the start."""
        return (self.peak - self.before) / MiB


# ------------------------------------------------------------------------------ client


class Content:
    """``size`` bytes: one random block repeated (hashing and I/O cost the same)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.block = os.urandom(BLOCK)
        digest = hashlib.sha256()
        for start in range(0, size, BLOCK):
            digest.update(self.block[:min(BLOCK, size - start)])
        self.sha256 = digest.hexdigest()

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes ``[start, end)`` in blocks (``start`` is a multiple of the block)."""
        position = start
        while position < end:
            piece = self.block[position % BLOCK:][:end - position]
            yield piece
            position += len(piece)


def call(port: int, method: str, path: str, body: Any = None, headers: Any = None,
         expect: tuple[int, ...] = (200,)) -> tuple[int, bytes, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return response.status, data, response.headers
    finally:
        conn.close()


def send_chunk(port: int, location: str, content: Content, start: int, end: int) -> None:
    """PATCH the bytes ``[start, end)``, streamed from memory blocks."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.putrequest("PATCH", location)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(end - start))
        conn.putheader("Content-Range", f"bytes {start}-{end - 1}/{content.size}")
        conn.endheaders()
        for piece in content.chunks(start, end):
            conn.send(piece)
        response = conn.getresponse()
        data = response.read()
        if response.status != 202:
            raise RuntimeError(f"PATCH {location}: {response.status} {data[:300]!r}")
    finally:
        conn.close()


def drop_mid_chunk(port: int, location: str, content: Content, start: int, end: int) -> int:
    """Send half of a chunk and close the connection; the bytes sent."""
    half = (end - start) // 2
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"PATCH {location} HTTP/1.1\r\nHost: bench\r\n"
                      f"Content-Type: application/octet-stream\r\n"
                      f"Content-Length: {end - start}\r\n"
                      f"Content-Range: bytes {start}-{end - 1}/{content.size}\r\n\r\n").encode())
        sent = 0
        for piece in content.chunks(start, start + half):
            sock.sendall(piece)
            sent += len(piece)
    return sent


def open_session(port: int, version: int, path: str) -> str:
    _, data, _ = call(port, "POST", f"/api/v1/models/bench/versions/{version}/uploads",
                      json.dumps({"path": path}), {"Content-Type": "application/json"},
                      expect=(201,))
    return json.loads(data)["location"]


def upload(port: int, version: int, path: str, content: Content, chunk: int,
           drop_at: int | None = None) -> tuple[float, float, int]:
    """Upload through a session; ``(seconds for the chunks, seconds to complete, bytes
    sent)``.  ``drop_at``: the chunk whose first attempt is cut off half-way."""
    location = open_session(port, version, path)
    sent = 0
    start = time.perf_counter()
    index = 0
    offset = 0
    while offset < content.size:
        end = min(offset + chunk, content.size)
        if index == drop_at:
            sent += drop_mid_chunk(port, location, content, offset, end)
            time.sleep(0.2)
            _, data, _ = call(port, "GET", location)
            resume_at = json.loads(data)["offset"]
            assert resume_at == offset, (resume_at, offset)
        send_chunk(port, location, content, offset, end)
        sent += end - offset
        offset = end
        index += 1
    chunks_done = time.perf_counter()
    call(port, "PUT", f"{location}?digest=sha256:{content.sha256}", b"",
         {"Content-Type": "application/octet-stream"}, expect=(201, 200))
    return chunks_done - start, time.perf_counter() - chunks_done, sent


def download(port: int, path: str) -> int:
    """GET a file, discarding it; its length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, response.status
        total = 0
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while n := response.readinto(view):
            total += n
        return total
    finally:
        conn.close()


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


# -------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=GiB, help="file size (1GiB)")
    parser.add_argument("--chunk", type=parse_size, default=64 * MiB,
                        help="upload chunk size (64MiB)")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent downloads (8)")
    parser.add_argument("--resume-size", type=parse_size, default=None,
                        help="size of the file of the resumed upload (default: --size)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary files go (a directory on the disk "
                             "measured)")
    args = parser.parse_args(argv)
    size, chunk = args.size, args.chunk
    args.workdir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="modelreg-bench-", dir=args.workdir))
    db = None
    try:
        print(f"file {size / MiB:.0f} MiB, chunks {chunk / MiB:.0f} MiB, work directory "
              f"{directory}", flush=True)
        disk = disk_write_rate(directory, size)
        loopback = loopback_rate(size)
        print(f"disk write (dd, fdatasync): {disk:8.0f} MiB/s", flush=True)
        print(f"loopback TCP (raw sockets): {loopback:8.0f} MiB/s", flush=True)
        content = Content(size)
        db = TestDatabase.create("sqlite")
        settings = {
            "sqlalchemy.url": db.url,
            "modelreg.auth.anonymous": "write",
            "modelreg.storage": "local",
            "modelreg.storage.local.path": str(directory / "blobs"),
            "modelreg.upload.max_put_size": str(chunk),
        }
        with LiveServer(settings, threads=8, server_settings=SERVER_SETTINGS) as server:
            port = server.port
            pid = server.process.pid
            call(port, "POST", "/api/v1/models", json.dumps({"name": "bench"}),
                 {"Content-Type": "application/json"}, expect=(201,))
            call(port, "POST", "/api/v1/models/bench/versions", "{}",
                 {"Content-Type": "application/json"}, expect=(201,))
            with RssSampler(pid) as up_rss:
                chunks_s, complete_s, _ = upload(port, 1, "model.bin", content, chunk)
            total_s = chunks_s + complete_s
            path = "/api/v1/models/bench/versions/1/files/model.bin"
            download(port, path)  # warm the page cache, as for a file just uploaded
            with RssSampler(pid) as down_rss:
                down_s, got = timed(lambda: download(port, path))
            assert got == size
            results: list[int] = []

            def many(fetch: Callable[[], Any]) -> None:
                threads = [threading.Thread(target=lambda: results.append(fetch()))
                           for _ in range(args.concurrent)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()

            # Warm up: every worker thread opens its database connection once (that memory
            # is the server's, whatever the file sizes).
            many(lambda: call(port, "GET", path, headers={"Range": "bytes=0-0"},
                              expect=(206,))[0])
            results.clear()
            with RssSampler(pid) as many_rss:
                many_s, _ = timed(lambda: many(lambda: download(port, path)))
            assert results == [size] * args.concurrent
            # Resume: the second chunk's first attempt is cut off half-way.
            call(port, "POST", "/api/v1/models/bench/versions", "{}",
                 {"Content-Type": "application/json"}, expect=(201,))
            resume_size = args.resume_size or size
            big = content if resume_size == size else Content(resume_size)
            with RssSampler(pid) as resume_rss:
                resume_s, resume_complete_s, resume_sent = upload(
                    port, 2, "model.bin", big, chunk, drop_at=1)
            rss_end = up_rss.rss() / MiB

        print()
        print(f"{'operation':<44} {'MiB/s':>8} {'ratio':>14} {'RSS growth':>11}")
        print("-" * 80)
        rows = [
            ("upload: chunks received", rate(size, chunks_s), disk, "disk", up_rss.growth),
            ("upload: completion (re-reads, verifies)", rate(size, complete_s), disk, "disk",
             None),
            ("upload: whole session", rate(size, total_s), disk, "disk", None),
            ("download: one client", rate(size, down_s), loopback, "loopback",
             down_rss.growth),
            (f"download: {args.concurrent} clients at once (total)",
             rate(size * args.concurrent, many_s), loopback, "loopback", many_rss.growth),
        ]
        for name, value, base, label, growth in rows:
            ratio = f"{value / base:5.0%} of {label}"
            grown = "" if growth is None else f"{growth:8.1f} MiB"
            print(f"{name:<44} {value:8.0f} {ratio:>14} {grown:>11}")
        print(f"server RSS: {up_rss.before / MiB:.0f} MiB at the start, {rss_end:.0f} MiB "
              f"at the end")
        print(f"resumed upload of {resume_size / MiB:.0f} MiB, cut off half-way through its "
              f"second chunk: {resume_sent / MiB:.0f} MiB sent in all (the half chunk cut "
              f"off is sent again, nothing else); {rate(resume_size, resume_s):.0f} MiB/s for "
              f"the chunks, {resume_complete_s:.1f} s to complete, RSS growth "
              f"{resume_rss.growth:.1f} MiB")
    finally:
        if db is not None:
            db.drop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
