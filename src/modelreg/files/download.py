"""Sending a stored blob as an HTTP response: the core's downloads and
:func:`modelreg.api.send_blob` (``Range``, ``ETag``, conditional requests, redirects, the
server's file wrapper).  No view: :mod:`.views` and plugins' views call :func:`send_blob`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from pyramid.request import Request
from pyramid.response import FileIter, Response

from ..errors import ApiError
from ..logs import log_when_sent
from ..metrics import metered
from .paths import basename

BINARY = "application/octet-stream"
#: Bytes read from a blob at a time when sending a file.
SEND_BLOCK = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
#: Byte positions past this are beyond any file (and than a signed 64-bit column holds).
_HUGE = 2**63


def _position(digits: str) -> int:
    """The number ASCII ``digits`` write, or :data:`_HUGE` when it is larger: never ``int()``
    of thousands of digits (Python refuses more than 4,300 with ``ValueError``)."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 19 else _HUGE


def _parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """``(start, end)`` of a single satisfiable range, ``None`` to send everything, ``False``
    for an unsatisfiable one.  Malformed and multiple ranges are ignored (RFC 9110)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if any(_position(value) >= _HUGE for value in (first, last) if value):
        return False  # no file is that large: an invalid range, refused (RFC 9110 §15.5.17)
    if first == "":
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return False
        return max(size - suffix, 0), size
    start = _position(first)
    if last != "" and _position(last) < start:
        return None
    if start >= size:
        return False
    end = size if last == "" else min(_position(last) + 1, size)
    return start, end


class _BoundedReads:
    """A seekable stream whose reads return at most :data:`SEND_BLOCK` bytes.

    Waitress's file wrapper reads as much per send as the socket's send buffer holds (4 MiB
    on Linux loopback); bounded reads keep the server's memory flat however many downloads
    run at once.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > SEND_BLOCK:
            size = SEND_BLOCK
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _content_disposition(path: str) -> str:
    name = basename(path)
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _seekable(stream: Any) -> bool:
    """Whether ``stream`` says it can seek: :meth:`IBlobStore.open` promises a readable
    stream only, and a WSGI file wrapper (Waitress's) calls ``tell()`` and ``seek()``."""
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def send_blob(request: Request, sha256: str, size: int, *, path: str,
              media_type: str = BINARY) -> Response:
    """The response sending the stored blob ``sha256`` (``size`` bytes) as the file ``path``.

    ``ETag`` (the digest), ``If-None-Match`` (304), a single ``Range`` (206, 416 when not
    satisfiable), ``If-Range``, ``HEAD``, a redirect (302) where the store offers a download
    URL, and the server's ``wsgi.file_wrapper`` for stores whose blobs are files and whose
    streams seek.  Checks no permission: the caller has (public as
    :func:`modelreg.api.send_blob`).
    """
    store = request.blob_store
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": _content_disposition(path),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status=304, headerlist=list(headers.items()))
    url = store.download_url(sha256, filename=basename(path))
    if url is not None:
        return Response(status=302, headerlist=[*headers.items(), ("Location", url)])
    wanted = _parse_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None
    if wanted is False:
        error = ApiError(
            f"the range is not satisfiable: the file has {size} bytes",
            code="range_not_satisfiable", status=416,
            details={"size": size},
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
        raise error
    start, end = wanted if wanted else (0, size)
    status = 206 if wanted else 200
    headers["Content-Type"] = media_type
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = Response(status=status, headerlist=list(headers.items()))
    if request.method == "HEAD":
        response.content_length = end - start
        return response
    raw = store.open(sha256, start, end)
    stream = metered(raw, "download", request.registry)
    # The access log says what the client got once the body is sent (a 200 that failed
    # mid-stream is no 200): see modelreg.logs.LoggedBody.
    stream = log_when_sent(request, response, stream, end - start)
    response.app_iter = response_body(request.environ, raw, stream, store.file_path(sha256))
    response.content_length = end - start
    return response


def response_body(environ: dict[str, Any], raw: Any, stream: Any, file_path: Any) -> Any:
    """The WSGI body sending ``stream`` (``raw``, a store's :meth:`~IBlobStore.open`
    stream, or a wrapper of it).

    The server's ``wsgi.file_wrapper`` (Waitress's calls ``tell()`` and ``seek()``) only for
    a blob the store keeps as a file (``file_path``) whose stream says it seeks
    (``seekable()``): the interface promises nothing more than ``read`` and ``close``.
    Else plain iteration in :data:`SEND_BLOCK` reads (gunicorn, the ASGI adapter, WebTest).
    """
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None and file_path is not None and _seekable(raw):
        return wrapper(_BoundedReads(stream), SEND_BLOCK)
    return FileIter(stream, SEND_BLOCK)
