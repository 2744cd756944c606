"""Client benchmark: ``Client.push`` and ``Client.pull`` of a whole model on loopback, beside
the server's raw upload and download rates measured in the same run.

Against one :class:`modelreg.testing.server.LiveServer` (Waitress with the throughput settings
of ``bench/artifacts.py``/``production.ini``, SQLite and local storage in a temporary
directory, its single-PUT limit raised above the raw file's size), it measures:

* **raw**: one ``PUT`` of a ``--raw-size`` file streamed from disk with ``http.client``, and one
  ``GET`` of it written to disk — no hashing on the client, no parallelism;
* **push**: ``Client.push`` of ``--size`` bytes in ``--files`` files (hash locally, upload
  ``--parallel`` files at once, finalize, check the digest), with the hashing and the upload
  phases timed apart;
* **pull**: ``Client.pull`` of that version into an empty directory (parallel downloads to
  ``.part`` files, every sha256 verified, renamed into place);

then the client's rates as a share of the raw ones.  Raw rates are measured before and after
the client's run, and the better of the two is the reference.  On a shared machine, where a
single transfer's rate varies several times over from one second to the next, ``--repeat N``
pulls N times with a raw GET between each two, and compares the best of each.

Each raw GET and each pull also records the CPU time (user + system) it cost this process and
the server's, per MiB, and the run measures sha256 alone on this CPU.  A verified pull does at
least what a raw GET does plus hashing every byte, so with client and server sharing the
machine's cores a pull cannot move more than ``cores * 1000 / (raw GET client + sha256 + raw
GET server)`` MiB/s, each term in ms of CPU per MiB (the raw GETs' least).  The output prints
that ceiling beside the raw GET, so a pull's share of the raw rate can be read against the
most this machine allows.

Usage::

    .venv/bin/python bench/client.py                      # 2 GiB in 20 files
    .venv/bin/python bench/client.py --size 512MiB --workdir /work/tmp-bench

On a virtual machine, the first write into guest memory the kernel has never used costs far
more than a write into memory it used before (1 to 2 ms of system time per MiB here against
0.2), so whichever phase first grows the page cache looks slow.  ``--warm-memory SIZE``
touches and frees that much anonymous memory before anything is measured, so that every
phase writes into memory the kernel has used: the figures then compare the software, not
the hypervisor.

If the disk holding ``--workdir`` has less than four times ``--size`` free (the model, its
blobs, the pulled copy, the raw file), the size is scaled down and the output says so.
Everything is created under a temporary directory and deleted at the end.  This prints
figures; it is not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import mmap
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifacts import SERVER_SETTINGS, parse_size, rate
from compare import tree_usage

from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer
from modelreg_client import Client, Progress

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = MiB
#: The raw file of each round of :func:`measure_raw`.
RAW_PATH = "/api/v1/models/raw-{}/versions/1/files/raw.bin"


class Phases(Progress):
    """Times each phase of a transfer (from ``begin`` to ``end``)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, kind: str, files: int, total: int) -> None:
        with self._lock:
            self.started[kind] = time.perf_counter()

    def end(self, kind: str) -> None:
        with self._lock:
            self.seconds[kind] = time.perf_counter() - self.started[kind]


def write_model(directory: Path, size: int, files: int) -> None:
    """``files`` files of random bytes, ``size`` in all, in a few nested directories."""
    each = size // files
    block = os.urandom(BLOCK)
    for i in range(files):
        path = directory / f"shard-{i // 5}" / f"part-{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            remaining = each if i < files - 1 else size - each * (files - 1)
            # A fresh random prefix per file, so every file has its own digest.
            out.write(os.urandom(min(4096, remaining)))
            remaining -= min(4096, remaining)
            while remaining:
                piece = block[:min(BLOCK, remaining)]
                out.write(piece)
                remaining -= len(piece)


def touch_memory(size: int) -> None:
    """Write to ``size`` bytes of anonymous memory, then free it (see ``--warm-memory``)."""
    block = b"\1" * MiB
    with mmap.mmap(-1, size) as memory:
        for offset in range(0, size, MiB):
            end = min(offset + MiB, size)
            memory[offset:end] = block[:end - offset]


def raw_put(port: int, path: str, source: Path) -> float:
    """Seconds of one PUT of ``source``, streamed from disk."""
    size = source.stat().st_size
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=BLOCK)
    try:
        start = time.perf_counter()
        with open(source, "rb") as body:
            conn.request("PUT", path, body=body, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(size)})
            response = conn.getresponse()
            data = response.read()
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"raw PUT: {response.status} {data[:300]!r}")
    return seconds


