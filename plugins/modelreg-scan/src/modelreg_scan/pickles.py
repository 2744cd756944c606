"""Pickle scanning by reading opcodes: nothing is ever unpickled.

:func:`scan_pickles` walks the opcodes with :func:`pickletools.genops`, keeps a small model of
the unpickler's stack and memo (enough to know which strings ``STACK_GLOBAL`` takes as module
and name), and reports every import a pickle makes that is not on the allow-list.  Imports of
modules that can run code (``os``, ``subprocess``, ``builtins.eval``, ...) are ``critical``;
any other import outside the allow-list is ``high``; both are errors.  A pickle that cannot be
read to its ``STOP`` fails closed: an unpickler would have executed everything up to the
point where it broke.
"""

from __future__ import annotations

import pickle
import pickletools
import re
from collections.abc import Iterable
from typing import IO, Any

from .report import CRITICAL, ERROR, HIGH, finding

#: Imports a model pickle may make: containers, and the rebuild functions of PyTorch, NumPy
#: and joblib.  Each is a ``module.name`` as ``find_class`` sees it.
SAFE_GLOBALS: frozenset[str] = frozenset({
    # Python's own containers and scalars
    "collections.OrderedDict", "collections.defaultdict", "collections.Counter",
    "collections.deque",
    "builtins.set", "builtins.frozenset", "builtins.dict", "builtins.list", "builtins.tuple",
    "builtins.bytearray", "builtins.bytes", "builtins.slice", "builtins.complex",
    "builtins.int", "builtins.float", "builtins.str", "builtins.bool", "builtins.range",
    "__builtin__.set", "__builtin__.frozenset", "__builtin__.dict", "__builtin__.list",
    "__builtin__.tuple", "__builtin__.bytearray", "__builtin__.slice", "__builtin__.complex",
    "__builtin__.int", "__builtin__.float", "__builtin__.long", "__builtin__.unicode",
    "copy_reg._reconstructor", "copyreg._reconstructor",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
    "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
    "_codecs.encode",
    # PyTorch checkpoints
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage", "torch._tensor._rebuild_from_type_v2",
    "torch.Size", "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter",
    "torch.storage.UntypedStorage", "torch.storage.TypedStorage",
    "torch.serialization._get_layout", "torch.strided", "torch.sparse_coo",
    "torch.per_tensor_affine", "torch.per_channel_affine",
    *(f"torch.{kind}Storage" for kind in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4",
        "Untyped",
    )),
    *(f"torch.{dtype}" for dtype in (
        "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8",
        "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "long",
        "int", "short", "complex64", "complex128", "cfloat", "cdouble", "qint8", "quint8",
        "qint32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    )),
    # NumPy arrays and scalars
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype", "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    # joblib
    "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper",
})

#: joblib's array wrappers: the array's raw bytes follow them inside the opcode stream.
JOBLIB_ARRAYS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper",
                           "joblib.numpy_pickle.NDArrayWrapper"})

#: Modules whose every name can run code, touch files or the network: importing anything
#: from them (or their submodules) is ``critical``.
DANGEROUS_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "pty", "commands",
    "shutil", "socket", "ssl", "asyncio", "multiprocessing", "threading", "_thread",
    "signal", "ctypes", "_ctypes", "cffi", "importlib", "imp", "pkgutil", "runpy", "zipimport",
    "pip", "setuptools", "distutils", "webbrowser", "code", "codeop", "pdb", "bdb", "timeit",
    "trace", "profile", "cProfile", "marshal", "pickle", "_pickle", "cPickle", "dill",
    "cloudpickle", "joblib.load", "shelve", "types", "inspect", "gc", "operator",
    "tempfile", "glob", "pathlib", "io", "_io", "fileinput", "urllib", "urllib2", "http",
    "httplib", "requests", "ftplib", "telnetlib", "smtplib", "poplib", "imaplib", "nntplib",
    "xmlrpc", "socketserver", "logging", "linecache", "tarfile", "zipfile", "bz2", "lzma",
    "gzip", "builtins.__import__", "torch.load", "torch.hub", "torch.jit", "torch.package",
    "torch.storage._load_from_bytes", "torch.serialization", "numpy.load", "numpy.testing",
    "numpy.f2py", "numpy.distutils",
})

#: Builtins that evaluate code or reach any object: ``critical``.
DANGEROUS_BUILTINS: frozenset[str] = frozenset({
    "eval", "exec", "execfile", "compile", "open", "file", "input", "raw_input",
    "getattr", "setattr", "delattr", "__import__", "globals", "locals", "vars", "breakpoint",
    "help", "memoryview", "object", "type", "super", "classmethod", "staticmethod",
    "property", "reload", "apply",
})

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_STRING_OPS = frozenset({
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
    "BINUNICODE8",
})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_EXTENSIONS = frozenset({"EXT1", "EXT2", "EXT4"})
#: The largest single read from a stream.
READ_PIECE = 1 << 20
#: The longest line a text opcode's argument may have.
MAX_LINE = 64 << 20
#: How much of a file is read to recognise its format.
SNIFF_SIZE = 64 * 1024


