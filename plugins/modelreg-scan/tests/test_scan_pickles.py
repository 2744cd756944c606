"""Pickle scanning: imports checked against the allow-list, by opcodes only."""

from __future__ import annotations

import pickle

import pytest
import scan_samples as s
from modelreg_scan.pickles import classify


@pytest.mark.parametrize("protocol", range(6))
def test_clean_pickles_of_every_protocol_have_no_findings(scan, protocol):
    result = scan(s.clean_pickle(protocol))
    assert result == {"formats": ["pickle"], "findings": []}


DANGEROUS = [
    (s.call_v0("os", "system", "echo owned"), "os", "system"),
    (s.call_v0("posix", "system", "id"), "posix", "system"),
    (s.call_protocol2("builtins", "eval", "1+1"), "builtins", "eval"),
    (s.call_protocol2("builtins", "exec", "x"), "builtins", "exec"),
    (s.call_protocol2("builtins", "getattr", "x"), "builtins", "getattr"),
    (s.call_protocol2("builtins", "__import__", "os"), "builtins", "__import__"),
    (s.call_stack_global("subprocess", "check_output", "id", 4), "subprocess", "check_output"),
    (s.call_stack_global("runpy", "run_path", "x.py", 5), "runpy", "run_path"),
    (s.call_stack_global("pkgutil", "resolve_name", "os:system"), "pkgutil", "resolve_name"),
    (s.call_stack_global("importlib", "import_module", "os"), "importlib", "import_module"),
    (s.call_stack_global("pip._internal", "main", "install"), "pip._internal", "main"),
    (s.call_stack_global("webbrowser", "open", "http://x"), "webbrowser", "open"),
    (s.call_stack_global("socket", "create_connection", "x"), "socket", "create_connection"),
    (s.call_stack_global("shutil", "rmtree", "/"), "shutil", "rmtree"),
    (s.call_stack_global_from_memo("os", "system", "id"), "os", "system"),
]


@pytest.mark.parametrize("data, module, name", DANGEROUS,
                         ids=[f"{m}.{n}-{d[1] if d[0] == 0x80 else 0}" for d, m, n in DANGEROUS])
def test_dangerous_imports_are_critical_with_file_offset_and_import(scan, data, module, name):
    (found,) = scan(data)["findings"]
    opcode = "STACK_GLOBAL" if b"\x93" in data else "GLOBAL"
    offset = data.index(b"\x93" if opcode == "STACK_GLOBAL" else b"c")
    assert found["code"] == "pickle_dangerous_import"
    assert found["severity"] == "error"
    assert found["details"] == {"risk": "critical", "offset": offset, "opcode": opcode,
                                "module": module, "name": name}
    assert f"{module}.{name}" in found["message"] and f"byte {offset}" in found["message"]


def test_unknown_imports_are_high(scan):
    (found,) = scan(s.call_stack_global("sklearn.pipeline", "Pipeline", "x"))["findings"]
    assert found["code"] == "pickle_unknown_import"
    assert found["details"]["risk"] == "high"


def test_allow_globals_lets_an_import_through(scan):
    data = s.call_stack_global("sklearn.pipeline", "Pipeline", "x")
    assert scan(data, allow_globals=("sklearn.pipeline.Pipeline",))["findings"] == []
    assert scan(data, allow_globals=("sklearn.pipeline.*",))["findings"] == []
    assert s.codes(scan(data, allow_globals=("sklearn.*",))) == ["pickle_unknown_import"]


def test_a_real_pickled_callable_is_found(scan):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    for protocol in range(6):
        (found,) = scan(pickle.dumps(Evil(), protocol=protocol))["findings"]
        assert found["details"]["name"] == "system"
        assert found["details"]["risk"] == "critical"


def test_a_torch_state_dict_pickle_is_clean(scan):
    assert scan(s.torch_state_dict_pickle()) == {"formats": ["pickle"], "findings": []}


