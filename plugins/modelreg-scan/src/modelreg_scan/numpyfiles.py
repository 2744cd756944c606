"""NumPy ``.npy`` files (and so the members of ``.npz`` zips), read as ``np.load`` reads them.

The format (numpy/lib/format.py): the magic ``\\x93NUMPY``, a major and a minor version
byte, the header's length (2 bytes little endian in version 1, 4 in versions 2 and 3), the
header -- a Python literal dict ``{'descr': ..., 'fortran_order': ..., 'shape': ...}`` that
NumPy reads with ``ast.literal_eval`` -- then the data.  For a dtype that holds Python
objects the data is a pickle, which ``np.load(allow_pickle=True)`` unpickles: it is scanned
as one (and must be one).  A header this module cannot read, or a dtype it does not know,
fails closed: NumPy might read it as an object array.
"""

from __future__ import annotations

import ast
import re
import struct
from collections.abc import Iterable
from typing import IO, Any

from .pickles import scan_if_pickle
from .report import ERROR, finding

MAGIC = b"\x93NUMPY"
#: The longest header read (NumPy refuses more than 10,000 bytes unless told otherwise).
MAX_HEADER = 1 << 20
#: A dtype string of plain numbers, strings or bytes: byte order, kind, size.
_PLAIN = re.compile(r"[<>|=]?([biufc][1-9][0-9]?|b1|\?|[SUV][0-9]+|[mM]8(\[[0-9]*[a-zA-Z]+\])?)")
#: A dtype string of Python objects.
_OBJECT = re.compile(r"[<>|=]?(O[48]?|object)")


def is_npy(head: bytes) -> bool:
    """Whether ``head`` starts like a ``.npy`` file."""
    return head.startswith(MAGIC)


def _has_objects(descr: Any) -> bool:
    """Whether a ``descr`` holds Python objects; :class:`ValueError` when it is not one
    this module knows."""
    if isinstance(descr, str):
        if _PLAIN.fullmatch(descr):
            return False
        if _OBJECT.fullmatch(descr):
            return True
        raise ValueError(f"dtype {descr!r:.50} is not one the scanner knows")
    if isinstance(descr, list) and descr:
        found = False
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise ValueError("a structured dtype field the scanner does not know")
            found = _has_objects(field[1]) or found
        return found
    raise ValueError("a dtype description the scanner does not know")


def scan_npy(stream: IO[bytes], size: int | None, *, allowed: Iterable[str] = (),
             member: str | None = None) -> list[dict[str, Any]]:
    """Findings for the ``.npy`` file in ``stream`` (at its start)."""
    where = {"member": member} if member else {}

    def bad(why: str) -> list[dict[str, Any]]:
        return [finding("npy_malformed", f"the .npy file cannot be read safely: {why}",
                        ERROR, **where)]

    head = stream.read(8)
    if len(head) < 8 or not is_npy(head):
        return bad("it is cut short")
    major = head[6]
    if major == 1:
        raw = stream.read(2)
        length = struct.unpack("<H", raw)[0] if len(raw) == 2 else -1
    elif major in (2, 3):
        raw = stream.read(4)
        length = struct.unpack("<I", raw)[0] if len(raw) == 4 else -1
    else:
        return bad(f"format version {major} is not one NumPy writes")
    if length < 0 or length > MAX_HEADER:
        return bad("its header length is missing or too large")
    text = stream.read(length)
    if len(text) < length:
        return bad("its header is cut short")
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        if not isinstance(header, dict) or set(header) != {"descr", "fortran_order",
                                                           "shape"}:
            raise ValueError("the header is not NumPy's dict")
        objects = _has_objects(header["descr"])
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        return bad(str(exc)[:200])
    if not objects:
        return []
    offset = 8 + len(raw) + length
    remaining = None if size is None else size - offset
    found = scan_if_pickle(stream, allowed=allowed, member=member, size=remaining,
                           base=offset, required=True)
    return found or []
