"""The plugin through the hook, and the subprocess that fails closed."""

from __future__ import annotations

import io
import sys

import modelreg_scan.plugin
import pytest
import scan_samples as s
from modelreg_scan.config import ScanConfig, parse_size
from modelreg_scan.sandbox import ScanFailed, scan_in_subprocess

from modelreg.api import Finding
from modelreg.testing import CORE_PLUGINS, HookRecorder, make_plugin_manager

MODEL = {"name": "fraud", "description": "", "tags": {}}
VERSION = {"number": 1, "metadata": {}, "lineage": {}, "tags": {}}


@pytest.fixture(scope="module")
def pm():
    return make_plugin_manager([*CORE_PLUGINS, modelreg_scan.plugin])


def scan_file(pm, data: bytes, path: str = "model.bin", **settings):
    file = {"path": path, "size": len(data), "sha256": "0" * 64,
            "media_type": "application/octet-stream"}
    results = pm.hook.modelreg_scan_file(
        model=MODEL, version=VERSION, file=file, opener=lambda: io.BytesIO(data),
        settings={f"modelreg.scan.{k}": v for k, v in settings.items()})
    return results


def test_the_entry_point_names_the_plugin_module():
    from importlib.metadata import entry_points

    (point,) = [p for p in entry_points(group="modelreg") if p.name == "scan"]
    assert point.value == "modelreg_scan.plugin"


def test_a_malicious_pickle_gives_error_findings_naming_file_offset_and_import(pm):
    recorder = HookRecorder(pm)
    try:
        (findings,) = scan_file(pm, s.torch_like_zip(s.call_stack_global("os", "system", "x")),
                                path="weights/model.pt")
    finally:
        recorder.close()
    (finding,) = findings
    assert isinstance(finding, Finding)
    assert finding.severity == "error"
    assert finding.path == "weights/model.pt"
    assert finding.details["member"] == "archive/data.pkl"
    assert finding.details["module"] == "os" and finding.details["name"] == "system"
    assert finding.details["offset"] > 0
    assert finding.details["formats"] == ["zip"]
    (call,) = recorder.named("modelreg_scan_file")
    assert call["file"]["path"] == "weights/model.pt"


def test_a_clean_file_gives_no_findings_and_an_unknown_one_none(pm):
    assert scan_file(pm, s.clean_pickle(5)) == [[]]
    assert scan_file(pm, b"\x00\x01 just bytes") == []  # None is dropped by pluggy
    (findings,) = scan_file(pm, b"\x00\x01 just bytes", unknown="reject")
    assert [f.code for f in findings] == ["unknown_format"]


def test_safetensors_summary_comes_back_as_an_info_finding(pm):
    ((summary,),) = scan_file(pm, s.valid_safetensors(), path="model.safetensors")
    assert summary.severity == "info"
    assert summary.details["parameters"] == 8


def test_a_scan_that_runs_out_of_memory_fails_closed_through_the_hook(pm):
    big = b"\x80\x04\x8e" + (32 << 20).to_bytes(8, "little") + bytes(32 << 20) + b"."
    with pytest.raises(ScanFailed, match=r"model\.bin ran out of memory"):
        scan_file(pm, big, max_memory="32MiB")


def test_a_scan_that_takes_too_long_fails_closed_through_the_hook(pm):
    with pytest.raises(ScanFailed, match="longer than"):
        scan_file(pm, s.clean_pickle(4), timeout="0.01")


def test_bad_settings_raise(pm):
    with pytest.raises(ValueError):
        scan_file(pm, b"x", unknown="maybe")


def run(command, timeout=5.0, max_memory=2**30):
    return scan_in_subprocess(lambda: io.BytesIO(b"data"), "model.bin",
                              ScanConfig(timeout=timeout, max_memory=max_memory),
                              command=command)


def test_a_hanging_scan_is_killed_and_fails_closed():
    with pytest.raises(ScanFailed, match=r"longer than 0\.5 s"):
        run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)


def test_a_crashing_scan_fails_closed():
    with pytest.raises(ScanFailed, match=r"(?s)crashed with status 1.*boom"):
        run([sys.executable, "-c", "raise SystemExit('boom')"])


def test_a_killed_scan_fails_closed():
    with pytest.raises(ScanFailed, match="SIGKILL"):
        run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])


def test_a_scan_that_allocates_too_much_fails_closed():
    code = ("import json, sys; from modelreg_scan.run import apply_limits;"
            "from modelreg_scan.config import ScanConfig;"
            "apply_limits(ScanConfig.from_json(json.load(sys.stdin))); b = bytearray(2**31)")
    with pytest.raises(ScanFailed, match=r"(?s)crashed.*MemoryError"):
        run([sys.executable, "-c", code], max_memory=256 * 2**20)


def test_a_scan_that_prints_garbage_fails_closed():
    with pytest.raises(ScanFailed, match="printed no result"):
        run([sys.executable, "-c", "print('all good')"])


def test_the_real_subprocess_scans_the_bytes_of_the_opener():
    result = scan_in_subprocess(lambda: io.BytesIO(s.call_v0("os", "system", "id")),
                                "model.pkl", ScanConfig())
    assert result["formats"] == ["pickle"]
    assert [f["code"] for f in result["findings"]] == ["pickle_dangerous_import"]


@pytest.mark.parametrize("text, size", [("1048576", 2**20), ("512MiB", 512 * 2**20),
                                        ("2GB", 2 * 10**9), ("1.5 kib", 1536)])
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_scans_leave_no_temporary_files(tmp_path, monkeypatch):
    import gzip
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = gzip.compress(s.call_v0("os", "system", "id"))
    result = scan_in_subprocess(lambda: io.BytesIO(data), "model.pkl.gz", ScanConfig())
    assert [f["code"] for f in result["findings"]] == ["pickle_dangerous_import"]
    with pytest.raises(ScanFailed):
        run([sys.executable, "-c", "import tempfile, time; tempfile.mkdtemp(); "
                                   "time.sleep(60)"], timeout=0.5)
    assert list(tmp_path.iterdir()) == []
