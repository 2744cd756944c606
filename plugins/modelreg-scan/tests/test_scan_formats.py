"""The layouts loaders read pickles from, in process: torch legacy and tar, numpy, joblib's
compressors; and the allow-list's matching of module and name."""

from __future__ import annotations

import io
import pickle
import random
import struct
import zipfile

import numpy as np
import pytest
import scan_samples as s
import torch_format as torch
from modelreg_scan.pickles import classify

EVIL = s.call_v0("os", "system", "id")


@pytest.mark.parametrize("module, name, allowed, risk", [
    ("pkg.mod", "Net", ["pkg.mod.*"], None),
    ("pkg.mod", "os.system", ["pkg.mod.*"], "critical"),      # protocol 4 dotted name
    ("pkg.mod", "helpers.run", ["pkg.mod.*"], "high"),
    ("pkg.mod", "Net.__reduce__", ["pkg.mod.*"], "critical"),
    ("pkg.mod", "__builtins__", ["pkg.mod.*"], "critical"),
    ("pkg.mod.sub", "Net", ["pkg.mod.*"], "high"),            # a submodule is not "*"
    ("pkg", "mod.Net", ["pkg.mod.Net"], "high"),              # same dotted text, other split
    ("pkg.mod", "Net", ["pkg.mod.Net"], None),
    ("pkg.mod", "Outer.Inner", ["pkg.mod:Outer.Inner"], None),
    ("pkg.mod", "Outer.Inner", ["pkg.mod.Outer.Inner"], "high"),
    ("numpy.core.multiarray", "_reconstruct", [], None),
    ("numpy", "core.multiarray._reconstruct", [], "high"),
    ("os", "system", ["os.*"], None),                         # an operator's explicit choice
])
def test_allow_list_matches_module_and_name_separately(module, name, allowed, risk):
    assert classify(module, name, allowed) == risk


def test_a_dotted_protocol_4_name_is_refused_despite_a_module_wildcard(scan):
    data = s.call_stack_global("pkg", "os.system", "id")
    (found,) = scan(data, allow_globals=("pkg.*",))["findings"]
    assert (found["details"]["module"], found["details"]["name"]) == ("pkg", "os.system")
    assert found["details"]["risk"] == "critical"
    assert scan(s.call_stack_global("pkg", "Net", "x"), allow_globals=("pkg.*",))[
        "findings"] == []


@pytest.mark.parametrize("prefix", [b"I017\n0", b"I5\x00x\n0", b"L7\x00L\n0",
                                    b"F1.5\x00x\n0", b"N\x95" + struct.pack("<Q", 1) + b"0"])
def test_what_only_the_c_unpickler_accepts_is_read_on_with_offsets(scan, prefix):
    # strtol reads "017" as octal, C strings end at NUL, FRAME is a hint to the C
    # unpickler: Python's own unpickler refuses each, pickle.load reads on
    (found,) = scan(prefix + EVIL)["findings"]
    assert found["details"]["name"] == "system"
    assert found["details"]["offset"] == len(prefix)


# ------------------------------------------------------------------------------ torch


def test_a_legacy_checkpoint_is_read_through_its_storages(scan):
    state = torch.example_state()
    assert scan(torch.legacy_checkpoint(state)) == {"formats": ["pickle"], "findings": []}
    # what follows the storages is read on, as any file's pickles are
    assert s.codes(scan(torch.legacy_checkpoint(state) + EVIL)) == ["pickle_dangerous_import"]


def test_a_legacy_checkpoint_whose_storages_do_not_match_fails_closed(scan):
    state = torch.example_state()
    data = b"".join(torch.legacy_pickles(state)) + struct.pack("<q", 5) + bytes(64)
    assert s.codes(scan(data)) == ["torch_storages_malformed"]
    assert s.codes(scan(torch.legacy_checkpoint(state)[:-3])) == ["torch_storages_malformed"]


def _storage_args(key: str) -> bytes:
    with torch._torch_modules() as fake:
        return pickle.dumps((key, "cpu", fake.FloatStorage), protocol=2)


