"""Pickle scanning with the unpicklers loaders run (:mod:`.unpickle`): nothing is ever
imported or called.

:func:`scan_if_pickle` reads a stream pickle after pickle up to its end with both engines of
:mod:`.unpickle` (CPython's C unpickler, as ``pickle.load``, ``torch.load`` and ``np.load``
run it; the pure-Python one, as ``joblib.load`` runs it, with joblib's inline arrays), follows
legacy ``torch.save`` files (five pickles, then the raw storages), and reports every import
either engine reached that :func:`classify` does not allow.  Imports of modules that can run
code (``os``, ``subprocess``, ``builtins.eval``, ...) are ``critical``; any other import
outside the allow-list is ``high``; both are errors.  A pickle that neither engine can read
to its ``STOP`` fails closed: an unpickler would have executed everything up to the point
where it broke; one the scanner cannot follow (:class:`~.unpickle.ScannerLimit`) too.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from .report import CRITICAL, ERROR, HIGH, finding
from .unpickle import ENGINES, Import, Reader, Recorder, ScannerLimit, Stub

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
    # NumPy arrays and scalars (numpy.core became numpy._core in NumPy 2)
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype", "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    # joblib
    "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper",
})

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
_MODULE_NAME = re.compile(r"[\w-]+(\.[\w-]+)*")
#: A name a ``module.*`` allow-list entry may stand for: one attribute, no dunder.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: How much of a file is read to recognise its format.
SNIFF_SIZE = 64 * 1024
#: ``torch.save``'s legacy (pre-zip) format: its first pickle is this number, its second
#: this protocol version (torch/serialization.py, ``MAGIC_NUMBER``, ``PROTOCOL_VERSION``).
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_PROTOCOL = 1001
#: Bytes per element of torch's storage types (``torch.<Kind>Storage``).
TORCH_ELEMENT_SIZES: dict[str, int] = {
    "Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QInt8": 1,
    "QUInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1, "Untyped": 1,
}


def split_entry(entry: str) -> tuple[str, str]:
    """An allow-list entry as ``(module, name)``: ``module:qualified.name``, or
    ``module.name`` split at its last dot (``module.*`` gives name ``*``)."""
    if ":" in entry:
        module, _, name = entry.partition(":")
        return module, name
    module, _, name = entry.rpartition(".")
    return module, name


_SAFE = frozenset(split_entry(entry) for entry in SAFE_GLOBALS)


def is_allowed(module: str, name: str, allowed: Iterable[str] = ()) -> bool:
    """Whether an import of ``name`` from ``module`` (as ``find_class`` is asked for it)
    is on the built-in allow-list or matches one of ``allowed``.

    Module and name are matched separately: ``pkg.mod.Net`` (or ``pkg.mod:Net``) allows
    only that name of module ``pkg.mod``; ``pkg.mod.*`` any single plain attribute of
    module ``pkg.mod`` -- never a dotted name (protocol 4 resolves ``os.system`` from
    ``pkg.mod`` through whatever ``pkg.mod`` imported), never a dunder name, never a
    submodule's name; ``pkg.mod:Outer.Inner`` names a nested class exactly.
    """
    if (module, name) in _SAFE:
        return True
    for entry in allowed:
        entry_module, entry_name = split_entry(entry)
        if entry_module != module:
            continue
        if entry_name == name:
            return True
        if entry_name == "*" and _PLAIN_NAME.fullmatch(name) and "__" not in name:
            return True
    return False


def classify(module: str, name: str, allowed: Iterable[str] = ()) -> str | None:
    """``None`` for an allowed import, else its risk: ``critical`` or ``high``.

    The one place that decides whether a global may be imported (see :func:`is_allowed`).

    :param allowed: extra ``module.name``, ``module:qualified.name`` or ``module.*`` entries
        to allow.
    """
    if is_allowed(module, name, allowed):
        return None
    if "__" in name or not _IDENTIFIER.fullmatch(module) or not _IDENTIFIER.fullmatch(name):
        return CRITICAL
    parts = module.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    if prefixes & DANGEROUS_MODULES or f"{module}.{name}" in DANGEROUS_MODULES:
        return CRITICAL
    if module in ("builtins", "__builtin__") and name.split(".")[0] in DANGEROUS_BUILTINS:
        return CRITICAL
    if "." in name and set(name.split(".")) & DANGEROUS_MODULES:
        return CRITICAL  # pkg.mod + os.system: an attribute path through an imported module
    return HIGH


def _risk(found: Import, allowed: Iterable[str]) -> str | None:
    risks = {classify(found.module, found.name, allowed)}
    if found.raw is not None:
        risks.add(classify(*found.raw, allowed))
    return CRITICAL if CRITICAL in risks else HIGH if HIGH in risks else None


def is_pickle_header(head: bytes) -> bool:
    """Whether ``head`` starts like a pickle of protocol 2 to 5 (``PROTO`` opcode)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def could_be_module(name: str) -> bool:
    """Whether an import system could find a module called ``name``: dotted parts of
    letters, digits, ``_`` and ``-`` (a file ``my-model.py`` on the path imports as
    ``my-model``), none empty.  What a text opcode reads from binary data up to the next
    newline (control bytes, spaces, an empty name) is no module any package ships."""
    return _MODULE_NAME.fullmatch(name) is not None


