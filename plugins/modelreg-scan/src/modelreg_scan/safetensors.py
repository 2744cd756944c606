"""Checks of a safetensors file's header, without any safetensors library.

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON (an object whose
keys are tensor names, each ``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an
optional ``"__metadata__"`` object of strings), then the data section.  Offsets are relative
to the data section; the tensors must tile it exactly: sorted by offset they start at 0,
follow one another without gap or overlap and end at its end.
"""

from __future__ import annotations

import json
import math
import struct
from typing import IO, Any

from .report import ERROR, INFO, finding

#: Bits per element of every dtype the format defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
#: The most ``__metadata__`` entries copied into the summary finding.
MAX_REPORTED_METADATA = 50


def looks_like_safetensors(head: bytes) -> bool:
    """Whether ``head`` starts like a safetensors file: a length, then a JSON object."""
    return len(head) >= 10 and head[8:9] == b"{" and head[9:10] in b'"} \t\r\n'


def _problem(code: str, message: str, **details: Any) -> dict[str, Any]:
    return finding(code, message, ERROR, **details)


def scan_safetensors(stream: IO[bytes], size: int, max_header: int) -> list[dict[str, Any]]:
    """Findings for the safetensors file in ``stream`` (``size`` bytes long).

    A valid file gives one ``info`` finding, ``safetensors_summary``, whose details hold the
    tensor count, the parameter count, the count of tensors per dtype and the header's
    ``__metadata__``.  Anything wrong gives ``error`` findings instead.
    """
    prefix = stream.read(8)
    if len(prefix) < 8:
        return [_problem("safetensors_truncated", "the file is shorter than its length prefix")]
    (length,) = struct.unpack("<Q", prefix)
    if length > max_header:
        return [_problem("safetensors_header_too_long",
                         f"the header claims {length} bytes, more than the limit of "
                         f"{max_header}", header_length=length, limit=max_header)]
    if 8 + length > size:
        return [_problem("safetensors_header_out_of_file",
                         f"the header claims {length} bytes but the file has only "
                         f"{size - 8} after the length", header_length=length)]
    raw = stream.read(length)
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError) as exc:
        return [_problem("safetensors_bad_header", f"the header is not valid JSON: {exc}")]
    if not isinstance(header, dict):
        return [_problem("safetensors_bad_header", "the header is not a JSON object")]
    findings: list[dict[str, Any]] = []
    for key in duplicates:
        findings.append(_problem("safetensors_duplicate_key",
                                 f"the header names {key!r} more than once", tensor=key))
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(v, str) for v in metadata.values())
    ):
        findings.append(_problem("safetensors_bad_metadata",
                                 "__metadata__ must be an object of strings"))
        metadata = None
    data_size = size - 8 - length
    spans: list[tuple[int, int, str]] = []
    parameters = 0
    dtypes: dict[str, int] = {}
    for name, info in header.items():
        problem = _check_tensor(name, info)
        if problem:
            findings.append(problem)
            continue
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        count = math.prod(shape)
        bits = count * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            findings.append(_problem(
                "safetensors_size_mismatch",
                f"tensor {name!r} is {dtype} of shape {shape}, which is {bits / 8:g} bytes, "
                f"but its offsets span {end - begin}",
                tensor=name, expected=bits / 8, actual=end - begin))
            spans.append((begin, end, name))  # its span is still checked for the layout
            continue
        parameters += count
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
        spans.append((begin, end, name))
    findings += _check_layout(spans, data_size)
    if any(f["severity"] == ERROR for f in findings):
        return findings
    details: dict[str, Any] = {"tensors": len(spans), "parameters": parameters,
                               "dtypes": dict(sorted(dtypes.items())),
                               "header_length": length}
    if metadata:
        details["metadata"] = dict(list(metadata.items())[:MAX_REPORTED_METADATA])
    return [finding("safetensors_summary",
                    f"safetensors file with {len(spans)} tensors and {parameters} parameters",
                    INFO, **details)]


def _check_tensor(name: str, info: Any) -> dict[str, Any] | None:
    if not isinstance(info, dict):
        return _problem("safetensors_bad_tensor", f"tensor {name!r} is not an object",
                        tensor=name)
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BITS:
        return _problem("safetensors_bad_dtype", f"tensor {name!r} has unknown dtype {dtype!r}",
                        tensor=name, dtype=str(dtype)[:40])
    if not (isinstance(shape, list) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        return _problem("safetensors_bad_shape",
                        f"tensor {name!r} has a shape that is not a list of sizes",
                        tensor=name)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        return _problem("safetensors_bad_offsets",
                        f"tensor {name!r} has data_offsets that are not [begin, end]",
                        tensor=name)
    return None


def _check_layout(spans: list[tuple[int, int, str]], data_size: int) -> list[dict[str, Any]]:
    findings = []
    cursor, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < cursor:
            findings.append(_problem(
                "safetensors_overlap",
                f"tensor {name!r} starts at {begin}, inside tensor {previous!r}",
                tensor=name, offset=begin))
        elif begin > cursor:
            findings.append(_problem(
                "safetensors_gap",
                f"{begin - cursor} bytes before tensor {name!r} belong to no tensor",
                tensor=name, offset=cursor))
        cursor, previous = max(cursor, end), name
    if cursor > data_size:
        findings.append(_problem(
            "safetensors_out_of_file",
            f"tensor data runs to {cursor} but the data section has {data_size} bytes",
            end=cursor, data_size=data_size))
    elif cursor < data_size:
        findings.append(_problem(
            "safetensors_trailing_data",
            f"{data_size - cursor} bytes at the end of the data section belong to no tensor",
            offset=cursor, data_size=data_size))
    return findings
