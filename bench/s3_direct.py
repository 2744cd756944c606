"""Direct uploads to S3: the app's CPU per GiB pushed through the app, and pushed direct.

Starts moto's S3 server (:class:`modelreg.testing.s3.S3Server`, the one the tests use) and,
one after the other, two :class:`modelreg.testing.server.LiveServer` processes (Waitress,
SQLite, the embedded worker, ``modelreg.storage = s3``) that differ in one setting:
``modelreg.storage.s3.presigned_uploads``.  Against each, ``Client.push`` sends a model of one
``--size`` file in parts of ``--part-size`` (the server's single-PUT limit is set to the part
size, so the file goes through an upload session), ``--repeat`` times (a new model and new
content each time); the push returns once the version is ready, so with direct uploads the
worker's reading of the object (to verify its sha256) is included.

It prints, for each mode, the CPU time (user + system) of the app's process tree per GiB
pushed, the requests the app answered, and the wall time.  moto's CPU is not counted (it is
the store, not the app), and neither is the client's.  CPU time, not wall time, is the figure
to compare: it does not depend on what else the shared machine runs.

Usage::

    .venv/bin/python bench/s3_direct.py                  # 128 MiB, parts of 16 MiB, 2 runs
    .venv/bin/python bench/s3_direct.py --size 512MiB --repeat 3
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import urllib.request
from pathlib import Path

from compare import tree_usage  # bench/compare.py: the CPU of a process tree, from /proc

from modelreg.testing import TestDatabase
from modelreg.testing.s3 import S3Server
from modelreg.testing.server import LiveServer
from modelreg_client import Client

MiB = 1024 * 1024
GiB = 1024 * MiB


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(MiB|GiB|)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB)")
    return int(match.group(1)) * {"": 1, "MiB": MiB, "GiB": GiB}[match.group(2)]


def requests_answered(url: str) -> float:
    """The app's ``modelreg_http_requests_total`` (every method and route)."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in
               re.finditer(r"^modelreg_http_requests_total\{[^}]*\} (\S+)$", text, re.M))


def run(mode: str, s3: S3Server, work: Path, model_dir: Path, size: int, part_size: int,
        repeat: int) -> tuple[float, float, float]:
    database = TestDatabase.create("sqlite")
    try:
        settings = {
            "sqlalchemy.url": database.url,
            **s3.settings(prefix=f"bench-{mode}-{os.getpid()}"),
            "modelreg.storage.s3.addressing_style": "path",
            "modelreg.storage.s3.presigned_uploads": "true" if mode == "direct" else "false",
            "modelreg.auth.anonymous": "write",
            "modelreg.worker.embedded": "true",
            "modelreg.worker.poll_interval": "0.1",
            "modelreg.metrics.enabled": "true",
            "modelreg.metrics.public": "true",
            "modelreg.upload.max_put_size": str(part_size),
            "modelreg.plugins.disabled": "scan webhooks",
        }
        with LiveServer(settings, threads=8) as server:
            pid = server.process.pid
            cpu = wall = 0.0
            answered = requests_answered(server.url)
            with Client(server.url, timeout=300, state_dir=work / f"state-{mode}",
                        cache_dir=work / "cache", chunk_size=part_size) as client:
                for index in range(repeat):
                    with open(model_dir / "weights.bin", "r+b") as out:  # new content: no
                        out.write(os.urandom(MiB))  # push may link what the server holds
                    before, began = tree_usage(pid)[0], time.monotonic()
                    client.push(model_dir, f"{mode}-{index}")
                    wall += time.monotonic() - began
                    cpu += tree_usage(pid)[0] - before
            answered = requests_answered(server.url) - answered
    finally:
        database.drop()
    pushed = size * repeat / GiB
    return cpu / pushed, answered / repeat, wall / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=128 * MiB)
    parser.add_argument("--part-size", type=parse_size, default=16 * MiB)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-s3-"))
    model_dir = work / "model"
    model_dir.mkdir()
    with open(model_dir / "weights.bin", "wb") as out:
        for _ in range(args.size // MiB):
            out.write(os.urandom(MiB))
    size = (model_dir / "weights.bin").stat().st_size
    print(f"pushing {size / MiB:.0f} MiB in parts of {args.part_size / MiB:.0f} MiB, "
          f"{args.repeat} times per mode, to moto's S3 server")
    results = {}
    with S3Server() as s3:
        for mode in ("through-app", "direct"):
            results[mode] = run(mode, s3, work, model_dir, size, args.part_size, args.repeat)
    print(f"{'mode':<12} {'app CPU s/GiB':>14} {'requests/push':>14} {'wall s/push':>12}")
    for mode, (cpu, answered, wall) in results.items():
        print(f"{mode:<12} {cpu:>14.2f} {answered:>14.0f} {wall:>12.2f}")
    ratio = results["through-app"][0] / max(results["direct"][0], 1e-9)
    print(f"direct uploads cost the app {ratio:.1f}x less CPU per GiB")


if __name__ == "__main__":
    main()
