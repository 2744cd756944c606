"""Whole-call push benchmark: ``Client.push`` of one file to a fresh local server, timed from
the call to its return (hashing included), with the CPU the client and the server spent.

``--client-src DIR`` imports ``modelreg_client`` from another checkout's ``client/src``
(e.g. ``git archive REV client/src | tar -x -C DIR``), so that two clients can be compared
in alternating processes against the same server code::

    for i in 1 2 3; do
        .venv/bin/python bench/push.py --client-src /tmp/before/client/src
        .venv/bin/python bench/push.py
    done

The server is a :class:`modelreg.testing.server.LiveServer` (Waitress with
``production.ini``'s transfer settings, SQLite, local storage, scan and webhooks off); each
round pushes new bytes to a new model.  This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--client-src", type=Path, default=None,
                    help="the client/src directory to import modelreg_client from")
parser.add_argument("--size", default="1GiB", help="the file's size (1GiB)")
parser.add_argument("--rounds", type=int, default=1)
args = parser.parse_args()
if args.client_src is not None:
    sys.path.insert(0, str(args.client_src.resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifacts import SERVER_SETTINGS, parse_size  # noqa: E402

from modelreg.testing import TestDatabase  # noqa: E402
from modelreg.testing.server import LiveServer  # noqa: E402
from modelreg_client import Client  # noqa: E402

MiB = 1024 * 1024


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    import modelreg_client

    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-push-"))
    database = TestDatabase.create("sqlite")
    try:
        model = work / "model"
        model.mkdir()
        block = os.urandom(MiB)
        with open(model / "weights.bin", "wb") as out:
            for start in range(0, size, MiB):
                out.write(block[:min(MiB, size - start)])
        settings = {"sqlalchemy.url": database.url, "modelreg.storage": "local",
                    "modelreg.storage.local.path": str(work / "blobs"),
                    "modelreg.auth.anonymous": "write",
                    "modelreg.plugins.disabled": "scan webhooks"}
        print(f"client: {Path(modelreg_client.__file__).parent}")
        with LiveServer(settings, threads=8, server_settings=SERVER_SETTINGS) as server:
            pid = server.process.pid
            for round_ in range(1, args.rounds + 1):
                with open(model / "weights.bin", "r+b") as out:
                    out.write(os.urandom(4096))  # new bytes: nothing to add by digest
                server0, client0 = process_cpu(pid), time.process_time()
                began = time.perf_counter()
                with Client(server.url, state_dir=work / "state",
                            cache_dir=work / "cache") as client:
                    client.push(model, f"push-{round_}")
                seconds = time.perf_counter() - began
                print(f"round {round_}: {size / MiB / seconds:.0f} MiB/s, client CPU "
                      f"{time.process_time() - client0:.2f} s, server CPU "
                      f"{process_cpu(pid) - server0:.2f} s", flush=True)
                shutil.rmtree(work / "blobs" / "blobs", ignore_errors=True)
    finally:
        database.drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