def test_the_oldest_tar_layout_reads_pickles_between_raw_storages(scan):
    def storages(second_args: bytes) -> bytes:
        raw = struct.pack("<q", 2) + struct.pack("<2f", 1.0, 2.0)
        return (pickle.dumps(2, protocol=2) + _storage_args("0") + raw + second_args + raw
                + pickle.dumps([], protocol=2))

    clean = s.tar_bytes([(s.tar_member("storages"), storages(_storage_args("1")))])
    assert scan(clean)["findings"] == []
    evil = s.tar_bytes([(s.tar_member("storages"), storages(EVIL))])
    found, broken = scan(evil)["findings"]
    assert (found["details"]["name"], found["details"]["member"]) == ("system", "storages")
    assert broken["code"] == "torch_storages_malformed"


# ------------------------------------------------------------------------------ numpy


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_npy_headers_and_dtypes_the_scanner_cannot_read_fail_closed(scan):
    header = b"{'descr': 'float64', 'fortran_order': False, 'shape': (1,), }"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8)
    assert s.codes(scan(data)) == ["npy_malformed"]  # np.dtype('object') reads like this
    assert s.codes(scan(npy(np.array([1, None], dtype=object))[:60] + b"\x00junk")) == [
        "npy_malformed"]


def test_an_object_npy_whose_data_is_no_pickle_fails_closed(scan):
    data = npy(np.array([1, None], dtype=object))
    header_end = data.index(b"\n") + 1
    assert s.codes(scan(data[:header_end] + b"\x00" * 32)) == ["pickle_malformed"]


def test_npz_members_are_read_whatever_their_name(scan):
    evil = npy(np.array([1], dtype=object)).replace(b"\x80", b"\x80", 1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data/0", s.call_stack_global("os", "system", "id"))
        archive.writestr("data/evil.npy", evil[:evil.index(b"\n") + 1] + EVIL)
    result = scan(buffer.getvalue())
    assert {(f["details"]["member"], f["details"]["name"]) for f in result["findings"]} == {
        ("data/0", "system"), ("data/evil.npy", "system")}


def test_a_torch_storage_that_is_an_npy_object_array_is_scanned(scan):
    evil = npy(np.array([1], dtype=object))
    data = torch.zip_checkpoint(torch.example_state())
    data = s.torch_like_zip(s.torch_state_dict_pickle(),
                            storages={"0": evil[:evil.index(b"\n") + 1] + EVIL})
    (found,) = scan(data)["findings"]
    assert found["details"]["member"] == "archive/data/0"


# ------------------------------------------------------------------ compressed prefixes


@pytest.mark.parametrize("prefix", [b"x\x9c", b"x\x01", b"\x5d\x00\x00\x80\x00", b"ZF"])
def test_random_data_behind_a_weak_compression_prefix_is_data(scan, prefix):
    rng = random.Random(12)  # noqa: S311 - reproducible data, not secrets
    for _ in range(20):
        assert scan(prefix + rng.randbytes(2048)) == {"formats": [], "findings": []}


def test_an_old_joblib_zfile_is_decompressed_and_scanned(scan):
    import zlib

    length = hex(len(EVIL)).encode().ljust(len(hex(2**64)))
    result = scan(b"ZF" + length + zlib.compress(EVIL))
    assert s.codes(result) == ["pickle_dangerous_import"]
    assert result["findings"][0]["details"]["compression"] == "joblib-zfile"


def test_a_zstd_file_the_scanner_cannot_open_fails_closed(scan):
    try:
        import zstandard  # noqa: F401
    except ImportError:
        data = b"\x28\xb5\x2f\xfd" + bytes(32)  # pandas.read_pickle reads .zst pickles
        result = scan(data)
        assert s.codes(result) == ["archive_malformed"]
        assert "zstandard" in result["findings"][0]["message"]
    else:
        pytest.skip("zstandard is installed: zstd files are read")
