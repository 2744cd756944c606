"""safetensors headers: length, JSON, dtypes, shapes and offsets; a summary when valid."""

from __future__ import annotations

import struct

import pytest
import scan_samples as s


def test_a_valid_file_gives_its_summary(scan):
    result = scan(s.valid_safetensors())
    assert result["formats"] == ["safetensors"]
    (summary,) = result["findings"]
    assert summary["code"] == "safetensors_summary"
    assert summary["severity"] == "info"
    assert summary["details"]["tensors"] == 3
    assert summary["details"]["parameters"] == 6 + 1 + 1
    assert summary["details"]["dtypes"] == {"BF16": 1, "F32": 2}
    assert summary["details"]["metadata"] == {"format": "pt"}


def test_an_empty_file_with_padding_is_valid(scan):
    data = s.safetensors_bytes({}, b"", raw_header=b"{}      ")
    assert scan(data)["findings"][0]["details"]["tensors"] == 0


def tensors(*spans, dtype="F32", shape=None):
    return {f"t{i}": {"dtype": dtype, "shape": shape or [(end - begin) // 4],
                      "data_offsets": [begin, end]} for i, (begin, end) in enumerate(spans)}


@pytest.mark.parametrize("data, code", [
    (s.safetensors_bytes(tensors((0, 8), (4, 12)), bytes(12)), "safetensors_overlap"),
    (s.safetensors_bytes(tensors((0, 8), (12, 16)), bytes(16)), "safetensors_gap"),
    (s.safetensors_bytes(tensors((4, 8)), bytes(8)), "safetensors_gap"),
    (s.safetensors_bytes(tensors((0, 8)), bytes(12)), "safetensors_trailing_data"),
    (s.safetensors_bytes(tensors((0, 16)), bytes(8)), "safetensors_out_of_file"),
    (s.safetensors_bytes(tensors((0, 8), dtype="F128"), bytes(8)), "safetensors_bad_dtype"),
    (s.safetensors_bytes(tensors((0, 8), shape=[3]), bytes(8)), "safetensors_size_mismatch"),
    (s.safetensors_bytes({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
                         bytes(4)), "safetensors_bad_shape"),
    (s.safetensors_bytes({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}},
                         bytes(4)), "safetensors_bad_offsets"),
    (s.safetensors_bytes({}, bytes(4), header_length=10**9), "safetensors_header_too_long"),
    (s.safetensors_bytes({}, b"", header_length=4096), "safetensors_header_out_of_file"),
    (s.safetensors_bytes({}, b"", raw_header=b'{"a": [1, 2'), "safetensors_bad_header"),
    (s.safetensors_bytes({}, b"", raw_header=b'{"a":{"dtype":"F32","shape":[1],'
                                               b'"data_offsets":[0,4]},"a":{}}'),
     "safetensors_duplicate_key"),
    (s.safetensors_bytes({}, b"", metadata={"n": 1}), "safetensors_bad_metadata"),
])
def test_broken_files_are_errors(scan, data, code):
    result = scan(data)
    assert code in s.codes(result), result
    assert all(f["severity"] == "error" for f in result["findings"])


def test_header_limit_comes_from_the_settings(scan):
    data = s.valid_safetensors()
    assert s.codes(scan(data, max_header=16)) == ["safetensors_header_too_long"]


def test_sub_byte_dtypes_count_bits():
    from modelreg_scan.safetensors import DTYPE_BITS

    assert DTYPE_BITS["F4"] == 4


def test_a_length_that_is_not_a_header_is_no_safetensors(scan):
    assert scan(struct.pack("<Q", 5) + b"hello") == {"formats": [], "findings": []}


def test_a_header_length_that_reads_like_a_pickle_protocol_is_still_safetensors(scan):
    tensors = {"t": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}
    text = s.safetensors_bytes(tensors, b"")[8:]
    header = text + b" " * (0x0280 - len(text))  # length 0x280: bytes 80 02 = PROTO 2
    data = s.safetensors_bytes({}, bytes(4), raw_header=header)
    assert data[:2] == b"\x80\x02"
    result = scan(data)
    assert result["formats"] == ["safetensors"]
    assert s.codes(result) == ["safetensors_summary"]
