"""Exceptions of the blob store.  Re-exported by :mod:`modelreg.api`.

A backend raises these (and only these, plus :class:`ValueError` for malformed arguments) from
every method of :class:`modelreg.interfaces.IBlobStore`; the core turns them into responses:
:class:`BlobNotFound` and :class:`UploadNotFound` into 404, :class:`DigestMismatch` into 400,
:class:`BlobTooLarge` into 413, :class:`StorageFull` into 507 and any other
:class:`StorageError` into 503.  None of them is an :class:`OSError`, so that the core never
mistakes a client's dropped connection for a storage failure or the other way round.
"""

from __future__ import annotations


class StorageError(Exception):
    """The blob store failed: unreachable, unwritable, misconfigured, or refused a path.

    Backends raise a subclass where one fits and this class otherwise, chaining the original
    exception (``raise StorageError(...) from exc``) so that logs keep the cause.
    """


class BlobNotFound(StorageError):
    """No blob with that digest exists in the store.

    :ivar sha256: the digest that was asked for.
    """

    def __init__(self, sha256: str, message: str | None = None) -> None:
        super().__init__(message or f"no blob sha256:{sha256}")
        self.sha256 = sha256


class UploadNotFound(StorageError):
    """The temporary data of a resumable upload is gone (aborted, completed, or cleaned up)."""


class DigestMismatch(StorageError):
    """The content's sha256 is not the one the caller promised; nothing was stored.

    :ivar expected: the digest the caller gave.
    :ivar actual: the digest of the bytes received.
    """

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"content has sha256:{actual}, expected sha256:{expected}")
        self.expected = expected
        self.actual = actual


class BlobTooLarge(StorageError):
    """The content is larger than the ``max_size`` the caller allowed; nothing was stored.

    :ivar max_size: the limit in bytes.
    """

    def __init__(self, max_size: int) -> None:
        super().__init__(f"content is larger than {max_size} bytes")
        self.max_size = max_size


class StorageFull(StorageError):
    """The store has no room left (a full disk, an exhausted quota); nothing was stored."""
