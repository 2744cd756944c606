"""The scanner against the real loaders on mutated files: every global that ``pickle.load``
(pickle after pickle, as torch reads legacy files) or ``joblib.load`` asks ``find_class`` for
must be reported by the scanner, or the file rejected as malformed or unsupported.

The loaders run in a throwaway subprocess under an address-space limit, with an audit hook
that stops each load at its first ``pickle.find_class`` event (CPython raises it in both
unpicklers before importing), so nothing a mutated payload names is ever imported; the
scanner runs there too, after them, under the same limit as in production.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import random
import subprocess
import sys

import joblib
import numpy as np
import scan_samples as s
import torch_format as torch

HARNESS = r"""
import base64, io, json, os, pickle, resource, sys, warnings
warnings.simplefilter("ignore")
import joblib, numpy
from modelreg_scan.pickles import could_be_module, is_allowed, scan_if_pickle
from modelreg_scan.unpickle import effective

resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

class Stop(Exception):
    pass

calls = []

def hook(event, args):
    if event == "pickle.find_class":
        calls.append(tuple(args[:2]))
        raise Stop

class Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        return None

sys.addaudithook(hook)
path = os.path.join(sys.argv[1], "blob")  # the test's own directory
misses = []
for blob in json.load(sys.stdin):
    data = base64.b64decode(blob)
    calls.clear()
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):
            Unpickler(stream).load()
    except BaseException:
        pass
    with open(path, "wb") as out:
        out.write(data)
    try:
        joblib.load(path)
    except BaseException:
        pass
    wanted = {(m, n) for m, n in calls if could_be_module(effective(m, n, None)[0])
              and not (is_allowed(m, n) and is_allowed(*effective(m, n, None)))}
    if not wanted:
        continue
    try:
        found = scan_if_pickle(io.BytesIO(data), size=len(data))
    except MemoryError:
        continue  # ScanFailed in production: rejected
    if found is None:
        misses.append([blob, "no pickle", sorted(wanted)])
        continue
    codes = {f["code"] for f in found}
    if codes & {"pickle_malformed", "pickle_unsupported"}:
        continue
    named = {(f["details"].get("module"), f["details"].get("name")) for f in found}
    for module, name in wanted:
        if (module, name) not in named and effective(module, name, None) not in named:
            misses.append([blob, "missed", [module, name]])
print(json.dumps(misses))
"""


class Touch:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


def bases() -> list[bytes]:
    """Files that run code or read arrays, to mutate."""
    files = [s.call_v0("os", "system", "true"), s.call_protocol2("os", "system", "true"),
             s.call_stack_global("os", "system", "true"),
             s.call_stack_global_from_memo("os", "system", "true"),
             b"I0x1\n0" + s.call_v0("os", "system", "true"),
             s.clean_pickle(2) + s.call_v0("os", "system", "true")]
    files += [pickle.dumps([1, {"a": Touch()}, 2.5], protocol=p) for p in range(6)]
    for obj in [{"w": np.arange(6.0), "e": Touch()},
                [np.array([1, "x"], dtype=object), Touch()]]:
        buffer = io.BytesIO()
        joblib.dump(obj, buffer)
        files.append(buffer.getvalue())
    parts = torch.legacy_pickles(torch.example_state())
    parts[3] = s.call_v0("os", "system", "true")
    files.append(b"".join(parts) + torch.legacy_storages(torch.example_state()))
    return files


def mutate(rng: random.Random, data: bytes) -> bytes:
    blob = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        where, choice = rng.randrange(len(blob)), rng.random()
        if choice < 0.5:
            blob[where] = rng.randrange(256)
        elif choice < 0.75:
            blob.insert(where, rng.randrange(256))
        elif len(blob) > 3:
            del blob[where]
    return bytes(blob)


def test_every_global_a_real_loader_asks_for_in_mutated_files_is_reported(tmp_path):
    rng = random.Random(2026)  # noqa: S311 - reproducible data, not secrets
    originals = bases()
    blobs = [base64.b64encode(mutate(rng, rng.choice(originals))).decode()
             for _ in range(400)]
    done = subprocess.run([sys.executable, "-c", HARNESS, str(tmp_path)],  # noqa: S603
                          input=json.dumps(blobs), capture_output=True, text=True,
                          timeout=300, check=True)
    assert json.loads(done.stdout) == []
