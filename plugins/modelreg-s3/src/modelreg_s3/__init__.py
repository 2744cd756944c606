"""S3-compatible blob storage for modelreg (AWS S3, MinIO, Ceph RGW, Cloudflare R2, ...).

A plugin like any third party's: registered through the ``modelreg`` entry-point group
(``storage-s3``) and written against :mod:`modelreg.api` only.  Select it with
``modelreg.storage = s3``.

Settings (``modelreg.storage.s3.*``; each one the ini leaves unset is read from the
environment variable ``MODELREG_S3_<NAME>`` when that is set, e.g. ``MODELREG_S3_BUCKET`` or
``MODELREG_S3_ENDPOINT_URL``, the way the core reads ``MODELREG_DATABASE_URL``; an ini value
always wins):

``bucket`` (required)
    the bucket; it must exist.
``prefix``
    a key prefix, so that several registries can share a bucket (default: none).
``endpoint_url``
    for S3-compatible services (``https://minio.internal:9000``); default: AWS.
``region``
    the region; default: boto3's chain (``AWS_DEFAULT_REGION``, ``~/.aws/config``).
``addressing_style``
    ``auto`` (default), ``path`` (most S3-compatible services) or ``virtual``.
``access_key_id``, ``secret_access_key``
    credentials; default: boto3's chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE``, instance roles...).  Never write them in an ini file: use
    ``env:NAME`` or the environment.
``request_checksum_calculation``
    ``when_supported`` (default): every write carries a SHA-256 checksum that the service
    verifies; ``when_required``: only where the API requires one (for services that do not
    support the flexible checksums).
``response_checksum_validation``
    ``when_supported`` (default) or ``when_required``: whether downloads are checked
    against the checksum the service stored.
``presigned_downloads``
    ``true`` to let downloads be answered with a redirect to a presigned URL (default
    ``false``: the registry streams the bytes itself).
``presigned_uploads``
    ``true`` to let upload sessions in numbered parts send their parts straight to S3
    (default ``false``): each part gets a presigned ``UploadPart`` URL signed for its exact
    ``Content-Length`` (and its SHA-256 checksum, unless ``request_checksum_calculation =
    when_required``); a worker job verifies the whole file's sha256 before it becomes a blob
    (:class:`modelreg.api.IDirectUploads`).  Clients need to reach the endpoint, and the
    bucket's CORS must allow ``PUT`` for browsers.
``presign_expires``
    seconds a presigned URL stays valid (default 300).
``multipart_chunk_size``
    the part size of uploads made by ``put`` (default 8 MiB, at least 5 MiB); a ``put``
    holds one part in memory.

Keys: ``<prefix>sha256/ab/cd/<hex>`` for blobs, ``<prefix>tmp/<uuid>`` for content that is
being written or verified, ``<prefix>tmp/<uuid>.parts/<n>-<hex>`` for the numbered parts of
an upload (each an object of its own, named by its number and digest, so that a second
sender of a number never changes the bytes of the first; completion reads them in order to
verify the digest, then assembles them into the blob's key with a multipart upload whose
parts are server-side copies, ``UploadPartCopy``).  A blob is copied to its content key
only after its digest was verified, so a content key always holds exactly the bytes its name
promises.  Configure a lifecycle rule that aborts incomplete multipart uploads and expires
``<prefix>tmp/`` after a few days: processes that die mid-write leave their temporary data there.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import re
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError
from zope.interface import implementer

from modelreg.api import (
    BackendDescription,
    BlobInfo,
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    IBlobStore,
    IDirectUploads,
    StorageError,
    StorageFull,
    UploadNotFound,
    hookimpl,
    validate_sha256,
)

__version__ = "0.1.0.dev0"

#: The prefix of this backend's settings.
SETTINGS_PREFIX = "modelreg.storage.s3."
#: The prefix of the environment variables that fill settings the ini leaves unset.
ENV_PREFIX = "MODELREG_S3_"
MiB = 1024 * 1024
#: Bytes read from a stream, or from S3, at a time.
READ_SIZE = MiB
#: S3's limits: smallest part but the last, most parts, largest single copy.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_COPY_SIZE = 5 * 1024 * MiB

_CHECKSUM_MODES = ("when_supported", "when_required")
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
#: Error codes of S3-compatible services that mean "no room left" (MinIO's, mostly).
_FULL = frozenset({"XMinioStorageFull", "StorageFull", "QuotaExceeded",
                   "XMinioAdminBucketQuotaExceeded"})
_DIGEST = re.compile(r"[0-9a-f]{64}")
_TMP_NAME = re.compile(r"tmp/[0-9a-f]{32}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


@contextlib.contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    """Turn botocore's exceptions into :class:`StorageError` (or :class:`StorageFull`)."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in _FULL or _status(exc) == 507:
            raise StorageFull(f"S3 storage is full while {action}") from exc
        raise StorageError(f"S3 failed while {action}: {_code(exc) or exc}") from exc
    except BotoCoreError as exc:  # connection refused, time-outs, bad credentials config
        raise StorageError(f"S3 failed while {action}: {type(exc).__name__}") from exc


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` (RFC 6266: an ASCII fallback and the UTF-8 name)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or "download"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    quoted = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise RuntimeError(f"not a boolean: {value!r}")


class _HashingReader:
    """Reads a stream in bounded pieces, hashing and counting, refusing more than max_size."""

    def __init__(self, stream: BinaryIO, max_size: int | None) -> None:
        self.stream = stream
        self.max_size = max_size
        self.digest = hashlib.sha256()
        self.size = 0

    def read_part(self, limit: int) -> bytes:
        """Up to ``limit`` bytes; fewer only at the end of the stream."""
        pieces = []
        got = 0
        while got < limit:
            wanted = min(READ_SIZE, limit - got)
            if self.max_size is not None:  # never read more than one byte past max_size
                wanted = min(wanted, self.max_size - self.size + 1)
            piece = self.stream.read(wanted)
            if not piece:
                break
            self.size += len(piece)
            if self.max_size is not None and self.size > self.max_size:
                raise BlobTooLarge(self.max_size)
            self.digest.update(piece)
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)


class _ClosingBody(io.RawIOBase):
    """An S3 response body as a readable binary stream whose ``read(n)`` returns ``<= n``."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        with _s3_errors("reading a blob"):
            return self._body.read(None if size is None or size < 0 else size)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@implementer(IBlobStore, IDirectUploads)
class S3BlobStore:
    """Blobs as objects in an S3 bucket; see the module's documentation.

    :param client: a boto3 S3 client (thread-safe: one is shared by all threads).
    :param bucket: the bucket.
    :param prefix: the key prefix ("" or ending in "/").
    :param send_checksums: send SHA-256 checksums with writes.
    :param presigned_downloads: whether :meth:`download_url` hands out URLs.
    :param presign_expires: their default lifetime in seconds.
    :param presigned_uploads: whether :meth:`begin_direct_upload` starts direct uploads.
    :param part_size: the part size of ``put``'s multipart uploads.
    """

    #: Objects larger than this are copied in parts (S3 copies at most 5 GiB at once).
    max_copy_size = MAX_COPY_SIZE

    def __init__(
        self, client: Any, bucket: str, *, prefix: str = "", send_checksums: bool = True,
        presigned_downloads: bool = False, presign_expires: int = 300, part_size: int = 8 * MiB,
        presigned_uploads: bool = False,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise RuntimeError(f"multipart_chunk_size must be at least {MIN_PART_SIZE} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.send_checksums = send_checksums
        self.presigned_downloads = presigned_downloads
        self.presign_expires = presign_expires
        self.part_size = part_size
        self.presigned_uploads = presigned_uploads

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @classmethod
    def from_settings(cls, settings: dict[str, Any],
                      environ: Mapping[str, str] | None = None) -> S3BlobStore:
        """Build the store from its settings, ``MODELREG_S3_*`` for the ones left unset.

        :raises RuntimeError: for a missing bucket or an invalid value.
        """

        def get(name: str, default: str = "") -> str:
            value = settings.get(SETTINGS_PREFIX + name) or environ.get(ENV_PREFIX + name.upper())
            return str(value or default).strip()

        environ = os.environ if environ is None else environ
        bucket = get("bucket")
        if not bucket:
            raise RuntimeError(f"{SETTINGS_PREFIX}bucket is not set (nor {ENV_PREFIX}BUCKET)")
        prefix = get("prefix").strip("/")
        checksum_modes = {}
        for name in ("request_checksum_calculation", "response_checksum_validation"):
            checksum_modes[name] = get(name, "when_supported")
            if checksum_modes[name] not in _CHECKSUM_MODES:
                raise RuntimeError(f"{SETTINGS_PREFIX}{name} must be one of "
                                   f"{', '.join(_CHECKSUM_MODES)}")
        addressing = get("addressing_style", "auto")
        if addressing not in ("auto", "path", "virtual"):
            raise RuntimeError(f"{SETTINGS_PREFIX}addressing_style must be auto, path or virtual")
        key_id, secret = get("access_key_id"), get("secret_access_key")
        if bool(key_id) != bool(secret):
            raise RuntimeError(f"set both {SETTINGS_PREFIX}access_key_id and "
                               f"{SETTINGS_PREFIX}secret_access_key, or neither")
        try:
            expires = int(get("presign_expires", "300"))
            part_size = int(get("multipart_chunk_size", str(8 * MiB)))
        except ValueError as exc:
            raise RuntimeError(f"{SETTINGS_PREFIX}*: {exc}") from exc
        config = botocore.config.Config(
            # SigV4: a presigned upload URL signs the part's Content-Length and checksum.
            signature_version="s3v4",
            s3={"addressing_style": addressing},
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
            **checksum_modes,
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=get("endpoint_url") or None,
            region_name=get("region") or None,
            aws_access_key_id=key_id or None,
            aws_secret_access_key=secret or None,
            config=config,
        )
        return cls(
            client, bucket, prefix=f"{prefix}/" if prefix else "",
            send_checksums=checksum_modes["request_checksum_calculation"] == "when_supported",
            presigned_downloads=_as_bool(get("presigned_downloads")),
            presign_expires=expires, part_size=part_size,
            presigned_uploads=_as_bool(get("presigned_uploads")),
        )

    # ------------------------------------------------------------------------- keys

    def _key(self, sha256: str) -> str:
        validate_sha256(sha256)
        return f"{self.prefix}sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def _tmp_key(self) -> str:
        return f"{self.prefix}tmp/{uuid.uuid4().hex}"

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                return None
            with _s3_errors("looking up a blob"):
                raise
        except BotoCoreError:
            with _s3_errors("looking up a blob"):
                raise

    def _delete_quietly(self, key: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def _put_object(self, key: str, body: bytes) -> None:
        extra = {"ChecksumSHA256": _b64_sha256(body)} if self.send_checksums else {}
        with _s3_errors("storing a blob"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                   ContentLength=len(body), **extra)

    def _upload_part(self, key: str, upload_id: str, number: int, body: Any,
                     length: int, checksum: str | None) -> dict[str, Any]:
        extra = {"ChecksumSHA256": checksum} if checksum else {}
        try:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                ContentLength=length, **extra)
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload" or self._upload_gone(key, upload_id):
                raise UploadNotFound("the upload was aborted, completed or cleaned up") from exc
            with _s3_errors("storing a part"):
                raise
        except BotoCoreError:
            with _s3_errors("storing a part"):
                raise
        return {"PartNumber": number, "ETag": response["ETag"], **extra}

    def _upload_gone(self, key: str, upload_id: str) -> bool:
        """Whether a multipart upload no longer exists (asked after another error: some
        S3-compatible services answer a write to an aborted upload with a 500)."""
        try:
            self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id, MaxParts=1)
        except ClientError as exc:
            return _code(exc) == "NoSuchUpload"
        except BotoCoreError:
            return False
        return False

    def _create_multipart(self, key: str) -> str:
        extra = {"ChecksumAlgorithm": "SHA256"} if self.send_checksums else {}
        with _s3_errors("starting a multipart upload"):
            return self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **extra)["UploadId"]

    def _promote(self, source: str, sha256: str, size: int) -> None:
        """Copy the verified object ``source`` to the content key, unless it is there."""
        key = self._key(sha256)
        if self._head(key) is not None:  # dedupe
            return
        copy_source = {"Bucket": self.bucket, "Key": source}
        extra = {"ChecksumAlgorithm": "SHA256"} if self.send_checksums else {}
        with _s3_errors("storing a blob"):
            if size <= self.max_copy_size:
                self.client.copy_object(Bucket=self.bucket, Key=key, CopySource=copy_source,
                                        **extra)
                return
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **extra)["UploadId"]
            try:
                parts = []
                part_size = max(self.max_copy_size, -(-size // MAX_PARTS))
                for number, start in enumerate(range(0, size, part_size), start=1):
                    end = min(start + part_size, size) - 1
                    result = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        CopySource=copy_source, CopySourceRange=f"bytes={start}-{end}",
                    )["CopyPartResult"]
                    part = {"PartNumber": number, "ETag": result["ETag"]}
                    if "ChecksumSHA256" in result:
                        part["ChecksumSHA256"] = result["ChecksumSHA256"]
                    parts.append(part)
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
            except BaseException:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                       UploadId=upload_id)
                raise

    def _hash_object(self, key: str) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with _s3_errors("verifying an upload"):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with contextlib.closing(body):
                for piece in body.iter_chunks(READ_SIZE):
                    digest.update(piece)
                    size += len(piece)
        return digest.hexdigest(), size

    # ------------------------------------------------------------------------- writing

    def put(
        self, stream: BinaryIO, *, expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        if expected_sha256 is not None:
            validate_sha256(expected_sha256)
        reader = _HashingReader(stream, max_size)
        first = reader.read_part(self.part_size)
        if len(first) < self.part_size:
            # All of it fits in one part: the digest is known before anything is sent, so
            # the bytes go straight to their content key (an S3 PUT is all or nothing).
            sha256 = reader.digest.hexdigest()
            self._check(expected_sha256, sha256)
            key = self._key(sha256)
            if self._head(key) is None:
                self._put_object(key, first)
            return BlobInfo(sha256, len(first))
        tmp = self._tmp_key()
        upload_id = self._create_multipart(tmp)
        try:
            parts = []
            part = first
            while part:
                checksum = _b64_sha256(part) if self.send_checksums else None
                parts.append(self._upload_part(tmp, upload_id, len(parts) + 1, part,
                                               len(part), checksum))
                part = reader.read_part(self.part_size)
            with _s3_errors("storing a blob"):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=tmp, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=tmp,
                                                   UploadId=upload_id)
            raise
        try:
            sha256 = reader.digest.hexdigest()
            self._check(expected_sha256, sha256)
            self._promote(tmp, sha256, reader.size)
        finally:
            self._delete_quietly(tmp)
        return BlobInfo(sha256, reader.size)

    @staticmethod
    def _check(expected: str | None, actual: str) -> None:
        if expected is not None and not hmac.compare_digest(expected, actual):
            raise DigestMismatch(expected, actual)

    def delete(self, sha256: str) -> bool:
        key = self._key(sha256)
        if self._head(key) is None:
            return False
        with _s3_errors("deleting a blob"):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    # ------------------------------------------------------------------------- reading

    def exists(self, sha256: str) -> bool:
        return self._head(self._key(sha256)) is not None

    def stat(self, sha256: str) -> BlobInfo:
        head = self._head(self._key(sha256))
        if head is None:
            raise BlobNotFound(sha256)
        return BlobInfo(sha256, int(head["ContentLength"]))

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range [{start}, {end})")
        key = self._key(sha256)
        if end == start:
            if start > self.stat(sha256).size:
                raise ValueError(f"range start {start} is past the end of the blob")
            return io.BytesIO(b"")
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                raise BlobNotFound(sha256) from None
            if _code(exc) == "InvalidRange" or _status(exc) == 416:
                if start == self.stat(sha256).size:
                    return io.BytesIO(b"")
                raise ValueError(f"range start {start} is past the end of the blob") from None
            with _s3_errors("opening a blob"):
                raise
        except BotoCoreError:
            with _s3_errors("opening a blob"):
                raise
        return _ClosingBody(response["Body"])

    def iter_digests(self) -> Iterator[str]:
        base = f"{self.prefix}sha256/"
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors("listing blobs"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for item in page.get("Contents", ()):
                    parts = item["Key"][len(base):].split("/")
                    if (len(parts) == 3 and _DIGEST.fullmatch(parts[2])
                            and parts[0] == parts[2][:2] and parts[1] == parts[2][2:4]):
                        yield parts[2]

    def check(self) -> None:
        with _s3_errors(f"reaching the bucket {self.bucket!r}"):
            self.client.head_bucket(Bucket=self.bucket)

    def download_url(self, sha256: str, *, filename: str, expires: int | None = None) -> str | None:
        key = self._key(sha256)
        if not self.presigned_downloads:
            return None
        with _s3_errors("signing a download URL"):
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key,
                        "ResponseContentDisposition": content_disposition(filename)},
                ExpiresIn=expires or self.presign_expires,
            )

    def file_path(self, sha256: str) -> None:
        validate_sha256(sha256)
        return None

    # ------------------------------------------------------------------------- uploads

    def _state(self, state: Any) -> dict[str, Any]:
        """The upload state, checked: a tampered state must not name another key."""
        ok = (
            isinstance(state, dict)
            and isinstance(state.get("key"), str)
            and state["key"].startswith(self.prefix)
            and _TMP_NAME.fullmatch(state["key"][len(self.prefix):])
            and isinstance(state.get("upload_id"), str) and state["upload_id"]
            and isinstance(state.get("offset"), int) and state["offset"] >= 0
            and isinstance(state.get("parts"), list)
            and all(isinstance(part, dict) and isinstance(part.get("PartNumber"), int)
                    and isinstance(part.get("ETag"), str) for part in state["parts"])
        )
        if not ok:
            raise ValueError(f"not an upload state of the S3 storage backend: {state!r}")
        return state

    def begin_upload(self) -> dict[str, Any]:
        key = self._tmp_key()
        return {"key": key, "upload_id": self._create_multipart(key), "parts": [], "offset": 0}

    def abort_upload(self, state: dict[str, Any]) -> None:
        state = self._state(state)
        self._delete_parts(state)
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=state["key"],
                                               UploadId=state["upload_id"])
        except ClientError as exc:
            if _code(exc) not in ("NoSuchUpload", "404") and _status(exc) != 404:
                with _s3_errors("aborting an upload"):
                    raise
        except BotoCoreError:
            with _s3_errors("aborting an upload"):
                raise
        # A completed but not yet verified upload leaves its object behind.
        with _s3_errors("aborting an upload"):
            self.client.delete_object(Bucket=self.bucket, Key=state["key"])


    # ------------------------------------------------------------------- numbered parts

    def _part_key(self, state: dict[str, Any], number: Any, sha256: Any) -> str:
        if not isinstance(number, int) or not 1 <= number <= MAX_PARTS:
            raise ValueError(f"a part number is 1 to {MAX_PARTS}, not {number!r}")
        validate_sha256(sha256)
        return f"{state['key']}.parts/{number}-{sha256}"

    def _delete_parts(self, state: dict[str, Any]) -> None:
        prefix = f"{state['key']}.parts/"
        with _s3_errors("freeing the parts of an upload"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket,
                                               Delete={"Objects": keys, "Quiet": True})

    def upload_part(
        self, state: dict[str, Any], *, number: int, stream: BinaryIO, length: int,
        expected_sha256: str | None = None, offset: int | None = None,
    ) -> dict[str, Any]:
        # ``offset`` (where the part starts in the file) is not needed: S3 orders parts by
        # number.
        state = self._state(state)
        if expected_sha256 is not None:
            validate_sha256(expected_sha256)
        self._part_key(state, number, "0" * 64)
        if length < 0:
            raise ValueError(f"negative part length {length}")
        if self._upload_gone(state["key"], state["upload_id"]):
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        # Spooled to a local temporary file: the checksum is sent before the bytes.
        with tempfile.TemporaryFile() as spool:
            digest = hashlib.sha256()
            remaining = length
            while remaining:
                piece = stream.read(min(READ_SIZE, remaining))
                if not piece:
                    raise ValueError(f"the part ended after {length - remaining} of its "
                                     f"{length} bytes")
                if len(piece) > min(READ_SIZE, remaining):
                    raise ValueError("the stream returned more bytes than asked for")
                remaining -= len(piece)
                digest.update(piece)
                spool.write(piece)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and not hmac.compare_digest(sha256, expected_sha256):
                raise DigestMismatch(expected_sha256, sha256)
            spool.seek(0)
            key = self._part_key(state, number, sha256)
            extra = ({"ChecksumSHA256": base64.b64encode(digest.digest()).decode()}
                     if self.send_checksums else {})
            with _s3_errors("storing a part"):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=spool,
                                       ContentLength=length, **extra)
        if self._upload_gone(state["key"], state["upload_id"]):  # aborted meanwhile
            self._delete_quietly(key)
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        return {"number": number, "size": length, "sha256": sha256}

    def delete_part(self, state: dict[str, Any], part: dict[str, Any]) -> None:
        state = self._state(state)
        key = self._part_key(state, part.get("number"), part.get("sha256"))
        with _s3_errors("deleting a part"):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def complete_parts(
        self, state: dict[str, Any], parts: list[dict[str, Any]], *, expected_sha256: str
    ) -> BlobInfo:
        validate_sha256(expected_sha256)
        state = self._state(state)
        keys = [self._part_key(state, part.get("number"), part.get("sha256"))
                for part in parts]
        if self._upload_gone(state["key"], state["upload_id"]):
            raise UploadNotFound("the upload was aborted, completed or cleaned up")
        # The parts may have been received by other processes: read them again, in order.
        digest = hashlib.sha256()
        sizes = []
        for key in keys:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                    raise UploadNotFound(f"a part of the upload is gone: {key}") from exc
                with _s3_errors("verifying an upload"):
                    raise
            except BotoCoreError:
                with _s3_errors("verifying an upload"):
                    raise
            size = 0
            with _s3_errors("verifying an upload"), contextlib.closing(body):
                for piece in body.iter_chunks(READ_SIZE):
                    digest.update(piece)
                    size += len(piece)
            sizes.append(size)
        sha256 = digest.hexdigest()
        self._check(expected_sha256, sha256)  # a mismatch keeps every part
        total = sum(sizes)
        target = self._key(sha256)
        if self._head(target) is None:
            self._assemble(target, keys, sizes)
        self.abort_upload(state)
        return BlobInfo(sha256, total)

    def _assemble(self, target: str, keys: list[str], sizes: list[int]) -> None:
        """Copy the part objects ``keys``, in order, into the object ``target``."""
        extra = {"ChecksumAlgorithm": "SHA256"} if self.send_checksums else {}
        with _s3_errors("storing a blob"):
            if len(keys) <= 1:
                if not keys:
                    self._put_object(target, b"")
                    return
                self.client.copy_object(Bucket=self.bucket, Key=target,
                                        CopySource={"Bucket": self.bucket, "Key": keys[0]},
                                        **extra)
                return
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=target, **extra)["UploadId"]
            try:
                done = []
                for number, (key, size) in enumerate(zip(keys, sizes, strict=True), start=1):
                    args = {"CopySource": {"Bucket": self.bucket, "Key": key}}
                    if size:
                        args["CopySourceRange"] = f"bytes=0-{size - 1}"
                    result = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=target, UploadId=upload_id, PartNumber=number,
                        **args)["CopyPartResult"]
                    part = {"PartNumber": number, "ETag": result["ETag"]}
                    if "ChecksumSHA256" in result:
                        part["ChecksumSHA256"] = result["ChecksumSHA256"]
                    done.append(part)
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=target, UploadId=upload_id,
                    MultipartUpload={"Parts": done})
            except BaseException:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=target,
                                                       UploadId=upload_id)
                raise


    # ------------------------------------------------------- direct uploads (presigned)

    def _direct(self, state: Any) -> dict[str, Any]:
        state = self._state(state)
        if state.get("direct") is not True:
            raise ValueError("not a direct upload of the S3 storage backend")
        return state

    def begin_direct_upload(self) -> dict[str, Any] | None:
        """A multipart upload of the client's parts, or ``None`` unless ``presigned_uploads``."""
        if not self.presigned_uploads:
            return None
        key = self._tmp_key()
        return {"key": key, "upload_id": self._create_multipart(key), "parts": [],
                "offset": 0, "direct": True}

    def presign_part(self, state: dict[str, Any], *, number: int, length: int, sha256: str,
                     expires: int | None = None) -> dict[str, Any]:
        """A presigned ``UploadPart`` signed for ``length`` bytes (and their checksum)."""
        state = self._direct(state)
        self._part_key(state, number, sha256)  # checks the number and the digest
        if not isinstance(length, int) or not 0 <= length <= MAX_COPY_SIZE:
            raise ValueError(f"a part has 0 to {MAX_COPY_SIZE} bytes, not {length!r}")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": state["key"],
                                  "UploadId": state["upload_id"], "PartNumber": number,
                                  "ContentLength": length}
        headers = {"Content-Length": str(length)}
        if self.send_checksums:  # S3 refuses a body whose SHA-256 is not this one
            checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        with _s3_errors("signing an upload URL"):
            url = self.client.generate_presigned_url(
                "upload_part", Params=params, ExpiresIn=expires or self.presign_expires)
        return {"url": url, "method": "PUT", "headers": headers}

    def _list_parts(self, state: dict[str, Any]) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=state["key"], UploadId=state["upload_id"])
            for page in pages:
                for part in page.get("Parts", ()):
                    found[int(part["PartNumber"])] = part
        except ClientError as exc:
            if _code(exc) in ("NoSuchUpload", "404") or _status(exc) == 404:
                raise UploadNotFound("the upload was aborted, completed or cleaned up") from exc
            with _s3_errors("listing the parts of an upload"):
                raise
        except BotoCoreError:
            with _s3_errors("listing the parts of an upload"):
                raise
        return found

    def list_direct_parts(self, state: dict[str, Any]) -> dict[int, int]:
        """``{number: size}`` of the parts S3 holds (``ListParts``)."""
        return {number: int(part["Size"])
                for number, part in self._list_parts(self._direct(state)).items()}

    def complete_direct(self, state: dict[str, Any], count: int) -> None:
        """``CompleteMultipartUpload`` of parts ``1..count`` into the temporary key."""
        state = self._direct(state)
        try:
            held = self._list_parts(state)
        except UploadNotFound:
            if self._head(state["key"]) is not None:  # completed already
                return
            raise
        missing = [n for n in range(1, count + 1) if n not in held]
        if missing:
            raise UploadNotFound(f"parts {missing[:10]} of the upload are gone")
        parts = []
        for number in range(1, count + 1):
            part = {"PartNumber": number, "ETag": held[number]["ETag"]}
            if held[number].get("ChecksumSHA256"):
                part["ChecksumSHA256"] = held[number]["ChecksumSHA256"]
            parts.append(part)
        with _s3_errors("completing an upload"):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=state["key"], UploadId=state["upload_id"],
                MultipartUpload={"Parts": parts})

    def verify_direct(self, state: dict[str, Any], expected_sha256: str) -> BlobInfo:
        """Hash the assembled object once; copy it to its content key if it matches."""
        validate_sha256(expected_sha256)
        state = self._direct(state)
        tmp = state["key"]
        if self._head(tmp) is None:
            done = self._head(self._key(expected_sha256))
            if done is not None:  # verified by an earlier run whose answer was lost
                return BlobInfo(expected_sha256, int(done["ContentLength"]))
            raise UploadNotFound("the upload was not completed, or was cleaned up")
        sha256, size = self._hash_object(tmp)
        if not hmac.compare_digest(sha256, expected_sha256):
            self._delete_quietly(tmp)
            raise DigestMismatch(expected_sha256, sha256)
        self._promote(tmp, sha256, size)
        self._delete_quietly(tmp)
        return BlobInfo(sha256, size)


def create_store(settings: dict[str, Any]) -> S3BlobStore:
    """The backend's factory (see the module's documentation for the settings)."""
    return S3BlobStore.from_settings(settings)


@hookimpl
def modelreg_storage_backends() -> list[BackendDescription]:
    """Offer the ``s3`` backend."""
    return [BackendDescription("s3", create_store, "objects in an S3-compatible bucket")]
