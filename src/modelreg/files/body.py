"""A request's body as a stream that reads straight into the caller's buffer.

WebOb's ``request.body_file`` wraps ``wsgi.input`` in a ``LimitedLengthFile`` whose
``readinto`` reads a new ``bytes`` object and copies it into the buffer: for a 1 GiB upload
that is 1 GiB of fresh allocations (page faults, zeroing) and one more copy.  Waitress's
``wsgi.input`` is the file it spooled the body to (or a ``BytesIO``), whose ``readinto``
fills the buffer directly; :func:`body_stream` hands that on, bounded by
``Content-Length``, to the blob store's ``upload_part`` (which reads with ``readinto``).
"""

from __future__ import annotations

import io
import mmap
import os
import stat
from typing import Any

from pyramid.request import Request
from webob.request import DisconnectionError


class BodyReader(io.RawIOBase):
    """The first ``length`` bytes of ``file`` (``wsgi.input``), read with its
    ``readinto`` where it has one.

    :raises webob.request.DisconnectionError: if ``file`` ends before ``length`` bytes
        (as WebOb's ``LimitedLengthFile`` does).
    """

    def __init__(self, file: Any, length: int) -> None:
        super().__init__()
        self._file = file
        self._readinto = getattr(file, "readinto", None)
        self.remaining = length

    def readable(self) -> bool:
        return True

    def spooled(self) -> tuple[int, int] | None:
        """``(fd, offset)``: where the unread rest of the body lies in a regular file (the
        spool Waitress wrote it to), or ``None`` (a body in memory).  A blob store may read
        the bytes again from there (``os.pread``) after it read them from this stream;
        the file is private to the request and never written again."""
        try:
            fd = self._file.fileno()
            offset = self._file.tell()
        except (AttributeError, OSError, ValueError):
            return None
        return (fd, offset) if stat.S_ISREG(os.fstat(fd).st_mode) else None

    def mapped(self, length: int) -> memoryview | None:
        """The next ``length`` bytes of the body as a read-only view of the spool mapped into
        memory (no copy), which counts them as read; ``None`` when the body is not in a
        regular file at a page-aligned offset (then read it).  The spool is private to the
        request and never written again, so the mapping cannot lose its pages under it."""
        where = self.spooled() if 0 < length <= self.remaining else None
        if where is None or where[1] % mmap.ALLOCATIONGRANULARITY:
            return None
        fd, offset = where
        if os.fstat(fd).st_size < offset + length:
            return None
        view = memoryview(mmap.mmap(fd, length, offset=offset, access=mmap.ACCESS_READ))
        self._file.seek(offset + length)
        self.remaining -= length
        return view

    def readinto(self, buffer: Any) -> int:
        if not self.remaining:
            return 0
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self.remaining)
        if self._readinto is not None:
            got = self._readinto(view[:wanted]) or 0
        else:
            data = self._file.read(wanted)
            got = len(data)
            view[:got] = data
        self.remaining -= got
        if got == 0:
            raise DisconnectionError("The client disconnected while sending the body "
                                     f"({self.remaining} more bytes were expected)")
        return got


def body_stream(request: Request) -> Any:
    """The request's body: a :class:`BodyReader` of ``wsgi.input`` when WebOb would wrap it
    in a ``LimitedLengthFile``, else ``request.body_file``."""
    length = request.content_length
    if (length is None or not request.is_body_readable or request.is_body_seekable
            or "webob._body_file" in request.environ):
        return request.body_file
    return BodyReader(request.body_file_raw, length)
