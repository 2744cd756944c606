"""File paths inside a version: relative POSIX paths, refused unless plainly harmless.

A path names a file of a version (``weights/model.safetensors``); it is never used to build a
storage key or a filesystem path (blobs are stored by digest), but clients turn it into local
paths when they download a version, so the registry refuses any path that could escape a
directory or mean different things on different systems.

Two sets of rules:

* :func:`check_path` — every request naming a file (reading, deleting, writing): a path that
  could escape a directory or that no query should see is never looked up.
* :func:`check_new_path` — writing a file (``PUT``, an upload session, linking by digest): also
  a path every client can write on Linux, macOS and Windows.  Versions stored before a rule
  existed keep their paths and stay readable; only new files must follow them.
  :func:`conflict` adds the rules that compare a path with the version's other files (a file
  and a folder of one name; names equal once case-folded and normalised), which callers run
  under the version's lock.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

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


#: Device names Windows reserves in every folder, with or without an extension
#: (``con``, ``con.txt``), in any case; ``¹²³`` count as digits there.
WINDOWS_RESERVED_NAMES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{device}{n}" for device in ("com", "lpt") for n in "0123456789\u00b9\u00b2\u00b3"]
)
#: Characters Windows refuses in names (besides ``\\``, ``/`` and control characters).
WINDOWS_RESERVED_CHARACTERS = frozenset(':*?"<>|')


def check_new_path(path: str) -> str:
    """Return ``path`` if a new file may have it; raise 422 (``invalid_path``) else.

    :func:`check_path`'s rules, and (``details.rule`` in brackets): segments over 255 bytes of
    UTF-8 [``segment_too_long``]; format characters, Unicode category Cf, such as bidi
    overrides and zero-width spaces [``format_character``]; the characters ``: * ? " < > |``
    [``reserved_character``]; Windows device names such as ``con``, ``nul``, ``com1`` or
    ``lpt9``, also with an extension [``reserved_name``]; segments ending in a dot or a space
    [``trailing_dot_or_space``].
    """
    check_path(path)
    for char in path:
        if unicodedata.category(char) == "Cf":
            raise _refuse(path, "format_character",
                          f"format characters such as U+{ord(char):04X} (bidi controls, "
                          "zero-width characters) are not allowed")
        if char in WINDOWS_RESERVED_CHARACTERS:
            raise _refuse(path, "reserved_character",
                          f"{char!r} is not allowed (Windows refuses "
                          f"{' '.join(sorted(WINDOWS_RESERVED_CHARACTERS))})")
    for segment in path.split("/"):
        if len(segment.encode("utf-8")) > SEGMENT_LENGTH:
            raise _refuse(path, "segment_too_long",
                          f"each segment at most {SEGMENT_LENGTH} bytes of UTF-8")
        if segment[-1] in ". ":
            raise _refuse(path, "trailing_dot_or_space",
                          "a segment may not end in a dot or a space")
        if segment.split(".", 1)[0].rstrip(" ").lower() in WINDOWS_RESERVED_NAMES:
            raise _refuse(path, "reserved_name",
                          f"{segment!r} is a device name on Windows (con, prn, aux, nul, "
                          "com0-com9, lpt0-lpt9), with any extension")
    return path


def fold(segment: str) -> str:
    """The form in which two segments are the same name on a case-insensitive or
    normalising filesystem (Windows, macOS): canonical caseless matching (Unicode §3.13)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", segment).casefold())


def conflict(path: str, others: Iterable[str]) -> Unprocessable | None:
    """The 422 (``invalid_path``) when a version holding the files ``others`` cannot also
    hold ``path``; ``None`` when it can (``path`` itself among ``others`` is a replacement).

    Rules (``details.rule``): a file and a folder of one name, ``x`` and ``x/y`` in either
    order [``file_folder``]; a file or folder whose name equals another's once case-folded and
    normalised (``Model.bin`` and ``model.bin``; ``é`` in NFC and NFD) [``case_collision``].
    ``details.conflicts_with`` names the other file.
    """
    segments = path.split("/")
    folded = [fold(s) for s in segments]
    for other in others:
        if other == path:
            continue
        other_segments = other.split("/")
        if fold(other_segments[0]) != folded[0]:
            continue  # the usual case, decided on the first segment
        for mine, theirs, key in zip(segments, other_segments, folded, strict=False):
            if fold(theirs) != key:
                break  # different names here: no conflict below
            if mine != theirs:
                return _conflict(path, other, "case_collision",
                                 f"{mine!r} and {theirs!r} are one name on case-insensitive "
                                 "or normalising filesystems (Windows, macOS)")
        else:
            shorter = min(len(segments), len(other_segments))
            if len(segments) != len(other_segments):
                file, folder = (path, other) if len(segments) == shorter else (other, path)
                return _conflict(path, other, "file_folder",
                                 f"{file!r} is a file, so no file can be inside it "
                                 f"({folder!r})")
    return None


def _conflict(path: str, other: str, rule: str, message: str) -> Unprocessable:
    error = _refuse(path, rule, message)
    error.details["conflicts_with"] = other
    return error


def basename(path: str) -> str:
    """The last segment of a (checked) path: the name a download is saved as."""
    return path.rsplit("/", 1)[-1]
