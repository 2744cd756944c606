"""``torch.save``'s two file layouts, written the way torch writes them, without torch.

Facts from pytorch's torch/serialization.py (``_save``, ``_legacy_save``) and the C++ zip
writer (caffe2/serialize/inline_container.cc): a tensor pickles as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
OrderedDict())``; its storage is a persistent id, ``('storage', torch.FloatStorage, key,
location, numel)`` in the zip layout (``view_metadata`` appended, ``None``, in the legacy
one).  Pickles are protocol 2.

* zip: ``archive/data.pkl``, ``archive/byteorder``, ``archive/data/<key>`` (the raw
  little-endian elements), ``archive/version`` (``3\\n``), ``archive/.data/serialization_id``;
  stored, every record's data aligned to 64 bytes by padding in the local header's extra
  field (id ``FB``);
* legacy: five pickles -- the magic number ``0x1950a86a20f9469cfc6c``, the protocol version
  1001, a sys-info dict, the object, the sorted list of storage keys -- then, per key, the
  element count (8 bytes, little endian) and the raw elements.

The generator stands in stub modules ``torch`` and ``torch._utils`` while it pickles, so
that pickle writes the globals by name exactly as it does for the real ones.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
ALIGNMENT = 64


class FakeTensor:
    """A float32 tensor: its values, shape and the storage key it is saved under."""

    def __init__(self, values: list[float], shape: tuple[int, ...], key: str) -> None:
        self.values, self.shape, self.key = values, shape, key

    def raw(self) -> bytes:
        return struct.pack(f"<{len(self.values)}f", *self.values)


class _Storage:
    def __init__(self, tensor: FakeTensor) -> None:
        self.tensor = tensor


@contextmanager
def _torch_modules() -> Iterator[types.SimpleNamespace]:
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:  # pragma: no cover - never called
        raise AssertionError("never unpickled here")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    torch.FloatStorage = float_storage
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield types.SimpleNamespace(rebuild=_rebuild_tensor_v2, FloatStorage=float_storage)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _pickle_state_dict(state: dict[str, FakeTensor], legacy: bool) -> bytes:
    with _torch_modules() as torch:

        def reduce_tensor(tensor: FakeTensor) -> tuple[Any, ...]:
            stride = tuple(_product(tensor.shape[i + 1:]) for i in range(len(tensor.shape)))
            return (torch.rebuild, (_Storage(tensor), 0, tensor.shape, stride, False,
                                    OrderedDict()))

        class Pickler(pickle.Pickler):
            dispatch_table = {FakeTensor: reduce_tensor}

            def persistent_id(self, obj: Any) -> Any:
                if isinstance(obj, _Storage):
                    pid = ("storage", torch.FloatStorage, obj.tensor.key, "cpu",
                           len(obj.tensor.values))
                    return (*pid, None) if legacy else pid
                return None

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(OrderedDict(state))
        return buffer.getvalue()


def _product(numbers: tuple[int, ...]) -> int:
    result = 1
    for number in numbers:
        result *= number
    return result


def _aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header = 30 + len(name.encode())
    offset = archive.fp.tell() + header + 4  # 4: the extra field's id and length
    padding = -offset % ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
    archive.writestr(info, data)


def zip_checkpoint(state: dict[str, FakeTensor], data_pkl: bytes | None = None,
                   root: str = "archive") -> bytes:
    """A ``torch.save`` zip checkpoint of ``state`` (or with ``data_pkl`` in place of the
    real pickle)."""
    pickled = _pickle_state_dict(state, legacy=False) if data_pkl is None else data_pkl
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        _aligned(archive, f"{root}/data.pkl", pickled)
        _aligned(archive, f"{root}/byteorder", b"little")
        for tensor in sorted(state.values(), key=lambda t: t.key):
            _aligned(archive, f"{root}/data/{tensor.key}", tensor.raw())
        _aligned(archive, f"{root}/version", b"3\n")
        _aligned(archive, f"{root}/.data/serialization_id", b"1" * 40)
    return buffer.getvalue()


def legacy_pickles(state: dict[str, FakeTensor]) -> list[bytes]:
    """The five pickles of a legacy ``torch.save`` of ``state``."""
    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    keys = sorted(tensor.key for tensor in state.values())
    return [pickle.dumps(MAGIC_NUMBER, protocol=2), pickle.dumps(PROTOCOL_VERSION, protocol=2),
            pickle.dumps(sys_info, protocol=2), _pickle_state_dict(state, legacy=True),
            pickle.dumps(keys, protocol=2)]


def legacy_storages(state: dict[str, FakeTensor]) -> bytes:
    """What follows the five pickles: per storage key, the element count and the data."""
    return b"".join(struct.pack("<q", len(t.values)) + t.raw()
                    for t in sorted(state.values(), key=lambda t: t.key))


def legacy_checkpoint(state: dict[str, FakeTensor]) -> bytes:
    """A legacy (``_use_new_zipfile_serialization=False``) ``torch.save`` of ``state``."""
    return b"".join(legacy_pickles(state)) + legacy_storages(state)


def example_state() -> dict[str, FakeTensor]:
    """A small linear layer's state dict."""
    return {"linear.weight": FakeTensor([0.5 * i for i in range(6)], (2, 3), "0"),
            "linear.bias": FakeTensor([1.0, -1.0], (2,), "1")}
