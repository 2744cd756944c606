"""A blob store that fails on demand: the local store behind a fault-injecting wrapper.

Offered as the backend ``faulty`` by the plugin object :data:`plugin` (settings
``modelreg.storage.faulty.path``).  :meth:`FaultyBlobStore.fail` arms a fault: the next call
of a method reads ``after`` bytes of its stream (so that the local store really writes, and
must clean up), then raises the given exception, as a full disk or a failing device would.
"""

from __future__ import annotations

import errno
from typing import Any

from zope.interface import implementer

from modelreg import api
from modelreg.storage.local import LocalBlobStore


class _Fault(Exception):
    """Raised inside the wrapped store's read of the stream, turned into the armed error."""


class _FailingStream:
    def __init__(self, stream: Any, after: int) -> None:
        self.stream = stream
        self.left = after

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise _Fault()
        data = self.stream.read(min(n, self.left) if n and n > 0 else self.left)
        self.left -= len(data)
        return data


@implementer(api.IBlobStore)
class FaultyBlobStore:
    """Delegates to a :class:`LocalBlobStore`, failing where :meth:`fail` says."""

    def __init__(self, root: str) -> None:
        self.inner = LocalBlobStore(root)
        self.root = self.inner.root
        self.faults: dict[str, tuple[BaseException, int]] = {}
        #: Called with the :class:`BlobInfo` after each successful ``put`` (to race it).
        self.after_put: Any = None

    def fail(self, method: str, error: BaseException, after: int = 0) -> None:
        """Make the next call of ``method`` fail with ``error`` after ``after`` bytes."""
        self.faults[method] = (error, after)

    def _fault(self, method: str) -> tuple[BaseException, int] | None:
        return self.faults.pop(method, None)

    def _run(self, method: str, call: Any, stream: Any = None, **kwargs: Any) -> Any:
        fault = self._fault(method)
        if fault is None:
            return call(stream, **kwargs) if stream is not None else call(**kwargs)
        error, after = fault
        if stream is None:
            raise error
        try:
            call(_FailingStream(stream, after), **kwargs)
        except _Fault:
            raise error from None
        raise error

    def put(self, stream, *, expected_sha256=None, max_size=None):
        info = self._run("put", self.inner.put, stream, expected_sha256=expected_sha256,
                         max_size=max_size)
        if self.after_put is not None:
            self.after_put(info)
        return info

    def upload_part(self, state, *, number, stream, length, expected_sha256=None,
                    offset=None):
        fault = self._fault("upload_part")
        if fault is None:
            return self.inner.upload_part(state, number=number, stream=stream, length=length,
                                          expected_sha256=expected_sha256, offset=offset)
        error, after = fault
        try:
            self.inner.upload_part(state, number=number, stream=_FailingStream(stream, after),
                                   length=length, expected_sha256=expected_sha256,
                                   offset=offset)
        except _Fault:
            raise error from None
        raise error

    def delete_part(self, state, part):
        return self.inner.delete_part(state, part)

    def complete_parts(self, state, parts, *, expected_sha256):
        fault = self._fault("complete_parts")
        if fault is not None:
            raise fault[0]
        return self.inner.complete_parts(state, parts, expected_sha256=expected_sha256)

    def open(self, sha256, start=0, end=None):
        fault = self._fault("open")
        if fault is not None:
            raise fault[0]
        return self.inner.open(sha256, start, end)

    def exists(self, sha256):
        return self.inner.exists(sha256)

    def stat(self, sha256):
        return self.inner.stat(sha256)

    def delete(self, sha256):
        fault = self._fault("delete")
        if fault is not None:
            raise fault[0]
        return self.inner.delete(sha256)

    def iter_digests(self):
        return self.inner.iter_digests()

    def check(self):
        fault = self._fault("check")
        if fault is not None:
            raise fault[0]
        return self.inner.check()

    def download_url(self, sha256, *, filename, expires=None):
        return self.inner.download_url(sha256, filename=filename, expires=expires)

    def file_path(self, sha256):
        return self.inner.file_path(sha256)

    def begin_upload(self):
        fault = self._fault("begin_upload")
        if fault is not None:
            raise fault[0]
        return self.inner.begin_upload()

    def abort_upload(self, state):
        return self.inner.abort_upload(state)


def eio() -> api.StorageError:
    """What the local store raises for an I/O error of the device."""
    error = api.StorageError("local storage failed while writing a blob: Input/output error")
    error.__cause__ = OSError(errno.EIO, "Input/output error")
    return error


class _Plugin:
    @api.hookimpl
    def modelreg_storage_backends(self):
        return [api.BackendDescription(
            "faulty", lambda settings: FaultyBlobStore(settings["modelreg.storage.faulty.path"]),
            "the local store, failing on demand (tests)")]


plugin = _Plugin()
