"""File paths inside a version: relative POSIX paths, refused unless plainly harmless.

A path names a file of a version (``weights/model.safetensors``); it is never used to build a
storage key or a filesystem path (blobs are stored by digest), but clients turn it into local
paths when they download a version, so the registry refuses any path that could escape a
directory or mean different things on different systems.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import Unprocessable
from ..models.files import PATH_LENGTH

#: Longest path segment (most filesystems' limit on a file name).
SEGMENT_LENGTH = 255
#: C0 and C1 control characters and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: A percent-encoded byte: a path that still holds one was encoded twice (or is a trick).
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")


def _refuse(path: str, rule: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"invalid file path: {message}",
        code="invalid_path",
        details={"field": "path", "rule": rule},
    )


def check_path(path: str) -> str:
    """Return ``path`` if it is an acceptable file path; raise 422 (``invalid_path``) else.

    Refused: the empty path, absolute paths, empty segments (``a//b``, a trailing ``/``),
    ``.`` and ``..`` segments, backslashes, NUL and other control characters, percent-encoded
    bytes (``%2e%2e``), paths not in Unicode NFC, segments over 255 and paths over 512
    characters.
    """
    if not path:
        raise _refuse(path, "empty", "the path is empty")
    if _CONTROL.search(path):
        raise _refuse(path, "control_character", "control characters (NUL included) are "
                      "not allowed")
    if len(path) > PATH_LENGTH:
        raise _refuse(path, "too_long", f"at most {PATH_LENGTH} characters")
    if "\\" in path:
        raise _refuse(path, "backslash", "use '/' to separate directories, not '\\'")
    if path.startswith("/"):
        raise _refuse(path, "absolute", "the path must be relative (no leading '/')")
    if _PERCENT_ENCODED.search(path):
        raise _refuse(path, "percent_encoded", "percent-encoded characters are not allowed "
                      "(the URL is decoded once)")
    if unicodedata.normalize("NFC", path) != path:
        raise _refuse(path, "not_nfc", "the path must be in Unicode normal form NFC")
    for segment in path.split("/"):
        if segment == "":
            raise _refuse(path, "empty_segment", "empty segments ('//' or a trailing '/') "
                          "are not allowed")
        if segment in (".", ".."):
            raise _refuse(path, "dot_segment", "'.' and '..' segments are not allowed")
        if len(segment) > SEGMENT_LENGTH:
            raise _refuse(path, "too_long", f"each segment at most {SEGMENT_LENGTH} "
                          "characters")
    return path


def basename(path: str) -> str:
    """The last segment of a (checked) path: the name a download is saved as."""
    return path.rsplit("/", 1)[-1]