class _Mark:
    def __repr__(self) -> str:
        return "MARK"


class _Unknown:
    def __repr__(self) -> str:
        return "?"


MARK, UNKNOWN = _Mark(), _Unknown()


class _Reader:
    """A binary stream that counts what was read (for offsets) and can peek."""

    def __init__(self, stream: IO[bytes], base: int = 0) -> None:
        self._stream = stream
        self._pending = b""
        self.position = base

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._pending + self._stream.read()
            self._pending = b""
        else:
            data = self._pending[:size]
            self._pending = self._pending[size:]
            # A length read from the pickle may be anything: read in bounded pieces, so
            # that a huge claimed length on a short stream costs no huge allocation.
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

    def readline(self) -> bytes:
        # Bounded: binary data read as a text opcode's argument may hold no newline for
        # gigabytes.  A longer line makes the pickle malformed.
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
        return line

    def peek(self, size: int) -> bytes:
        if len(self._pending) < size:
            self._pending += self._stream.read(size - len(self._pending))
        return self._pending[:size]


def classify(module: str, name: str, allowed: Iterable[str] = ()) -> str | None:
    """``None`` for a safe import, else its risk: ``critical`` or ``high``.

    :param allowed: extra ``module.name`` or ``module.*`` entries to allow.
    """
    full = f"{module}.{name}"
    extra = set(allowed)
    if full in SAFE_GLOBALS or full in extra or f"{module}.*" in extra:
        return None
    if "__" in name or not _IDENTIFIER.fullmatch(module) or not _IDENTIFIER.fullmatch(name):
        return CRITICAL
    parts = module.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    if prefixes & DANGEROUS_MODULES or full in DANGEROUS_MODULES:
        return CRITICAL
    if module in ("builtins", "__builtin__") and name.split(".")[0] in DANGEROUS_BUILTINS:
        return CRITICAL
    return HIGH


