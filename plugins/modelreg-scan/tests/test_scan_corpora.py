"""Both directions through the real app: files that run code in a real loader are rejected,
files that real frameworks write and that run nothing become ``ready``.

Corpus 1 (bypasses): every sample is first loaded by its real loader -- ``pickle.load``,
``np.load(allow_pickle=True)``, ``joblib.load`` -- in one throwaway subprocess, and must
touch its marker file there (its harmless payload: ``os.system('touch ...')`` or
``builtins.exec``); then all are uploaded into one version of the real app with the scanner
plugin and its embedded worker, and the version must end ``rejected`` with, for every file,
a finding naming the global that ran.

Corpus 2 (harmless): numeric ``.npy``/``.npz``, joblib arrays under every compressor,
safetensors, and torch zip and legacy checkpoints of plain tensors (torch_format.py writes
them as torch does) must end ``ready``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import joblib
import numpy as np
import pytest
import scan_samples as s
import torch_format as torch
import webtest

from modelreg.testing import CORE_PLUGINS, clear_database, make_app

API = "/api/v1"
MODEL = "corpus"
JOBLIB_COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]


@pytest.fixture(scope="module")
def app(modelreg_database, tmp_path_factory) -> Iterator[webtest.TestApp]:
    wsgi = make_app({
        "sqlalchemy.url": modelreg_database.url,
        "retry.attempts": "3",
        "modelreg.auth.anonymous": "write",
        "modelreg.storage.local.path": str(tmp_path_factory.mktemp("corpus-blobs")),
        "modelreg.worker.embedded": "true",
        "modelreg.worker.poll_interval": "0.05",
        # the operator allows every plain name of module "pkg"; pkg + "os.system" must
        # still be refused
        "modelreg.scan.allow_globals": "pkg.*",
    }, plugins=(*CORE_PLUGINS, "modelreg_scan.plugin"))
    try:
        yield webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    finally:
        wsgi.registry["modelreg.worker"].stop()
        clear_database(wsgi.registry["db_engine"])
        wsgi.registry["db_engine"].dispose()


def finalize_and_wait(app: webtest.TestApp, files: dict[str, bytes]) -> dict[str, Any]:
    """Upload ``files`` into a new version, finalize it, and wait for the embedded worker's
    verdict; the version's JSON with its findings under ``"findings"``."""
    if app.get(f"{API}/models/{MODEL}", expect_errors=True).status_int == 404:
        app.post_json(f"{API}/models", {"name": MODEL}, status=201)
    number = app.post_json(f"{API}/models/{MODEL}/versions", {}, status=201).json["number"]
    for path, data in files.items():
        app.put(f"{API}/models/{MODEL}/versions/{number}/files/{path}", data,
                headers={"Content-Type": "application/octet-stream"}, status=201)
    app.post(f"{API}/models/{MODEL}/versions/{number}/finalize", status=202)
    deadline = time.monotonic() + 120
    while True:
        version = app.get(f"{API}/models/{MODEL}/versions/{number}").json
        if version["status"] != "validating" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    version["findings"] = app.get(
        f"{API}/models/{MODEL}/versions/{number}/findings").json["findings"]
    return version


# ------------------------------------------------------------------ corpus 1: bypasses