@dataclass
class _Run:
    """One engine's reading of a stream, pickle after pickle."""

    complete: int = 0
    error: str | None = None
    error_offset: int = 0
    limit: str | None = None
    storages: str | None = None


def _message(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_all(engine: str, reader: Reader, recorder: Recorder,
              layout: str | None = None) -> _Run:
    """Read pickles from ``reader`` with ``engine`` until the stream ends, or until what
    follows a complete pickle is no pickle (it breaks before importing anything that could
    exist, without a ``PROTO`` header: a loader reading on would stop there too).  Legacy
    ``torch.save`` files are followed: after the fifth pickle come the raw storages, read as
    torch reads them; so are the ``storages`` and ``tensors`` members of its oldest, tar
    layout (``layout``)."""
    run = _Run()
    if layout in TORCH_TAR_MEMBERS:
        try:
            run.storages = _torch_tar_member(engine, reader, recorder, layout, run)
        except ScannerLimit as exc:
            run.limit, run.error_offset = str(exc), reader.position
            return run
        except _NotTorch:
            pass  # its first pickle is no count: the rest is read as any file's
        except Exception as exc:  # whatever stops the unpickler stops torch.load
            run.error, run.error_offset = _message(exc), reader.position
            return run
        if run.storages:
            return run
    legacy = False
    storages: list[Any] = []
    while True:
        start = reader.position
        head = reader.peek(2)
        if not head:
            if not run.complete:
                run.error, run.error_offset = "EOFError: empty stream", start
            return run
        imports, persistent = len(recorder.imports), len(recorder.persistent)
        plausible = recorder.plausible
        try:
            value = ENGINES[engine](reader, recorder).load()
        except ScannerLimit as exc:
            run.limit, run.error_offset = str(exc), reader.position
            return run
        except RecursionError as exc:
            run.limit, run.error_offset = _message(exc), reader.position
            return run
        except MemoryError as exc:
            if engine == "python":
                raise  # no claimed length makes it allocate: this is a real shortage
            # The C unpickler allocates what a length claims before reading; the Python
            # engine reads the same stream without that and goes as far as a loader could.
            run.error, run.error_offset = _message(exc), reader.position
            return run
        except Exception as exc:  # whatever stops the unpickler stops a loader
            if run.complete and not is_pickle_header(head) and recorder.plausible == plausible:
                recorder.forget(imports)  # trailing data, whose "imports" cannot run
                return run
            run.error, run.error_offset = _message(exc), reader.position
            return run
        run.complete += 1
        if run.complete == 1 and type(value) is int and value == TORCH_MAGIC:
            legacy = True
        elif legacy and run.complete == 4:
            storages = recorder.persistent[persistent:]
        elif legacy and run.complete == 5:
            legacy = False
            run.storages = _torch_storages(reader, storages, value)
            if run.storages:
                return run


class _NotTorch(Exception):
    """The stream does not start as torch's tar layout says."""


#: The members of torch.save's oldest layout (a tar) whose pickles are interleaved with raw
#: data: torch/serialization.py, ``legacy_load``.
TORCH_TAR_MEMBERS = frozenset({"storages", "tensors"})


def _torch_tar_member(engine: str, reader: Reader, recorder: Recorder, layout: str,
                      run: _Run) -> str | None:
    """Read the ``storages`` or ``tensors`` member of a tar-layout torch checkpoint as
    torch's ``legacy_load`` does: a pickled count, then per item a pickled tuple followed
    by raw bytes (a storage: its element count and elements; a tensor: ndim as 4 bytes, 4
    ignored bytes, sizes and strides as 8 bytes each, the storage offset), and for
    storages a last pickle of views.  Why it cannot, or ``None``."""
    def one() -> Any:
        value = ENGINES[engine](reader, recorder).load()
        run.complete += 1
        return value

    count = one()
    if type(count) is not int:
        raise _NotTorch
    for _ in range(count):
        item = one()
        if not isinstance(item, tuple) or len(item) != 3:
            return f"a {layout} entry that is no (key, ..., type) triple"
        if layout == "storages":
            size = _element_size(item[2])
            raw = reader.read(8)
            if size is None or len(raw) < 8:
                return f"a storage of a type or size torch does not write: {item!r:.100}"
            numel = int.from_bytes(raw, "little", signed=True)
            if numel < 0 or reader.skip(numel * size) < numel * size:
                return f"storage {item[0]!r:.50} is cut short"
        else:
            raw = reader.read(8)
            ndim = int.from_bytes(raw[:4], "little", signed=True) if len(raw) == 8 else -1
            need = 16 * ndim + 8
            if ndim < 0 or reader.skip(need) < need:
                return f"tensor {item[0]!r:.50} is cut short"
    if layout == "storages":
        one()  # the storage views
    return None


def _element_size(storage_type: Any) -> int | None:
    if not isinstance(storage_type, type) or not issubclass(storage_type, Stub):
        return None
    name = storage_type.global_[1]
    if not name.endswith("Storage"):
        return None
    return TORCH_ELEMENT_SIZES.get(name[: -len("Storage")])


def _torch_storages(reader: Reader, persistent: list[Any], keys: Any) -> str | None:
    """Read a legacy ``torch.save`` file's raw storages as ``torch.load`` does: for each
    key of the fifth pickle, in order, the element count (8 bytes, little endian) and that
    many elements of the storage's type, as the main pickle's persistent id
    ``('storage', type, key, location, numel, view)`` declares it.  Why it cannot, or
    ``None``."""
    declared: dict[Any, tuple[int, int]] = {}
    for pid in persistent:
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            continue
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            return f"a persistent id torch does not write: {pid!r:.100}"
        _, storage_type, key, _, numel, _ = pid
        size = _element_size(storage_type)
        if size is None or type(numel) is not int or numel < 0:
            return f"a storage of a type or size torch does not write: {pid!r:.100}"
        declared[key] = (numel, size)
    if not isinstance(keys, list):
        return "the storage keys are not a list"
    for key in keys:
        if key not in declared:
            return f"storage key {key!r:.50} was never declared"
        numel, size = declared[key]
        raw = reader.read(8)
        if len(raw) < 8 or int.from_bytes(raw, "little", signed=True) != numel:
            return f"storage {key!r:.50} does not hold the {numel} elements declared"
        if reader.skip(numel * size) < numel * size:
            return f"storage {key!r:.50} is cut short"
    return None


def scan_if_pickle(
    stream: IO[bytes], *, allowed: Iterable[str] = (), member: str | None = None,
    size: int | None = None, base: int = 0, required: bool = False,
    layout: str | None = None,
) -> list[dict[str, Any]] | None:
    """Findings for ``stream`` read as pickles, or ``None`` when it is no pickle.

    Any file can be handed to an unpickler, so the question is not what the file looks
    like but what an unpickler would do with it.  Code runs only through an import, so a
    stream that both engines fail to read before their first import of a module that could
    exist (see :func:`could_be_module`; extension codes count as none: their registry is
    empty unless the loading program fills it) is no pickle, unless it starts with the
    ``PROTO`` opcode; about one random binary file in eighty starts with bytes that read as
    such an "import".  Every other stream is a pickle: its findings are the imports
    :func:`classify` refuses, ``pickle_malformed`` when neither engine reads it to its end,
    ``pickle_unsupported`` when the scanner cannot follow what a loader would do.

    :param stream: a seekable binary stream, read from its current position.
    :param size: the bytes left in ``stream``, when known.
    :param base: the offset of the stream's position in the file, for the offsets reported.
    :param required: a loader will unpickle this stream (an object ``.npy`` array): a
        stream that is no pickle fails closed too.
    :param layout: ``storages`` or ``tensors`` for those members of a tar: torch's oldest
        layout interleaves their pickles with raw data.
    """
    allowed = tuple(allowed)
    start = stream.tell()
    recorder = Recorder(could_be_module)
    runs: dict[str, _Run] = {}
    header = False
    for engine in ("python", "c"):
        stream.seek(start)
        reader = Reader(stream, base, size)
        header = is_pickle_header(reader.peek(2))
        runs[engine] = _read_all(engine, reader, recorder, layout)
    imports = recorder.imports
    if not (header or required or recorder.plausible
            or any(run.complete or run.limit for run in runs.values())):
        return None
    where = {"member": member} if member else {}
    in_member = f" of member {member}" if member else ""
    findings: list[dict[str, Any]] = []
    reported: set[tuple[str, str]] = set()
    python = runs["python"]
    joblib_read = (recorder.joblib_array is not None and not python.error
                   and not python.limit)
    # the built-in allow-list's globals this file imports (not the operator's)
    legit = [i for i in imports if i.engine == "python" and (i.module, i.name) in _SAFE]
    legit_names = {i.name.split(".")[0] for i in legit} - set(sys.stdlib_module_names)
    legit_modules = {i.module for i in legit}
    python_keys = {(i.module, i.name) for i in imports if i.engine == "python"}
    for found in sorted(imports, key=lambda i: (i.engine != "python", i.offset or 0)):
        key = (found.module, found.name)
        if key in reported:
            continue
        reported.add(key)
        risk = _risk(found, allowed)
        if risk is None:
            continue
        if (joblib_read and found.engine == "c" and risk != CRITICAL
                and key not in python_keys
                and (found.module.split(".")[0] in legit_names
                     or (found.module in legit_modules and found.name in legit_names))):
            # pickle.load reading a joblib file runs into its arrays, whose nested pickles'
            # memo indices then name the outer pickle's strings: ("NumpyArrayWrapper",
            # "dtype").  Such a recombination of the names of built-in allowed imports (a
            # module named like one of their classes, or one of their modules with another's
            # name) is nothing a package ships, and joblib.load never reads it; anything
            # else pickle.load would import there is still reported.
            continue
        kind = "dangerous" if risk == CRITICAL else "unknown"
        at = (f" at byte {found.offset}" if found.offset is not None
              else " (a point only CPython's C unpickler reaches)")
        findings.append(finding(
            f"pickle_{kind}_import",
            f"the pickle imports {kind} {found.module}.{found.name}{at}{in_member}; "
            "loading it could run code",
            ERROR, risk=risk, offset=found.offset, opcode=found.opcode, module=found.module,
            name=found.name, **where))
    for code, offset in recorder.extensions:
        findings.append(finding(
            "pickle_extension_import",
            f"the pickle imports a global through the extension registry (code {code}) "
            f"at byte {offset}{in_member}", ERROR, risk=HIGH, offset=offset,
            opcode="EXT", **where))
    for run in runs.values():
        if run.limit:
            findings.append(finding(
                "pickle_unsupported",
                f"the scanner cannot follow what a loader would do at byte "
                f"{run.error_offset}{in_member} ({run.limit}): rejected, since it could run "
                "code", ERROR, risk=HIGH, offset=run.error_offset, **where))
            break
    for run in runs.values():
        if run.storages:
            findings.append(finding(
                "torch_storages_malformed",
                f"the legacy torch checkpoint's raw storages do not match its pickles"
                f"{in_member}: {run.storages}", ERROR, **where))
            break
    if all(run.error for run in runs.values()) and not any(r.limit for r in runs.values()):
        findings.append(finding(
            "pickle_malformed",
            f"the pickle cannot be read to its end ({python.error}); an unpickler would "
            "have run everything before this point", ERROR, risk=HIGH,
            offset=python.error_offset, **where))
    return findings