def is_pickle_header(head: bytes) -> bool:
    """Whether ``head`` starts like a pickle of protocol 2 to 5 (``PROTO`` opcode)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def scan_if_pickle(
    stream: IO[bytes], *, allowed: Iterable[str] = (), member: str | None = None,
) -> list[dict[str, Any]] | None:
    """Findings for ``stream`` read as a pickle, or ``None`` when it is no pickle.

    Any file can be handed to an unpickler, so the question is not what the file looks
    like but what an unpickler would do with it.  Code runs only through an import
    (``GLOBAL``, ``STACK_GLOBAL``, ``INST``, extension codes), so a stream that breaks
    before its first import is harmless and is no pickle here; one that imports something is
    a pickle, however it ends; one that parses up to ``STOP`` is a pickle too, and so is one
    that starts with the ``PROTO`` opcode (it fails closed if it then breaks).

    An "import" of a module no file can be (an empty name, spaces, control or non-ASCII
    bytes: what a text opcode reads from binary data up to the next newline) fails in the
    unpickler before anything runs, and so does one through an extension code (``EXT1``,
    ``EXT2``, ``EXT4``: the registry is empty unless the loading program fills it), so a
    stream without a ``PROTO`` header whose imports are all such is no pickle either, however
    it ends.  About one random binary file in eighty starts with bytes that read so, and was
    rejected before.
    """
    reader = _Reader(stream)
    header = is_pickle_header(reader.peek(2))
    findings = scan_pickles(reader, allowed=allowed, member=member)
    imports = any(f["code"] not in ("pickle_malformed", "pickle_extension_import")
                  and could_be_module(f["details"].get("module", "unknown"))
                  for f in findings)
    if header or imports or not findings:
        return findings  # (no findings: a complete pickle that imports nothing, or no pickle)
    return None


def could_be_module(name: str) -> bool:
    """Whether an import system could find a module called ``name``: dotted parts of ASCII
    letters, digits, ``_`` and ``-`` (a file ``my-model.py`` on the path imports as
    ``my-model``), none empty."""
    return _MODULE_NAME.fullmatch(name) is not None


def _location(member: str | None) -> dict[str, Any]:
    return {"member": member} if member else {}


def scan_pickles(
    stream: IO[bytes], *, allowed: Iterable[str] = (), base: int = 0,
    member: str | None = None, several: bool = True,
) -> list[dict[str, Any]]:
    """Findings for the pickle(s) at the start of ``stream``.

    :param allowed: extra allowed imports (``module.name`` or ``module.*``).
    :param base: the offset of ``stream``'s start in the file, for the offsets reported.
    :param member: the archive member the stream is, if any.
    :param several: go on with the next pickle after ``STOP`` when one follows directly
        (legacy ``torch.save`` files are a few pickles in a row followed by raw data).
    """
    allowed = tuple(allowed)
    reader = stream if isinstance(stream, _Reader) else _Reader(stream, base)
    findings: list[dict[str, Any]] = []
    while True:
        findings += _scan_one(reader, allowed, member)
        if findings and findings[-1]["code"] == "pickle_malformed":
            return findings
        if not several or not is_pickle_header(reader.peek(2)):
            return findings


def _scan_one(reader: _Reader, allowed: tuple[str, ...], member: str | None) -> list[dict]:
    findings: list[dict[str, Any]] = []
    stack: list[Any] = []
    memo: dict[Any, Any] = {}
    where = _location(member)
    imported: set[str] = set()

    def report(module: str, name: str, offset: int, opcode: str) -> None:
        imported.add(f"{module}.{name}")
        risk = classify(module, name, allowed)
        if risk is None:
            return
        kind = "dangerous" if risk == CRITICAL else "unknown"
        code = "pickle_dangerous_import" if risk == CRITICAL else "pickle_unknown_import"
        findings.append(finding(
            code,
            f"the pickle imports {kind} {module}.{name} at byte {offset}"
            + (f" of member {member}" if member else "")
            + "; loading it could run code",
            ERROR, risk=risk, offset=offset, opcode=opcode, module=module, name=name,
            **where,
        ))

    def malformed(why: str, offset: int) -> None:
        hint = ""
        if imported & JOBLIB_ARRAYS:
            hint = ("; joblib files with numpy arrays written between the opcodes are not "
                    "supported: save the arrays as safetensors or .npy")
        findings.append(finding(
            "pickle_malformed",
            f"the pickle cannot be read safely ({why}); an unpickler would have run "
            f"everything before this point{hint}",
            ERROR, risk=HIGH, offset=offset, **where,
        ))

    def pop(count: int, offset: int) -> list[Any] | None:
        if count > len(stack):
            malformed("stack underflow", offset)
            return None
        taken = stack[len(stack) - count:] if count else []
        del stack[len(stack) - count:]
        return taken

    position = reader.tell()
    try:
        for opcode, arg, pos in pickletools.genops(reader):
            position = pos if pos is not None else reader.tell()
            name = opcode.name
            if name == "PROTO" and isinstance(arg, int) and arg > pickle.HIGHEST_PROTOCOL:
                malformed(f"unsupported protocol {arg}", position)
                return findings
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                report(module, attr, position, name)
            elif name == "STACK_GLOBAL":
                operands = stack[-2:]
                if len(operands) < 2:
                    malformed("STACK_GLOBAL on a stack of fewer than two items", position)
                    return findings
                if all(isinstance(x, str) for x in operands):
                    report(operands[0], operands[1], position, name)
                else:
                    findings.append(finding(
                        "pickle_unresolved_import",
                        f"the pickle imports a global at byte {position} whose name cannot "
                        "be determined without running it",
                        ERROR, risk=HIGH, offset=position, opcode=name, **where,
                    ))
            elif name in _EXTENSIONS:
                findings.append(finding(
                    "pickle_extension_import",
                    f"the pickle imports a global through the extension registry (code "
                    f"{arg}) at byte {position}",
                    ERROR, risk=HIGH, offset=position, opcode=name, **where,
                ))
            # the stack model: strings stay strings, everything else is unknown
            if name in _MEMO_PUT:
                memo[arg] = stack[-1] if stack else UNKNOWN
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else UNKNOWN
                continue
            if name in _MEMO_GET:
                stack.append(memo.get(arg, UNKNOWN))
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else UNKNOWN)
                continue
            before = opcode.stack_before
            if pickletools.markobject in before:
                index = before.index(pickletools.markobject)
                marks = [i for i, item in enumerate(stack) if item is MARK]
                if not marks:
                    malformed(f"{name} without MARK", position)
                    return findings
                del stack[marks[-1]:]
                if pop(index, position) is None:
                    return findings
            elif pop(len(before), position) is None:
                return findings
            for item in opcode.stack_after:
                if item is pickletools.markobject:
                    stack.append(MARK)
                elif name in _STRING_OPS and isinstance(arg, str):
                    stack.append(arg)
                else:
                    stack.append(UNKNOWN)
    except (ValueError, EOFError, OverflowError, UnicodeDecodeError) as exc:
        malformed(str(exc).split("\n")[0][:200], reader.tell())
    return findings