class Touch:
    """Pickles as ``os.system("touch <marker>")`` (``posix.system`` on Linux)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def v0_system(marker: str) -> bytes:
    """A protocol 0 pickle, no PROTO header: ``os.system("touch <marker>")``."""
    return s.call_v0("os", "system", f"touch {marker}")


def bypasses(markers: str, package_root: str) -> dict[str, tuple[str, bytes, set]]:
    """name -> (loader, file bytes, the globals a finding may name)."""
    system = {("os", "system"), ("posix", "system")}

    def m(name: str) -> str:
        return os.path.join(markers, name)

    samples: dict[str, tuple[str, bytes, set]] = {}
    for prefix, label in [(b"I0x1\n0", "int-hex"), (b"L0x1L\n0", "long-hex"),
                          (b"I0b1\n0", "int-bin"), (b"I017\n0", "int-octal"),
                          (b"I5\x00x\n0", "int-nul")]:
        samples[f"base0-{label}.pkl"] = ("pickles", prefix + v0_system(m(f"base0-{label}")),
                                         system)
    payload = b"I0x1\n0" + v0_system(m("base0-torchzip"))
    samples["base0-torchzip.pt"] = ("torchzip", torch.zip_checkpoint(
        torch.example_state(), data_pkl=payload), system)
    samples["base0-tar.tar"] = ("tar", s.tar_bytes([(s.tar_member(
        "model/data.pkl"), b"I0x1\n0" + v0_system(m("base0-tar")))]), system)
    samples["base0-gzip.pkl.gz"] = ("gzip", gzip.compress(
        b"I0b1\n0" + v0_system(m("base0-gzip"))), system)
    samples["second-pickle.pkl"] = ("pickles", s.clean_pickle(4) + v0_system(
        m("second-pickle")), system)
    for index in range(5):
        parts = torch.legacy_pickles(torch.example_state())
        parts[index] = v0_system(m(f"torch-legacy-{index}"))
        samples[f"torch-legacy-{index}.pt"] = (
            "pickles", b"".join(parts) + torch.legacy_storages(torch.example_state()), system)
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, Touch(m("npy-object"))], dtype=object), allow_pickle=True)
    samples["npy-object.npy"] = ("npy", buffer.getvalue(), system)
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.arange(4.0),
             objects=np.array([Touch(m("npz-object"))], dtype=object))
    samples["npz-object.npz"] = ("npz", buffer.getvalue(), system)
    for compressor in [None, *JOBLIB_COMPRESSORS]:
        name = f"joblib-{compressor or 'raw'}"
        buffer = io.BytesIO()
        joblib.dump({"weights": np.arange(64.0).reshape(8, 8), "hook": Touch(m(name))},
                    buffer, compress=(compressor, 3) if compressor else 0)
        samples[f"{name}.joblib"] = ("joblib", buffer.getvalue(), system)
    samples["dotted-pkg.pkl"] = ("pickles", s.call_stack_global(
        "pkg", "os.system", f"touch {m('dotted-pkg')}"), {("pkg", "os.system")})
    # the earlier bypasses (test_scan_pickles.py)
    samples["no-proto-stack-global.pkl"] = ("pickles", s.call_stack_global(
        "os", "system", f"touch {m('no-proto-stack-global')}")[2:], system)
    samples["memo-stack-global.pkl"] = ("pickles", s.call_stack_global_from_memo(
        "os", "system", f"touch {m('memo-stack-global')}"), system)
    samples["builtins-exec.pkl"] = ("pickles", s.call_protocol2(
        "builtins", "exec", f"open({m('builtins-exec')!r}, 'w').close()"),
        {("builtins", "exec")})
    samples["inst.pkl"] = ("pickles", b"(S'touch " + m("inst").encode()
                           + b"'\nios\nsystem\n.", system)
    samples["in-zip.zip"] = ("zip", _zip({"weights.bin": pickle.dumps(
        Touch(m("in-zip")), protocol=5)}), system)
    samples["joblib-decoy.pkl"] = ("pickles", joblib_decoy(b"cevilpkg\nrun\n)R0"),
                                   {("evilpkg", "run")})
    samples["several-legacy.pkl"] = ("pickles", s.clean_pickle(2) + s.clean_pickle(2)
                                     + v0_system(m("several-legacy")) + b"\x00raw", system)
    return samples


def joblib_decoy(raw: bytes) -> bytes:
    """A joblib file of one uint8 array whose bytes are ``raw``: joblib.load reads them as
    the array, pickle.load as opcodes."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    wrapper = NumpyArrayWrapper(np.ndarray, (len(raw),), "C", np.dtype("u1"),
                                numpy_array_alignment_bytes=None)
    data = pickle.dumps([wrapper], protocol=2)
    assert data.endswith(b"ba.")
    return data[:-2] + raw + data[-2:]


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


#: Loads each file as its loader would, in a throwaway process; never in the test's.
LOADER = r"""
import gzip, io, json, pickle, sys, tarfile, zipfile
import joblib, numpy as np

class Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):  # torch.load resolves storages; nothing to run here
        return None

def pickles(f):  # pickle.load until the stream ends: torch.load reads five in a row
    while f.peek(1) if hasattr(f, "peek") else True:
        Unpickler(f).load()

def run(loader, path):
    if loader == "pickles":
        with open(path, "rb") as f:
            pickles(f)
    elif loader == "gzip":
        with gzip.open(path) as f:
            pickle.load(f)
    elif loader == "tar":
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                Unpickler(tar.extractfile(member)).load()
    elif loader in ("torchzip", "zip"):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if loader == "zip" or name.endswith("data.pkl"):
                    Unpickler(io.BytesIO(archive.read(name))).load()
    elif loader == "npy":
        np.load(path, allow_pickle=True)
    elif loader == "npz":
        with np.load(path, allow_pickle=True) as files:
            for name in files.files:
                files[name]
    elif loader == "joblib":
        joblib.load(path)

sys.path.insert(0, sys.argv[2])
for loader, path in json.load(open(sys.argv[1])):
    try:
        run(loader, path)
    except BaseException:
        pass
"""


