"""Request and response bodies of the file API, declared once (see the registry's schemas)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..models.files import MEDIA_TYPE_LENGTH, PATH_LENGTH
from ..registry.schemas import Body


class FileOut(BaseModel):
    """A file of a version."""

    path: str = Field(description="Relative POSIX path inside the version.")
    size: int
    sha256: str = Field(description="Lowercase hex sha256 of the content.")
    media_type: str
    created_at: dt.datetime
    created_by: str | None


class FileList(BaseModel):
    """The files of a version, sorted by path."""

    model: str
    version: int
    digest: str | None = Field(description="The version's digest once it is ready.")
    files: list[FileOut]


class FileLink(Body):
    """Body of ``POST …/versions/{n}/files``: add a file by the digest of content the
    registry already holds (no bytes sent)."""

    path: str = Field(max_length=PATH_LENGTH * 4)
    digest: str = Field(max_length=100, description="sha256:<hex> of the content.")
    size: int | None = Field(None, ge=0, description="The content's size, checked if given.")
    media_type: str | None = Field(None, max_length=MEDIA_TYPE_LENGTH)


class UploadCreate(Body):
    """Body of ``POST …/versions/{n}/uploads``: open a resumable upload of one file."""

    path: str = Field(max_length=PATH_LENGTH * 4)
    size: int | None = Field(None, ge=0, description="The whole file's size, if known.")
    digest: str | None = Field(None, max_length=100,
                               description="sha256:<hex> of the whole file, if known.")
    media_type: str | None = Field(None, max_length=MEDIA_TYPE_LENGTH)
    part_size: int | None = Field(
        None, ge=1, description="Send numbered parts of this size (every part but the "
        "last); needs size.  Without it, the file is sent in sequential chunks (PATCH).")
    direct: bool = Field(
        False, description="The client can send parts straight to the blob store at "
        "presigned URLs (POST …/parts/{n}/url); the answer's direct says whether it does.")


class PartOut(BaseModel):
    """A part an upload session holds."""

    number: int = Field(description="1-based; part n starts at (n-1) * part_size.")
    start: int = Field(description="Where the part starts in the file.")
    size: int
    digest: str | None = Field(description="sha256:<hex> of the part.")


class UploadOut(BaseModel):
    """A resumable upload session."""

    id: str
    model: str
    version: int
    path: str
    offset: int = Field(description="Bytes received so far: where the next chunk starts.")
    size: int | None
    digest: str | None
    expires_at: dt.datetime
    min_chunk_size: int = Field(description="Smallest chunk other than the last.")
    max_chunk_size: int
    location: str = Field(description="Where to send chunks (PATCH) and the digest (PUT).")
    part_size: int | None = Field(description="The size of every numbered part but the "
                                  "last, or null for sequential chunks.")
    parts_count: int | None = Field(description="How many numbered parts the file has.")
    parts: list[PartOut] = Field(description="The parts received so far, in order.")
    direct: bool = Field(False, description="The parts go straight to the blob store: ask "
                         "POST …/parts/{n}/url for each part's presigned request.")
    status: Literal["open", "verifying", "refused"] = Field(
        "open", description="verifying: a direct upload is complete and the worker checks "
        "its digest; refused: it did not match (error says why; nothing was kept).")
    error: dict[str, Any] | None = Field(None, description="Why the session was refused: "
                                         "code, message, details.")


class PartUrlIn(Body):
    """Body of ``POST /api/v1/uploads/{id}/parts/{n}/url``: the part's digest."""

    digest: str = Field(max_length=100, description="sha256:<hex> of the part.")


class PartUrlOut(BaseModel):
    """A presigned request that stores one part of a direct upload in the blob store."""

    number: int
    start: int = Field(description="Where the part starts in the file.")
    size: int = Field(description="The part's exact length: the URL is signed for it.")
    digest: str
    url: str = Field(description="Send the part here, without modelreg credentials.")
    method: str = Field(description="PUT.")
    headers: dict[str, str] = Field(description="Send exactly these headers with it.")