def test_truncated_pickle_fails_closed_but_still_names_the_import(scan):
    data = s.call_v0("os", "system", "id")[:-1]  # no STOP
    assert s.codes(scan(data)) == ["pickle_dangerous_import", "pickle_malformed"]
    data = s.clean_pickle(4)
    found = scan(data[: len(data) // 2])["findings"]
    assert s.codes({"findings": found}) == ["pickle_malformed"]


def test_unknown_opcode_and_bad_protocol_fail_closed(scan):
    assert s.codes(scan(b"\x80\x04\xff.")) == ["pickle_malformed"]
    assert s.codes(scan(b"\x80\x05K\x01\x80\x09.")) == ["pickle_malformed"]


def test_stack_global_with_names_not_known_statically_fails_closed(scan):
    # the module name is made by a call: a loader has a str there, the scanner a stub
    data = (b"\x80\x04" + s.global_v0("builtins", "str") + s.short_unicode("os") + b"\x85R"
            + s.short_unicode("system") + b"\x93" + b".")
    assert s.codes(scan(data)) == ["pickle_unsupported"]
    # STACK_GLOBAL on something else than two str stops every unpickler: malformed
    data = (b"\x80\x04" + s.short_unicode("x") + b"\x85" + s.global_v0("builtins", "str")
            + b"0" + b"N" + s.short_unicode("system") + b"\x93" + b".")
    assert s.codes(scan(data)) == ["pickle_malformed"]


def test_legacy_torch_files_are_several_pickles_then_data(scan):
    data = (s.clean_pickle(2) + s.clean_pickle(2) + s.call_protocol2("os", "system", "x")
            + b"\x00\x01raw storage bytes")
    (found,) = scan(data)["findings"]
    assert found["details"]["name"] == "system"
    assert found["details"]["offset"] == 2 * len(s.clean_pickle(2)) + 2


def test_text_and_random_bytes_are_not_pickles(scan):
    assert scan(b"hello world, this is a README\n") == {"formats": [], "findings": []}
    assert scan(bytes(range(256)) * 10) == {"formats": [], "findings": []}
    assert scan(b"") == {"formats": [], "findings": []}


@pytest.mark.parametrize("module, name, risk", [
    ("collections", "OrderedDict", None),
    ("torch._utils", "_rebuild_tensor_v2", None),
    ("torch", "FloatStorage", None),
    ("numpy.core.multiarray", "_reconstruct", None),
    ("numpy", "dtype", None),
    ("os", "system", "critical"),
    ("os.path", "join", "critical"),
    ("nt", "system", "critical"),
    ("builtins", "getattr", "critical"),
    ("builtins", "print", "high"),
    ("collections", "OrderedDict.__init__", "critical"),
    ("collections", "OrderedDict.fromkeys", "high"),
    ("torch", "load", "critical"),
    ("my.model", "Net", "high"),
    ("os system", "x", "critical"),
])
def test_classify(module, name, risk):
    assert classify(module, name) == risk


def test_a_joblib_array_wrapper_the_scanner_cannot_read_fails_closed(scan):
    # no shape, no dtype: joblib would fail or read some number of raw bytes
    data = (b"\x80\x04" + s.short_unicode("joblib.numpy_pickle") + s.short_unicode(
        "NumpyArrayWrapper") + b"\x93)\x81}b" + b"\x00\x00\xf0\x3f" * 4 + b".")
    result = scan(data)
    assert s.codes(result) == ["pickle_unsupported"]
    assert "joblib" in result["findings"][0]["message"]


def test_a_huge_claimed_length_costs_no_memory(scan):
    data = b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"short."
    assert s.codes(scan(data)) == ["pickle_malformed"]


def test_a_pickle_without_proto_header_using_protocol_4_opcodes_is_found(scan):
    data = s.call_stack_global("os", "system", "id")[2:]  # PROTO dropped: still loadable
    (found,) = scan(data)["findings"]
    assert found["details"]["name"] == "system"


def test_a_stream_that_breaks_before_importing_anything_is_no_pickle(scan):
    assert scan(b"\x93NOMPY\x01\x00v\x00{'descr': '<f4'}") == {"formats": [], "findings": []}
    # (with NUMPY it is a .npy file whose header is cut short: np.load might read it)
    assert s.codes(scan(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}")) == ["npy_malformed"]
    assert scan(b"N.")["formats"] == ["pickle"]  # a complete pickle of None


def test_a_line_opcode_over_binary_data_reads_a_bounded_line(scan, monkeypatch):
    from modelreg_scan import unpickle

    monkeypatch.setattr(unpickle, "MAX_LINE", 1024)
    data = b"P" + bytes(1 << 20)  # PERSID, then a megabyte without a newline
    assert scan(data) == {"formats": [], "findings": []}
    # a longer line that does end: pickle.load reads it whole and goes on to os.system
    data = b"S'" + b"A" * (256 << 10) + b"'\n0" + s.call_v0("os", "system", "id")
    assert s.codes(scan(data)) == ["pickle_unsupported"]


def test_binary_data_whose_imports_cannot_run_is_no_pickle(scan):
    """Text opcodes read binary data up to a newline, so a random file may "import" a module
    no file can be (control bytes, an empty name), or one through an extension code (the
    registry is empty unless the loading program fills it): an unpickler fails there before
    anything runs.  Such a file that then breaks is data, not a rejected pickle."""
    garbage_global = b"c\x93\xfa\x00 x\nname\n" + b"\xff" * 64
    extension_code = b"\x84\x7fUws\xb7\xae\xcaZ'\xaaj\xd7T;#\x0fe\xf2\xaf\xb8\xf3\x17s"
    assert scan(garbage_global) == {"formats": [], "findings": []}
    assert scan(extension_code) == {"formats": [], "findings": []}
    # A module that could exist is an import, however the stream ends...
    assert s.codes(scan(b"cmy-model\nNet\n" + b"\xff" * 8)) == [
        "pickle_dangerous_import", "pickle_malformed"]
    # ...and behind a PROTO header, a broken stream fails closed whatever it imports.
    assert "pickle_malformed" in s.codes(scan(b"\x80\x04" + extension_code))


def test_random_binary_files_are_not_rejected_as_pickles():
    """Weights in a raw format are random-looking bytes: none of 3,000 is taken for a
    dangerous pickle (about one in eighty was, before imports that cannot run were told
    apart).  Those that start with a PROTO opcode (one in 16,384) still fail closed if they
    break: they are left out."""
    import io
    import random
    import warnings

    from modelreg_scan.pickles import is_pickle_header, scan_if_pickle

    rng = random.Random(2026)  # noqa: S311 - reproducible data, not secrets
    flagged = []
    for _ in range(3000):
        data = rng.randbytes(4096)
        if is_pickle_header(data):
            continue
        with warnings.catch_warnings():  # STRING opcodes over binary: invalid escapes
            warnings.simplefilter("ignore", DeprecationWarning)
            findings = scan_if_pickle(io.BytesIO(data))
        if findings:
            flagged.append((data[:16], [f["code"] for f in findings]))
    assert flagged == []
