"""Files for the scanner tests, crafted byte by byte: nothing here is ever unpickled."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict
from typing import Any

PROTO = b"\x80"
STOP = b"."


def short_unicode(text: str) -> bytes:
    """SHORT_BINUNICODE: push a str."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def memoize() -> bytes:
    return b"\x94"


def binget(index: int) -> bytes:
    return b"h" + bytes([index])


def global_v0(module: str, name: str) -> bytes:
    """GLOBAL: ``c<module>\\n<name>\\n``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call_v0(module: str, name: str, argument: str) -> bytes:
    """A protocol 0 pickle calling ``module.name(argument)``."""
    return global_v0(module, name) + b"(S'" + argument.encode() + b"'\ntR" + STOP


def call_stack_global(module: str, name: str, argument: str, protocol: int = 4) -> bytes:
    """A protocol 4/5 pickle calling ``module.name(argument)`` through STACK_GLOBAL."""
    body = (short_unicode(module) + memoize() + short_unicode(name) + memoize()
            + b"\x93" + memoize() + short_unicode(argument) + memoize() + b"\x85"
            + memoize() + b"R" + memoize() + STOP)
    return PROTO + bytes([protocol]) + body


def call_stack_global_from_memo(module: str, name: str, argument: str) -> bytes:
    """STACK_GLOBAL whose strings come from the memo, with decoys pushed and popped."""
    body = (short_unicode(module) + memoize()              # memo 0 = module
            + short_unicode(name) + memoize()              # memo 1 = name
            + b"0" + b"0"                                  # POP both
            + short_unicode("collections") + b"0"          # a decoy, popped
            + binget(0) + binget(1) + b"\x93"              # STACK_GLOBAL(module, name)
            + short_unicode(argument) + b"\x85" + b"R" + STOP)
    return PROTO + b"\x04" + body


def call_protocol2(module: str, name: str, argument: str) -> bytes:
    """A protocol 2 pickle with a binary GLOBAL."""
    return PROTO + b"\x02" + global_v0(module, name) + b"X" + struct.pack(
        "<I", len(argument)) + argument.encode() + b"\x85R" + STOP


def clean_pickle(protocol: int) -> bytes:
    """An OrderedDict of lists, as a state dict of plain numbers would be."""
    return pickle.dumps(OrderedDict([("layer.weight", [0.5, 1.5]), ("layer.bias", [0.0])]),
                        protocol=protocol)


def torch_like_zip(data_pkl: bytes, root: str = "archive",
                   storages: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like ``torch.save``'s: ``<root>/data.pkl``, raw storages, version."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", data_pkl)
        archive.writestr(f"{root}/byteorder", "little")
        for key, raw in (storages or {"0": b"\x80\x04" + b"\x00" * 30}).items():
            archive.writestr(f"{root}/data/{key}", raw)
        archive.writestr(f"{root}/version", "3\n")
    return buffer.getvalue()


def torch_state_dict_pickle() -> bytes:
    """The data.pkl of a one-tensor state dict: imports a PyTorch rebuild function, the
    storage type, and OrderedDict, with a persistent id for the storage."""
    return (PROTO + b"\x02" + global_v0("collections", "OrderedDict") + b")R"
            + b"X\x06\x00\x00\x00weight"
            + global_v0("torch._utils", "_rebuild_tensor_v2")
            + b"((X\x07\x00\x00\x00storage" + global_v0("torch", "FloatStorage")
            + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89"
            + global_v0("collections", "OrderedDict") + b")RtRs" + STOP)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    """A tar archive (``w``, ``w:gz``, ...) of the given members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def safetensors_bytes(tensors: dict[str, dict[str, Any]], data: bytes,
                      metadata: dict[str, str] | None = None, *,
                      header_length: int | None = None, raw_header: bytes | None = None,
                      ) -> bytes:
    """A safetensors file: 8-byte length, JSON header, data."""
    header = dict(tensors)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    length = len(text) if header_length is None else header_length
    return struct.pack("<Q", length) + text + data


def valid_safetensors() -> bytes:
    """Two F32 tensors (2x3 and 3) and one BF16 scalar, 30 bytes of data."""
    return safetensors_bytes(
        {
            "a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "a.bias": {"dtype": "F32", "shape": [1], "data_offsets": [24, 28]},
            "scale": {"dtype": "BF16", "shape": [], "data_offsets": [28, 30]},
        },
        bytes(range(30)),
        metadata={"format": "pt"},
    )


def codes(result: dict[str, Any]) -> list[str]:
    """The codes of a scan result's findings, in order."""
    return [f["code"] for f in result["findings"]]