def raw_get(port: int, path: str, target: Path) -> float:
    """Seconds of one GET written to ``target``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"raw GET: {response.status} {response.read()[:300]!r}")
        with open(target, "wb") as out:
            while block := response.read(BLOCK):
                out.write(block)
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    target.unlink()
    return seconds


class Cpu:
    """CPU time of this process and of the server per MiB, for each measured block."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        #: Milliseconds of CPU per MiB, one triple per measured block: this process's user
        #: and system time, the server's user + system time.
        self.samples: list[tuple[float, float, float]] = []

    def measure(self, nbytes: int, function: Any) -> Any:
        """Run ``function()`` and record its CPU time (both processes) for ``nbytes``."""
        before, server = os.times(), tree_usage(self.server_pid)[0]
        try:
            return function()
        finally:
            after, per_mib = os.times(), 1000 / (nbytes / MiB)
            self.samples.append(((after.user - before.user) * per_mib,
                                 (after.system - before.system) * per_mib,
                                 (tree_usage(self.server_pid)[0] - server) * per_mib))

    def least(self) -> tuple[float, float]:
        """The fewest milliseconds of CPU per MiB of any sample: (client, server)."""
        return (min(u + s for u, s, _ in self.samples), min(s for *_, s in self.samples))


def sha256_cost(size: int = 256 * MiB) -> float:
    """Milliseconds of CPU per MiB that hashlib's sha256 takes on this machine."""
    block = os.urandom(BLOCK)
    digest = hashlib.sha256()
    start = time.process_time()
    for _ in range(size // BLOCK):
        digest.update(block)
    return 1000 * (time.process_time() - start) / (size / MiB)


def json_call(port: int, method: str, path: str, body: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
    finally:
        conn.close()


def measure_raw(server: LiveServer, work: Path, source: Path, round_: int,
                cpu: Cpu) -> tuple[float, float]:
    """Raw upload and download rates (MiB/s) of ``source`` through a fresh draft; the
    download's CPU time goes to ``cpu``."""
    size = source.stat().st_size
    model = f"raw-{round_}"
    api = "/api/v1/models"
    json_call(server.port, "POST", api, {"name": model})
    json_call(server.port, "POST", f"{api}/{model}/versions", {})
    path = RAW_PATH.format(round_)
    up = raw_put(server.port, path, source)
    down = cpu.measure(size, lambda: raw_get(server.port, path, work / "raw-download.bin"))
    return rate(size, up), rate(size, down)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=2 * GiB,
                        help="bytes of the model (default 2GiB)")
    parser.add_argument("--files", type=int, default=20, help="files in the model")
    parser.add_argument("--raw-size", type=parse_size, default=1 * GiB,
                        help="bytes of the raw single-file PUT/GET (default 1GiB)")
    parser.add_argument("--parallel", type=int, default=4, help="client transfers at once")
    parser.add_argument("--threads", type=int, default=8, help="Waitress threads")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeat", type=int, default=1,
                        help="pulls (with a raw GET between each two); the best counts")
    parser.add_argument("--buffered-pulls", action="store_true",
                        help="pull through the page cache (Client(direct_writes=False))")
    parser.add_argument("--warm-memory", type=parse_size, default=0,
                        help="touch and free this much memory before measuring (default 0)")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.workdir).free
    size, raw_size = args.size, min(args.raw_size, args.size)
    needed = 4 * size + raw_size
    if needed > free * 0.8:
        scale = free * 0.8 / needed
        size, raw_size = int(size * scale), int(raw_size * scale)
        print(f"NOTE: only {free / GiB:.1f} GiB free under {args.workdir}: scaled the model "
              f"down to {size / MiB:.0f} MiB and the raw file to {raw_size / MiB:.0f} MiB")

    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-client-", dir=args.workdir))
    database = TestDatabase.create("sqlite")
    try:
        model_dir, raw_file = work / "model", work / "raw.bin"
        print(f"writing a {size / MiB:.0f} MiB model in {args.files} files and a "
              f"{raw_size / MiB:.0f} MiB raw file under {work} …")
        write_model(model_dir, size, args.files)
        write_model(work / "raw", raw_size, 1)
        next((work / "raw").rglob("*.bin")).rename(raw_file)
        if args.warm_memory:
            print(f"touching {args.warm_memory / MiB:.0f} MiB of memory …")
            touch_memory(args.warm_memory)
        settings = {
            "sqlalchemy.url": database.url,
            "modelreg.storage": "local",
            "modelreg.storage.local.path": str(work / "blobs"),
            "modelreg.auth.anonymous": "write",
            "modelreg.upload.max_put_size": str(max(raw_size, 256 * MiB) + MiB),
            # Transfers only: without a worker, scanners would keep the version validating.
            "modelreg.plugins.disabled": "scan webhooks",
        }
        sha256_ms = sha256_cost()
        with LiveServer(settings, threads=args.threads,
                        server_settings=SERVER_SETTINGS) as server:
            raw_cpu, pull_cpu = Cpu(server.process.pid), Cpu(server.process.pid)
            raw = [measure_raw(server, work, raw_file, 1, raw_cpu)]
            with Client(server.url, parallel=args.parallel, state_dir=work / "state",
                        direct_writes=not args.buffered_pulls) as client:
                pushing = Phases()
                start = time.perf_counter()
                pushed = client.push(model_dir, "bench", progress=pushing)
                push_seconds = time.perf_counter() - start
                pulls, raw_gets = [], []
                for attempt in range(args.repeat):
                    if attempt:  # the raw GET again between pulls, under the same load
                        shutil.rmtree(work / "pulled")
                        seconds = raw_cpu.measure(raw_size, lambda: raw_get(
                            server.port, RAW_PATH.format(1), work / "raw-download.bin"))
                        raw_gets.append(rate(raw_size, seconds))
                    start = time.perf_counter()
                    pulled = pull_cpu.measure(size, lambda: client.pull(
                        "bench/1", work / "pulled", progress=Phases()))
                    pulls.append(time.perf_counter() - start)
                    assert pulled.downloaded_bytes == size
                pull_seconds = min(pulls)
            raw.append(measure_raw(server, work, raw_file, 2, raw_cpu))
        assert pushed.uploaded_bytes == size
        raw_up, raw_down = max(r[0] for r in raw), max([r[1] for r in raw] + raw_gets)
        upload = rate(size, pushing.seconds["upload"])
        download = rate(size, pull_seconds)
        cores = os.cpu_count() or 1
        raw_client_ms, raw_server_ms = raw_cpu.least()
        best = pulls.index(pull_seconds)
        pull_user_ms, pull_system_ms, pull_server_ms = pull_cpu.samples[best]
        ceiling = cores * 1000 / (raw_client_ms + sha256_ms + raw_server_ms)
        print()
        print(f"model: {size / MiB:.0f} MiB in {args.files} files; client parallel="
              f"{args.parallel}; Waitress threads={args.threads}; {cores} CPUs")
        print(f"raw single-file PUT  {raw_size / MiB:6.0f} MiB: "
              + ", ".join(f"{r[0]:7.1f}" for r in raw) + " MiB/s")
        print(f"raw single-file GET  {raw_size / MiB:6.0f} MiB: "
              + ", ".join(f"{r:7.1f}" for r in [raw[0][1], *raw_gets, raw[1][1]]) + " MiB/s")
        if len(pulls) > 1:
            print("pulls                          : "
                  + ", ".join(f"{rate(size, seconds):7.1f}" for seconds in pulls) + " MiB/s")
        print(f"push (whole call)              : {rate(size, push_seconds):7.1f} MiB/s "
              f"({push_seconds:.1f} s: hashing {pushing.seconds['hash']:.1f} s, uploading "
              f"{pushing.seconds['upload']:.1f} s, finalize and checks the rest)")
        print(f"push, upload phase             : {upload:7.1f} MiB/s = "
              f"{100 * upload / raw_up:.0f}% of raw PUT")
        print(f"pull (whole call, verified)    : {download:7.1f} MiB/s = "
              f"{100 * download / raw_down:.0f}% of raw GET ({pull_seconds:.1f} s)")
        print(f"push including local hashing   : {100 * rate(size, push_seconds) / raw_up:.0f}%"
              " of raw PUT")
        print()
        print("CPU per MiB (user + system)    :   client   server")
        print(f"  raw GET (least of {len(raw_cpu.samples)})         : {raw_client_ms:6.2f}   "
              f"{raw_server_ms:6.2f} ms")
        print(f"  pull (the fastest)           : {pull_user_ms + pull_system_ms:6.2f}   "
              f"{pull_server_ms:6.2f} ms (client user {pull_user_ms:.2f}, system "
              f"{pull_system_ms:.2f}; every pull's client/server: " + ", ".join(
                  f"{u + s:.2f}/{srv:.2f}" for u, s, srv in pull_cpu.samples) + ")")
        print(f"  sha256 alone (hashlib)       : {sha256_ms:6.2f} ms")
        print(f"ceiling of a verified pull on {cores} CPUs: {cores} x 1000 / (raw GET client + "
              f"sha256 + raw GET server) = {ceiling:.0f} MiB/s = "
              f"{100 * ceiling / raw_down:.0f}% of the best raw GET; the fastest pull reached "
              f"{100 * download / ceiling:.0f}% of it")
    finally:
        database.drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
