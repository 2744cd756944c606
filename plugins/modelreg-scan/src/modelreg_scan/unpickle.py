"""Reading pickles with the unpicklers loaders run, without importing or calling anything.

Two engines read every pickle stream, and what either reaches counts:

* :class:`CEngine` subclasses CPython's C unpickler (``_pickle.Unpickler``), the one
  ``pickle.load``, ``torch.load`` and ``np.load(allow_pickle=True)`` run;
* :class:`PyEngine` subclasses the pure-Python ``pickle._Unpickler``, the one ``joblib.load``
  runs, and reads joblib's arrays written between the opcodes as joblib does (see
  ``NumpyArrayWrapper.read_array`` in joblib's ``numpy_pickle.py``).  Where CPython's C
  unpickler accepts an argument the Python one refuses (``I017\\n`` is octal to ``strtol``;
  a line argument may end at a NUL byte; ``FRAME`` is only a hint to it), this engine
  accepts it too, so that it reads at least as far as either.

Neither imports: ``find_class`` records ``(module, name)`` and returns a stub class whose
instances absorb every call, ``__setstate__``, ``append``, ``extend``, ``add`` and item
assignment; ``persistent_load`` records the id and returns a stub.  Code in a pickle runs only
through what ``find_class`` returns (nothing else on the stack is callable), so the imports
recorded up to where an engine stops are everything a loader could run up to there.

:class:`ScannerLimit` means the engine cannot tell what the loader would do (a joblib array
whose dtype it cannot read, say): the caller fails closed.  Any other exception is the
unpickler's own failure, where the loader stops as well.
"""

from __future__ import annotations

import _compat_pickle
import _pickle
import pickle
import re
import struct
from collections.abc import Callable
from typing import IO, Any, NamedTuple

#: The largest single read from a stream.
READ_PIECE = 1 << 20
#: The longest line a text opcode's argument may have.
MAX_LINE = 64 << 20

#: joblib's array wrapper whose array bytes follow it in the stream.
JOBLIB_WRAPPERS = frozenset({
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
})
#: The globals numpy dtypes are rebuilt from.
NUMPY_DTYPES = frozenset({("numpy", "dtype"), ("numpy.core.multiarray", "dtype"),
                          ("numpy._core.multiarray", "dtype")})
_RECONSTRUCTORS = frozenset({("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")})


class ScannerLimit(Exception):
    """The scanner cannot tell what a loader would do with this stream."""


class Import(NamedTuple):
    """A global an unpickler asked for: as ``find_class`` was called, and as the real
    ``find_class`` would import it (``_compat_pickle``'s names for protocols < 3)."""

    module: str
    name: str
    raw: tuple[str, str] | None
    offset: int | None
    opcode: str | None
    engine: str


