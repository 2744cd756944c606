"""Upload benchmark: one large file pushed through the app on local storage, beside this
machine's fsync'd disk write and MLflow's upload of the same size, all in one run.

Each round measures, one after the other (the machine is shared, so rounds alternate and
the ratios of one round are what to quote):

* **disk**: ``dd if=/dev/zero of=… bs=4M conv=fdatasync`` of ``--size`` bytes into the
  directory the blobs go to: the most an upload that keeps its bytes durable can reach;
* **modelreg**: ``Client.push`` of a directory holding one ``--size`` file to a
  :class:`modelreg.testing.server.LiveServer` (Waitress with ``production.ini``'s transfer
  settings, SQLite, local storage), the upload phase timed apart from the client's hashing;
  also the bytes the server process wrote to and read from the block device
  (``/proc/<pid>/io``'s ``write_bytes`` and ``read_bytes``, which do not depend on the
  load) and its CPU time;
* **raw parts**: the same size through the numbered-part protocol with no client work,
  parts streamed from memory ``--parallel`` at once with digests computed beforehand, as
  ``bench/compare.py`` drives MLflow (what the server alone costs); ``--order`` sends them
  in order (the default), in reverse (every part but the first lands beyond the running
  hash) or shuffled (seeded);
* **mlflow** (with ``--mlflow``): one ``PUT`` of the same size to ``mlflow server
  --serve-artifacts`` (MLflow's own upload path: ``mlflow-artifacts``), as
  ``bench/compare.py`` sends it.

Usage::

    .venv/bin/python bench/uploads.py --size 1GiB --repeat 3 --mlflow
    .venv/bin/python bench/uploads.py --no-disk --order reverse --baseline-src DIR

MLflow is installed on first use into ``bench/.mlflow-venv`` (as ``bench/compare.py``
does).  This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifacts import SERVER_SETTINGS, Content, call, parse_size, rate
from client import Phases, touch_memory, write_model
from compare import MlflowServer, ensure_mlflow, put_stream, tree_usage

from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer
from modelreg_client import Client

MiB = 1024 * 1024
GiB = 1024 * MiB


def disk_write(directory: Path, size: int) -> float:
    """MiB/s of ``dd … conv=fdatasync`` of ``size`` bytes into ``directory``."""
    target = directory / "dd.bin"
    start = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=4M",
                    f"count={size // (4 * MiB)}", "conv=fdatasync"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - start
    target.unlink()
    return rate(size, seconds)


def _io_fields(pid: int) -> dict[str, int]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value)
    except (OSError, ValueError):
        return {}
    return fields


def written_bytes(pid: int) -> int:
    """Bytes ``pid`` caused to be written to storage (``/proc/<pid>/io``: ``write_bytes``
    less ``cancelled_write_bytes``, those of files deleted before they reached the disk),
    0 if unknown."""
    fields = _io_fields(pid)
    return fields.get("write_bytes", 0) - fields.get("cancelled_write_bytes", 0)


def read_bytes(pid: int) -> int:
    """Bytes ``pid`` caused to be read from storage (``/proc/<pid>/io``: ``read_bytes``;
    reads served by the page cache are not counted), 0 if unknown."""
    return _io_fields(pid).get("read_bytes", 0)


def part_order(count: int, order: str) -> list[int]:
    """The part numbers 1 to ``count`` in the order ``--order`` names."""
    numbers = list(range(1, count + 1))
    if order == "reverse":
        numbers.reverse()
    elif order == "shuffle":
        random.Random(0).shuffle(numbers)
    return numbers


def modelreg_push(server: LiveServer, model_dir: Path, name: str, work: Path,
                  parallel: int, chunk: int) -> tuple[float, int, float, int]:
    """(MiB/s of the upload phase, bytes the server wrote, server CPU seconds, bytes the
    server read from the disk)."""
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    pid = server.process.pid
    before, cpu, read = written_bytes(pid), tree_usage(pid)[0], read_bytes(pid)
    with Client(server.url, parallel=parallel, chunk_size=chunk,
                state_dir=work / "state", cache_dir=work / "cache") as client:
        phases = Phases()
        client.push(model_dir, name, progress=phases)
    return (rate(size, phases.seconds["upload"]), written_bytes(pid) - before,
            tree_usage(pid)[0] - cpu, read_bytes(pid) - read)


def part_digests(content: Content, part_size: int) -> list[str]:
    """The sha256 of each part of ``content`` (computed before anything is timed)."""
    digests = []
    for start in range(0, content.size, part_size):
        digest = hashlib.sha256()
        for piece in content.chunks(start, min(start + part_size, content.size)):
            digest.update(piece)
        digests.append(digest.hexdigest())
    return digests


def modelreg_parts(server: LiveServer, content: Content, digests: list[str], name: str,
                   part_size: int, parallel: int, order: str = "in",
                   ) -> tuple[float, int, float, int]:
    """The raw protocol, as ``bench/compare.py`` drives MLflow: a session in numbered parts,
    ``parallel`` parts at once in ``order`` (see :func:`part_order`), each streamed from
    memory with its digest (computed beforehand), then completion.  (MiB/s, bytes the
    server wrote, server CPU seconds, bytes the server read from the disk)."""
    port, pid = server.port, server.process.pid
    call(port, "POST", "/api/v1/models", json.dumps({"name": name}),
         {"Content-Type": "application/json"}, expect=(201,))
    call(port, "POST", f"/api/v1/models/{name}/versions", "{}",
         {"Content-Type": "application/json"}, expect=(201,))
    before, cpu, read = written_bytes(pid), tree_usage(pid)[0], read_bytes(pid)
    start = time.perf_counter()
    _, body, _ = call(port, "POST", f"/api/v1/models/{name}/versions/1/uploads",
                      json.dumps({"path": "blob.bin", "size": content.size,
                                  "part_size": part_size}),
                      {"Content-Type": "application/json"}, expect=(201,))
    location = json.loads(body)["location"]

    def send(number: int) -> None:
        first = (number - 1) * part_size
        put_stream(port, f"{location}/parts/{number}?digest=sha256:{digests[number - 1]}",
                   content, first, min(first + part_size, content.size), expect=(201,))

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(send, part_order(len(digests), order)))
    put_stream(port, f"{location}?digest=sha256:{content.sha256}", Content(0),
               expect=(201,))
    seconds = time.perf_counter() - start
    return (rate(content.size, seconds), written_bytes(pid) - before,
            tree_usage(pid)[0] - cpu, read_bytes(pid) - read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=GiB)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4, help="client parts at once")
    parser.add_argument("--chunk", type=parse_size, default=64 * MiB, help="part size")
    parser.add_argument("--threads", type=int, default=8, help="Waitress threads")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--mlflow", action="store_true", help="also MLflow's upload")
    parser.add_argument("--recv-bytes", type=parse_size, default=None,
                        help="Waitress's recv_bytes (default: production.ini's)")
    parser.add_argument("--order", choices=("in", "reverse", "shuffle"), default="in",
                        help="the order the raw parts are sent in (shuffle: seeded)")
    parser.add_argument("--warm-memory", type=parse_size, default=0,
                        help="touch and free this much memory first (see bench/client.py): "
                             "else whichever server first grows the page cache (Waitress's "
                             "spools) pays the hypervisor for fresh memory")
    parser.add_argument("--no-disk", action="store_true",
                        help="skip the dd of each round (it only loads the disk)")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="also push (and send the raw parts) to a server running the "
                             "modelreg package of this src/ directory (e.g. "
                             "`git archive main src | tar -x -C DIR`)")
    args = parser.parse_args()

    if args.warm_memory:
        touch_memory(args.warm_memory)
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-uploads-", dir=args.workdir))
    baseline: LiveServer | None = None
    database = TestDatabase.create("sqlite")
    mlflow = None
    try:
        model_dir = work / "model"
        write_model(model_dir, args.size, 1)
        settings = {
            "sqlalchemy.url": database.url,
            "modelreg.storage": "local",
            "modelreg.storage.local.path": str(work / "blobs"),
            "modelreg.auth.anonymous": "write",
            "modelreg.plugins.disabled": "scan webhooks",
        }
        content = Content(args.size)
        digests = part_digests(content, args.chunk)
        if args.mlflow:
            ensure_mlflow()
            mlflow = MlflowServer(work / "mlflow")
            mlflow.start()
        rows = []

        if args.baseline_src is not None:
            baseline = LiveServer({**settings, "modelreg.storage.local.path":
                                   str(work / "base-blobs")}, threads=args.threads,
                                  server_settings=SERVER_SETTINGS,
                                  environ={"PYTHONPATH": str(args.baseline_src.resolve())})
            baseline.__enter__()
        server_settings = dict(SERVER_SETTINGS)
        if args.recv_bytes:
            server_settings["recv_bytes"] = str(args.recv_bytes)
        with LiveServer(settings, threads=args.threads,
                        server_settings=server_settings) as server:
            for round_ in range(1, args.repeat + 1):
                base = base_raw = None
                if baseline is not None:
                    with open(next(model_dir.rglob("*.bin")), "r+b") as file:
                        file.write(os.urandom(4096))
                    base = modelreg_push(baseline, model_dir, f"bench-{round_}", work,
                                         args.parallel, args.chunk)
                    shutil.rmtree(work / "base-blobs" / "blobs", ignore_errors=True)
                    base_raw = modelreg_parts(baseline, content, digests, f"base-raw-{round_}",
                                              args.chunk, args.parallel, args.order)
                    shutil.rmtree(work / "base-blobs" / "blobs", ignore_errors=True)
                disk = None if args.no_disk else disk_write(work, args.size)
                # A fresh file each round (else the push finds the blob already there).
                with open(next(model_dir.rglob("*.bin")), "r+b") as file:
                    file.write(os.urandom(4096))
                ours, wrote, cpu, read = modelreg_push(server, model_dir, f"bench-{round_}",
                                                       work, args.parallel, args.chunk)
                shutil.rmtree(work / "blobs" / "blobs", ignore_errors=True)
                raw = modelreg_parts(server, content, digests, f"raw-{round_}", args.chunk,
                                     args.parallel, args.order)
                theirs = None
                if mlflow is not None:
                    start = time.perf_counter()
                    put_stream(mlflow.port, "/api/2.0/mlflow-artifacts/artifacts/bench/"
                               f"{round_}/blob.bin", content)
                    theirs = rate(args.size, time.perf_counter() - start)
                rows.append((disk, ours, theirs, wrote, cpu, read, base, raw, base_raw))
                shutil.rmtree(work / "blobs" / "blobs", ignore_errors=True)
        print(f"\n{args.size / MiB:.0f} MiB, client parallel={args.parallel}, part size "
              f"{args.chunk / MiB:.0f} MiB, Waitress threads={args.threads}, raw parts "
              f"in {args.order} order")
        print("round   dd fdatasync   modelreg   mlflow   modelreg/dd   modelreg/mlflow   "
              "server wrote   server read   server CPU")

        def of_dd(speed: float, disk: float | None) -> str:
            return f"{100 * speed / disk:.0f}% of dd, " if disk else ""

        for i, (disk, ours, theirs, wrote, cpu, read, base, raw, base_raw) in enumerate(
                rows, start=1):
            versus = f"{ours / theirs:14.2f}x" if theirs else f"{'-':>15}"
            mlf = f"{theirs:8.1f}" if theirs else f"{'-':>8}"
            dd = f"{disk:8.1f} MiB/s" if disk else f"{'-':>14}"
            share = f"{100 * ours / disk:9.0f}%" if disk else f"{'-':>10}"
            print(f"{i:5}   {dd} {ours:8.1f} {mlf}   {share}   {versus}   "
                  f"{wrote / MiB:8.0f} MiB   {read / MiB:7.0f} MiB   {cpu:6.2f} s")
            versus = f" = {raw[0] / theirs:.2f}x MLflow" if theirs else ""
            print(f"{'':5}   raw parts from memory: {raw[0]:8.1f} MiB/s = "
                  f"{of_dd(raw[0], disk)}wrote {raw[1] / MiB:.0f} MiB, read "
                  f"{raw[3] / MiB:.0f} MiB, CPU {raw[2]:.2f} s{versus}")
            if base is not None:
                print(f"{'':5}   baseline server, push: {base[0]:8.1f} MiB/s = "
                      f"{of_dd(base[0], disk)}wrote {base[1] / MiB:.0f} MiB, read "
                      f"{base[3] / MiB:.0f} MiB, CPU {base[2]:.2f} s")
            if base_raw is not None:
                print(f"{'':5}   baseline server, raw parts: {base_raw[0]:8.1f} MiB/s = "
                      f"{of_dd(base_raw[0], disk)}wrote {base_raw[1] / MiB:.0f} MiB, read "
                      f"{base_raw[3] / MiB:.0f} MiB, CPU {base_raw[2]:.2f} s")
    finally:
        if baseline is not None:
            baseline.__exit__(None, None, None)
        if mlflow is not None:
            mlflow.stop()
        database.drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