def test_bypasses_run_code_in_real_loaders_and_are_rejected_at_finalize(app, tmp_path):
    markers, files = tmp_path / "markers", tmp_path / "files"
    markers.mkdir()
    files.mkdir()
    package = tmp_path / "packages" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import os  # an ordinary module importing os\n")
    # a module installed where the file is loaded, whose function does something
    (tmp_path / "packages" / "evilpkg").mkdir()
    (tmp_path / "packages" / "evilpkg" / "__init__.py").write_text(
        f"def run():\n    open({str(markers / 'joblib-decoy')!r}, 'w').close()\n")
    # what a legacy checkpoint's main pickle imports, so that the loader reads on to the
    # fifth pickle as torch.load does (torch itself is not installed)
    (tmp_path / "packages" / "torch").mkdir()
    (tmp_path / "packages" / "torch" / "__init__.py").write_text("class FloatStorage: pass\n")
    (tmp_path / "packages" / "torch" / "_utils.py").write_text(
        "def _rebuild_tensor_v2(*args):\n    return None\n")
    samples = bypasses(str(markers), str(package.parent))
    manifest = []
    for name, (loader, data, _) in samples.items():
        (files / name).write_bytes(data)
        manifest.append((loader, str(files / name)))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "manifest.json"),  # noqa: S603
                    str(package.parent)], cwd=tmp_path, timeout=120, check=True,
                   capture_output=True)
    ran = {path.name for path in markers.iterdir()}
    expected = {name.partition(".")[0] for name in samples}
    assert ran == expected, f"payloads that did not run: {expected - ran}"

    version = finalize_and_wait(app, {name: data for name, (_, data, _) in samples.items()})
    assert version["status"] == "rejected", version
    named: dict[str, set] = {}
    for found in version["findings"]:
        if found["severity"] == "error" and "module" in found["details"]:
            named.setdefault(found["path"], set()).add(
                (found["details"]["module"], found["details"]["name"]))
    missed = {name: named.get(name) for name, (_, _, globals_) in samples.items()
              if not named.get(name, set()) & globals_}
    assert missed == {}, version["findings"]


# ------------------------------------------------------------------ corpus 2: harmless


def harmless() -> dict[str, bytes]:
    """Files frameworks write for plain numbers."""
    weights = np.arange(24, dtype=np.float32).reshape(4, 6)
    files: dict[str, bytes] = {}
    buffer = io.BytesIO()
    np.save(buffer, weights)
    files["weights.npy"] = buffer.getvalue()
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8"), ("c", "S3")]))
    files["records.npy"] = buffer.getvalue()
    buffer = io.BytesIO()
    np.savez(buffer, w=weights, b=np.ones(6), i=np.arange(5))
    files["arrays.npz"] = buffer.getvalue()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, w=weights, f=np.asfortranarray(np.eye(3)))
    files["compressed.npz"] = buffer.getvalue()
    state = {"coef": weights, "intercept": np.float64(0.5), "bias": np.ones(6),
             # scikit-learn keeps column names so: an object array, a nested pickle
             "feature_names_in_": np.array(["age", "income", "zip"], dtype=object),
             "order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
             "labels": np.array(["cat", "dog"]), "counts": np.arange(3, dtype=np.int16),
             "names": ["a", "b"], "meta": {"version": 1}}
    for compressor in [None, *JOBLIB_COMPRESSORS]:
        buffer = io.BytesIO()
        joblib.dump(state, buffer, compress=(compressor, 3) if compressor else 0)
        files[f"model-{compressor or 'raw'}.joblib"] = buffer.getvalue()
    files["model.safetensors"] = s.valid_safetensors()
    files["pytorch_model.bin"] = torch.zip_checkpoint(torch.example_state())
    files["legacy.pt"] = torch.legacy_checkpoint(torch.example_state())
    files["plain.pkl"] = pickle.dumps({"weights": weights}, protocol=5)
    return files


def test_harmless_files_frameworks_write_become_ready(app):
    version = finalize_and_wait(app, harmless())
    assert version["status"] == "ready", version
    assert [f for f in version["findings"] if f["severity"] != "info"] == []
