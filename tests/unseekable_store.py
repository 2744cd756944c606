"""A storage backend an outside author could write from the docs: blobs are files
(``file_path()`` returns a path) but ``open()`` returns a stream that only reads — all the
interface promises.  Plugin ``unseekable_store``, backend ``unseekable``."""

from __future__ import annotations

from typing import Any

from modelreg.api import BackendDescription, hookimpl
from modelreg.storage.local import LocalBlobStore, create_store


class ReadOnly:
    """A stream with ``read`` and ``close`` only (no ``seek``, ``tell``, ``seekable``)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int | None = -1) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ReadOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UnseekableStore(LocalBlobStore):
    """The local backend, with streams that do not seek."""

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Any:
        return ReadOnly(super().open(sha256, start, end))


def create(settings: dict[str, Any]) -> UnseekableStore:
    return UnseekableStore(create_store(settings).root)


@hookimpl
def modelreg_storage_backends() -> list[BackendDescription]:
    """Offer the ``unseekable`` backend."""
    return [BackendDescription("unseekable", create, "local files, streams that only read")]