class Reader:
    """A binary stream that counts what was read (for offsets), can peek, and reads a
    claimed length in bounded pieces (a huge length on a short stream costs nothing)."""

    def __init__(self, stream: IO[bytes], base: int = 0, size: int | None = None) -> None:
        self._stream = stream
        self._pending = b""
        self.position = base
        self.end = None if size is None else base + size

    def tell(self) -> int:
        return self.position

    def remaining(self) -> int | None:
        """Bytes left, when the stream's size is known."""
        return None if self.end is None else max(self.end - self.position, 0)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = self._pending + self._stream.read()
            self._pending = b""
        else:
            data = self._pending[:size]
            self._pending = self._pending[size:]
            pieces = [data]
            missing = size - len(data)
            while missing > 0:
                piece = self._stream.read(min(missing, READ_PIECE))
                if not piece:
                    break
                pieces.append(piece)
                missing -= len(piece)
            data = b"".join(pieces)
        self.position += len(data)
        return data

    def skip(self, size: int) -> int:
        """Read and drop ``size`` bytes; how many there were."""
        done = 0
        while done < size:
            piece = self.read(min(size - done, READ_PIECE))
            if not piece:
                break
            done += len(piece)
        return done

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as whole, whole.cast("B") as view:
            data = self.read(len(view))
            view[:len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:
        # Bounded: binary data read as a text opcode's argument may hold no newline for
        # gigabytes.  A longer line breaks the pickle.
        line = b""
        if self._pending:
            head, newline, rest = self._pending.partition(b"\n")
            if newline:
                self._pending = rest
                self.position += len(head) + 1
                return head + newline
            line, self._pending = self._pending, b""
        line += self._stream.readline(max(MAX_LINE - len(line), 1))
        self.position += len(line)
        if len(line) >= MAX_LINE and not line.endswith(b"\n"):
            # A loader reads the whole line.  If it ends before the stream does, the loader
            # reads on after it and the scanner cannot follow; if not, the loader stops at
            # the end of the stream, as the scanner does.
            while piece := self._stream.readline(READ_PIECE):
                self.position += len(piece)
                if piece.endswith(b"\n"):
                    raise ScannerLimit(f"a line argument longer than {MAX_LINE} bytes")
        return line

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is read next."""
        if data:
            self._pending = data + self._pending
            self.position -= len(data)

    def peek(self, size: int = 1) -> bytes:
        if len(self._pending) < size:
            self._pending += self._stream.read(size - len(self._pending))
        return self._pending[:size]


# ---------------------------------------------------------------------------- stubs


class _StubType(type):
    """The type of stub classes: what ``find_class`` returns instead of a global."""

    global_: tuple[str, str]

    def __repr__(cls) -> str:
        return f"<stub {'.'.join(cls.global_)}>"


class Stub(metaclass=_StubType):
    """An instance of a stub class: absorbs every call and state.

    :ivar args: the arguments it was created with.
    :ivar state: the last ``BUILD`` state it was given.
    """

    global_ = ("?", "?")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.global_ in _RECONSTRUCTORS and args and isinstance(args[0], _StubType):
            cls = args[0]  # copyreg._reconstructor(cls, base, state) makes a cls
        obj = object.__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Stub:
        return Stub(*args)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<stub instance of {'.'.join(type(self).global_)}>"


def stub_class(module: str, name: str) -> type:
    """A new stub class standing for ``module.name``."""
    return _StubType("Stub", (Stub,), {"global_": (module, name)})


class Persistent(Stub):
    """What ``persistent_load`` returns; ``args[0]`` is the persistent id."""

    global_ = ("<persistent>", "id")


def effective(module: str, name: str, proto: int | None) -> tuple[str, str]:
    """The global the real ``find_class`` imports for ``module``, ``name``: protocols < 3
    map Python 2 names (``__builtin__`` -> ``builtins``); ``proto`` None means unknown (the
    mapping is applied, the stricter reading)."""
    if proto is None or proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


class Recorder:
    """What the engines saw: each import once (its first occurrence per engine), extension
    codes and persistent ids, in order.

    :param plausible: whether a module name could be imported; :attr:`plausible` counts
        every such ``find_class`` call, repeated ones too.
    """

    def __init__(self, plausible: Callable[[str], bool] = bool) -> None:
        self.imports: list[Import] = []
        self.extensions: list[tuple[int, int | None]] = []
        self.persistent: list[Any] = []
        self.plausible = 0
        #: where the Python engine met the first array joblib writes between the opcodes
        self.joblib_array: int | None = None
        self._is_plausible = plausible
        self._seen: set[tuple[Any, ...]] = set()
        self._classes: dict[tuple[str, str], type] = {}

    def global_(self, module: str, name: str, proto: int | None, offset: int | None,
                opcode: str | None, engine: str) -> type:
        mapped = effective(module, name, proto)
        raw = (module, name) if mapped != (module, name) else None
        if self._is_plausible(mapped[0]):
            self.plausible += 1
        if (mapped, raw, engine) not in self._seen:
            self._seen.add((mapped, raw, engine))
            self.imports.append(Import(*mapped, raw, offset, opcode, engine))
        if mapped not in self._classes:
            self._classes[mapped] = stub_class(*mapped)
        return self._classes[mapped]

    def forget(self, since: int) -> None:
        """Drop the imports recorded after the first ``since``."""
        for found in self.imports[since:]:
            self._seen.discard(((found.module, found.name), found.raw, found.engine))
        del self.imports[since:]


# ---------------------------------------------------------------------------- C engine


class CEngine(_pickle.Unpickler):
    """CPython's C unpickler with ``find_class`` and ``persistent_load`` that never import
    or call."""

    def __init__(self, reader: Reader, recorder: Recorder) -> None:
        # utf-8 with surrogateescape: a STRING argument decodes as torch.load decodes it and
        # never stops the reading early (a loader whose encoding refuses it stops there).
        super().__init__(reader, encoding="utf-8", errors="surrogateescape")
        self._reader = reader
        self._recorder = recorder

    def find_class(self, module: str, name: str) -> Any:
        return self._recorder.global_(module, name, None, None, None, "c")

    def persistent_load(self, pid: Any) -> Any:
        self._recorder.persistent.append(pid)
        return Persistent(pid)


# ---------------------------------------------------------------------- Python engine

_STRTOL = re.compile(rb"[ \t\n\v\f\r]*[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_STRTOD = re.compile(
    rb"[+-]?(inf(inity)?|nan|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)", re.IGNORECASE)
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _c_string(line: bytes) -> bytes:
    """A line as the C unpickler's C-string functions see it: up to the first NUL."""
    return line.split(b"\0", 1)[0]


def c_int(line: bytes) -> int:
    """An ``INT`` argument (the line with its newline) as the C unpickler reads it:
    ``strtol`` in base 0 (``0x`` hex, a leading ``0`` octal) up to a newline or NUL, else
    Python's int syntax in base 0; failing both, the Python unpickler's ``int(line, 0)``.

    :raises ValueError: when no unpickler reads it.
    """
    if len(line) >= 2:
        match = _STRTOL.match(line)
        if match:
            text = match.group(1)
            value = int(text, 16) if text[:2].lower() == b"0x" else (
                int(text, 8) if text.startswith(b"0") and len(text) > 1 else int(text))
            if line[:match.end()].lstrip().startswith(b"-"):
                value = -value
            rest = line[match.end():match.end() + 1]
            if rest in (b"\n", b"\0") and _LONG_MIN <= value <= _LONG_MAX:
                return value
        elif line[:1] == b"\0":
            return 0
        try:
            return int(_c_string(line), 0)
        except ValueError:
            pass
    return int(line, 0)


def c_long(line: bytes) -> int:
    """A ``LONG`` argument as either unpickler reads it (``L`` suffix optional)."""
    text = line
    if len(text) >= 2 and text[-2:-1] == b"L":
        text = text[:-2]
    try:
        return int(_c_string(text), 0)
    except ValueError:
        python = line[:-1]
        if python and python[-1:] == b"L":
            python = python[:-1]
        return int(python, 0)


def c_float(line: bytes) -> float:
    """A ``FLOAT`` argument as either unpickler reads it."""
    match = _STRTOD.match(line)
    if match and line[match.end():match.end() + 1] in (b"\n", b"\0"):
        return float(match.group(0))
    return float(line[:-1])


def c_index(line: bytes) -> int:
    """A ``GET``/``PUT`` argument (base 10) as either unpickler reads it."""
    try:
        return int(_c_string(line))
    except ValueError:
        return int(line[:-1])


class _Buffered:
    """Reads a :class:`Reader` a piece ahead, for the pure-Python unpickler's many small
    reads; :meth:`give_back` returns what was not used (before joblib reads the stream
    itself, and when a pickle ends)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._buffer = b""
        self._used = 0

    def position(self) -> int:
        return self.reader.position - (len(self._buffer) - self._used)

    def remaining(self) -> int | None:
        remaining = self.reader.remaining()
        return None if remaining is None else remaining + len(self._buffer) - self._used

    def read(self, size: int) -> bytes:
        end = self._used + size
        if end <= len(self._buffer):
            data = self._buffer[self._used:end]
            self._used = end
            return data
        data = self._buffer[self._used:]
        self._buffer, self._used = b"", 0
        missing = size - len(data)
        if missing >= _AHEAD:
            return data + self.reader.read(missing)
        self._buffer = self.reader.read(_AHEAD)
        self._used = min(missing, len(self._buffer))
        return data + self._buffer[:self._used]

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as whole, whole.cast("B") as view:
            data = self.read(len(view))
            view[:len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        newline = self._buffer.find(b"\n", self._used)
        if newline >= 0:
            line = self._buffer[self._used:newline + 1]
            self._used = newline + 1
            return line
        self.give_back()
        return self.reader.readline()

    def give_back(self) -> None:
        self.reader.unread(self._buffer[self._used:])
        self._buffer, self._used = b"", 0


#: How far the pure-Python engine reads ahead.
_AHEAD = 1 << 16


class PyEngine(pickle._Unpickler):
    """The pure-Python unpickler (joblib's), reading joblib's inline arrays, with
    ``find_class`` and ``persistent_load`` that never import or call."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, reader: Reader, recorder: Recorder) -> None:
        self._buffered = _Buffered(reader)
        super().__init__(self._buffered, encoding="utf-8", errors="surrogateescape")
        self._reader = reader
        self._recorder = recorder
        self._opcode_offset: int | None = None
        self._opcode: str | None = None
        self._frame_end = 0

    def load(self) -> Any:
        try:
            return super().load()
        finally:
            self._buffered.give_back()  # the next pickle, or torch's raw data, starts here

    def find_class(self, module: str, name: str) -> Any:
        return self._recorder.global_(module, name, self.proto, self._opcode_offset,
                                      self._opcode, "python")

    def persistent_load(self, pid: Any) -> Any:
        self._recorder.persistent.append(pid)
        return Persistent(pid)

    # -- imports, with the offset of their opcode

    def _at(self, opcode: str, handler: Callable[[PyEngine], None]) -> None:
        self._opcode_offset = self._buffered.position() - 1
        self._opcode = opcode
        try:
            handler(self)
        finally:
            self._opcode_offset = self._opcode = None

    def load_global(self) -> None:
        self._at("GLOBAL", pickle._Unpickler.load_global)

    def load_inst(self) -> None:
        self._at("INST", pickle._Unpickler.load_inst)

    def load_stack_global(self) -> None:
        if any(isinstance(item, Stub) for item in self.stack[-2:]):
            # a name made by a call (builtins.str(...)): a loader has a str there
            raise ScannerLimit("STACK_GLOBAL with a name made by a call")
        self._at("STACK_GLOBAL", pickle._Unpickler.load_stack_global)

    def get_extension(self, code: int) -> None:
        self._recorder.extensions.append((code, self._buffered.position()))
        raise ValueError(f"unregistered extension code {code}")

    # -- where the C unpickler is more lenient

    def load_int(self) -> None:
        line = self.readline()
        value = c_int(line)
        self.append(bool(value) if len(line) == 3 and value in (0, 1) else value)

    def load_long(self) -> None:
        self.append(c_long(self.readline()))

    def load_float(self) -> None:
        self.append(c_float(self.readline()))

    def load_get(self) -> None:
        index = c_index(self.readline())
        if index not in self.memo:
            raise pickle.UnpicklingError(f"memo value not found at index {index}")
        self.append(self.memo[index])

    def load_put(self) -> None:
        index = c_index(self.readline())
        if index < 0:
            raise ValueError("negative PUT argument")
        self.memo[index] = self.stack[-1]

    def load_frame(self) -> None:
        # Frames are a hint to the C unpickler: it checks that the bytes are there and
        # reads on across the frame's end.  Reads never cross into a frame here.
        (size,) = struct.unpack("<Q", self.read(8))
        remaining = self._buffered.remaining()
        if remaining is None:
            self._buffered.give_back()
            if len(self._reader.peek(size)) < size:
                raise pickle.UnpicklingError("pickle data was truncated")
        elif size > remaining:
            raise pickle.UnpicklingError("pickle data was truncated")
        self._frame_end = self._buffered.position() + size

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        remaining = self._buffered.remaining()
        if remaining is not None and size > remaining:
            raise pickle.UnpicklingError("pickle data was truncated")
        data = self.read(size)
        if len(data) < size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    # -- joblib

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)
        top = self.stack[-1]
        if isinstance(top, Stub) and type(top).global_ in JOBLIB_WRAPPERS:
            self.stack.pop()
            self.append(self._joblib_array(top))

    def _joblib_array(self, wrapper: Stub) -> Any:
        """Read the array joblib writes after a ``NumpyArrayWrapper``, as its
        ``read_array`` does: an object array is a pickle; any other is an optional
        padding-length byte, that much padding, then count x itemsize raw bytes."""
        self._buffered.give_back()  # joblib reads the file itself, past what was read ahead
        if self._reader.position < self._frame_end:
            raise ScannerLimit("a joblib array inside a pickle frame")
        if self._recorder.joblib_array is None:
            self._recorder.joblib_array = self._reader.position
        state = _state_dict(wrapper)
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(
                type(x) is int and x >= 0 for x in shape):
            raise ScannerLimit("a joblib array whose shape is not a tuple of sizes")
        itemsize, hasobject = dtype_info(state.get("dtype"))
        count = 1
        for dimension in shape:
            count *= dimension
        if hasobject:
            return PyEngine(self._reader, self._recorder).load()
        alignment = state.get("numpy_array_alignment_bytes")
        if alignment is not None:
            padding = self._reader.read(1)
            if padding:
                self._reader.skip(padding[0])
        size = count * itemsize
        remaining = self._reader.remaining()
        if (remaining is not None and size > remaining) or self._reader.skip(size) < size:
            raise pickle.UnpicklingError(
                f"EOF: reading array data, expected {size} bytes")
        return Stub()

    dispatch[pickle.GLOBAL[0]] = load_global
    dispatch[pickle.INST[0]] = load_inst
    dispatch[pickle.STACK_GLOBAL[0]] = load_stack_global
    dispatch[pickle.INT[0]] = load_int
    dispatch[pickle.LONG[0]] = load_long
    dispatch[pickle.FLOAT[0]] = load_float
    dispatch[pickle.GET[0]] = load_get
    dispatch[pickle.PUT[0]] = load_put
    dispatch[pickle.FRAME[0]] = load_frame
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    dispatch[pickle.BUILD[0]] = load_build


def _state_dict(stub: Stub) -> dict[str, Any]:
    state = stub.state
    if isinstance(state, tuple) and len(state) == 2:
        merged: dict[str, Any] = {}
        for part in state:
            if part is None:
                continue
            if not isinstance(part, dict):
                raise ScannerLimit("an object state that is no dict")
            merged.update(part)
        return merged
    if not isinstance(state, dict):
        raise ScannerLimit("an object state that is no dict")
    return state


_DTYPE_CODE = re.compile(r"([biufcOSUVmM?])(\d*)(\[\w+\])?")


def dtype_info(dtype: Any) -> tuple[int, bool]:
    """Item size and whether it holds Python objects, for a numpy dtype as a pickle
    rebuilds it: ``numpy.dtype(code, False, True)`` and a ``BUILD`` state tuple
    ``(version, byteorder, subarray, names, fields, elsize, alignment, flags)``.

    :raises ScannerLimit: for anything else.
    """
    if not isinstance(dtype, Stub) or type(dtype).global_ not in NUMPY_DTYPES:
        raise ScannerLimit("a joblib array whose dtype is not a numpy.dtype")
    code = dtype.args[0] if dtype.args else None
    match = _DTYPE_CODE.fullmatch(code) if isinstance(code, str) else None
    if not match:
        raise ScannerLimit(f"a numpy dtype {code!r} the scanner does not know")
    kind, digits = match.group(1), match.group(2)
    state = dtype.state
    if state is None:
        state = (3, "|", None, None, None, -1, -1, 0)
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        raise ScannerLimit("a numpy dtype state the scanner does not know")
    subarray, fields, elsize, flags = state[2], state[4], state[5], state[-1]
    hasobject = kind == "O" or (type(flags) is int and bool(flags & 1))
    if type(elsize) is not int:
        raise ScannerLimit("a numpy dtype of unknown size")
    itemsize = elsize if elsize > 0 else (int(digits) if digits else (1 if kind in "b?" else -1))
    if itemsize < 0:
        raise ScannerLimit(f"a numpy dtype {code!r} of unknown size")
    if subarray is not None:
        if not isinstance(subarray, tuple) or len(subarray) != 2:
            raise ScannerLimit("a numpy subarray dtype the scanner does not know")
        hasobject = dtype_info(subarray[0])[1] or hasobject
    if fields is not None:
        if not isinstance(fields, dict):
            raise ScannerLimit("numpy dtype fields the scanner does not know")
        for field in fields.values():
            if not isinstance(field, tuple) or not field:
                raise ScannerLimit("a numpy dtype field the scanner does not know")
            hasobject = dtype_info(field[0])[1] or hasobject
    return itemsize, hasobject


#: The engines by name.
ENGINES: dict[str, type] = {"c": CEngine, "python": PyEngine}
