"""Contract test suites: what every implementation of an interface must do.

A backend author proves their blob store behaves like the built-in ones by subclassing
:class:`BlobStoreContract` in a test module and providing a ``blob_store`` fixture::

    import pytest
    from modelreg.testing import BlobStoreContract

    class TestMyBlobStore(BlobStoreContract):
        @pytest.fixture
        def blob_store(self, tmp_path):
            return MyBlobStore(...)   # a fresh, empty store for each test is simplest

        def leftovers(self, blob_store):   # optional, see below
            return [...]

Every ``test_*`` method of the contract then runs against that store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from ..interfaces import IBlobStore
from ..storage.errors import (
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    StorageError,
    UploadNotFound,
)
from ..types import BlobInfo

MiB = 1024 * 1024


def sha256_hex(data: bytes) -> str:
    """The lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_all(stream: Any, size: int = MiB) -> bytes:
    """Everything ``stream`` yields, read ``size`` bytes at a time; the stream is closed."""
    with stream:
        parts = []
        while chunk := stream.read(size):
            parts.append(chunk)
    return b"".join(parts)


def hash_stream(stream: Any) -> tuple[str, int]:
    """The sha256 and length of everything ``stream`` yields, without keeping it in memory."""
    digest = hashlib.sha256()
    size = 0
    with stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class GeneratedStream:
    """``size`` pseudo-random bytes produced as they are read, never all in memory.

    Records how it is read: :attr:`largest_read` is the largest ``n`` asked for (a read of
    everything counts as ``size``) and :attr:`consumed` the bytes handed out so far.
    :attr:`sha256` is the digest of the whole content.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.block = random.Random(seed).randbytes(MiB)  # noqa: S311 - test data
        self.consumed = 0
        self.largest_read = 0
        digest = hashlib.sha256()
        for start in range(0, size, MiB):
            digest.update(self._bytes(start, min(start + MiB, size)))
        self.sha256 = digest.hexdigest()

    def _bytes(self, start: int, end: int) -> bytes:
        out = bytearray()
        while start < end:
            offset = start % MiB
            piece = self.block[offset:offset + (end - start)]
            out += piece
            start += len(piece)
        return bytes(out)

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.size
        self.largest_read = max(self.largest_read, n)
        end = min(self.consumed + n, self.size)
        data = self._bytes(self.consumed, end)
        self.consumed = end
        return data

    def slice(self, start: int, end: int) -> bytes:
        """The content's bytes ``[start, end)`` (for comparing small pieces)."""
        return self._bytes(start, min(end, self.size))


class FailingStream:
    """A stream that yields ``good`` bytes, then raises ``error`` (a client that went away)."""

    def __init__(self, good: bytes, error: BaseException) -> None:
        self.stream = io.BytesIO(good)
        self.error = error

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if not data:
            raise self.error
        return data


def roundtrip(state: Any) -> Any:
    """``state`` after a trip through JSON, as when another process picks an upload up."""
    return json.loads(json.dumps(state))


def send_like_waitress(body: Any, length: int, send_buffer: int = 7919) -> bytes:
    """The bytes a server sends of the WSGI ``body`` (``length`` bytes): as Waitress's task
    and channel do for its file wrapper (``prepare``, ``get`` without skipping, a socket that
    takes part of each block, ``skip``), else by iterating it; closed at the end."""
    from waitress.buffers import ReadOnlyFileBasedBuffer

    sent = bytearray()
    try:
        if isinstance(body, ReadOnlyFileBasedBuffer) and body.prepare(length):
            while body.remain > 0:
                block = body.get(send_buffer)
                taken = block[: max(1, len(block) // 2)]
                sent += taken
                body.skip(len(taken), True)
            return bytes(sent)
        for block in body:
            sent += block
        return bytes(sent)
    finally:
        body.close()


class BlobStoreContract:
    """The behaviour every :class:`~modelreg.interfaces.IBlobStore` must show.

    Subclasses provide a ``blob_store`` fixture, and may override :meth:`leftovers` and the
    class attributes below.  Stores may be shared between tests: the tests compare before
    and after rather than expect an empty store.
    """

    #: The largest ``read(n)`` a ``put`` may make on its stream (the store may buffer one
    #: upload part, not the whole body).
    max_read_size = 8 * MiB
    #: The size of the large streamed ``put`` (more than two parts of a multipart upload).
    large_size = 20 * MiB

    def leftovers(self, blob_store: Any) -> list[str] | None:
        """Names of the temporary things the store holds (temporary files or keys,
        unfinished multipart uploads), or ``None`` if the test cannot tell.

        Override it so that the contract also checks that failed and aborted writes clean up.
        """
        return None

    def assert_no_leftovers(self, blob_store: Any) -> None:
        found = self.leftovers(blob_store)
        if found is not None:
            assert found == [], f"temporary data left behind: {found}"

    # ------------------------------------------------------------------ basics

    def test_provides_the_interface(self, blob_store):
        assert verifyObject(IBlobStore, blob_store)

    def test_check_passes(self, blob_store):
        assert blob_store.check() is None

    def test_put_stat_open_exists(self, blob_store):
        data = b"weights " * 1000
        info = blob_store.put(io.BytesIO(data))
        assert info == BlobInfo(sha256_hex(data), len(data))
        assert isinstance(info.sha256, str) and isinstance(info.size, int)
        assert blob_store.exists(info.sha256) is True
        assert blob_store.stat(info.sha256) == info
        assert read_all(blob_store.open(info.sha256)) == data
        assert info.sha256 in set(blob_store.iter_digests())

    def test_open_ranges(self, blob_store):
        data = bytes(range(256)) * 40
        sha = blob_store.put(io.BytesIO(data)).sha256
        size = len(data)
        for start, end in [(0, None), (0, size), (1, 5), (100, 101), (size - 1, None),
                           (size, None), (size, size), (7, 7), (10, size + 1000)]:
            got = read_all(blob_store.open(sha, start, end), size=97)
            assert got == data[start:end], (start, end)
        with blob_store.open(sha, 10, 20) as stream:
            assert stream.read(3) == data[10:13]
            assert stream.read(100) == data[13:20]
            assert stream.read(100) == b""
        with pytest.raises(ValueError):
            blob_store.open(sha, 5, 4)
        with pytest.raises(ValueError):
            blob_store.open(sha, -1)

    @pytest.mark.parametrize("server", ["waitress", "iteration"])
    def test_open_streams_as_servers_send_them(self, blob_store, server):
        """A download's body as the servers send it: Waitress hands a blob whose
        ``file_path()`` is set to its ``wsgi.file_wrapper`` (``tell()``, ``seek()``, reads
        of what the socket takes, then a relative seek past it) when ``open()``'s stream
        says ``seekable()``; gunicorn, the ASGI adapter and tests iterate the body."""
        from waitress.buffers import ReadOnlyFileBasedBuffer

        from ..files.download import response_body

        data = bytes(range(256)) * 400
        sha = blob_store.put(io.BytesIO(data)).sha256
        environ = {"wsgi.file_wrapper": ReadOnlyFileBasedBuffer} if server == "waitress" else {}
        for start, end in [(0, len(data)), (1000, 50_000), (len(data) - 1, len(data))]:
            raw = blob_store.open(sha, start, end)
            body = response_body(environ, raw, raw, blob_store.file_path(sha))
            assert send_like_waitress(body, end - start) == data[start:end], (start, end)

    def test_missing_blob(self, blob_store):
        sha = sha256_hex(b"never stored")
        assert blob_store.exists(sha) is False
        with pytest.raises(BlobNotFound):
            blob_store.stat(sha)
        with pytest.raises(BlobNotFound):
            blob_store.open(sha)
        assert blob_store.delete(sha) is False

    def test_delete(self, blob_store):
        info = blob_store.put(io.BytesIO(b"to be deleted"))
        assert blob_store.delete(info.sha256) is True
        assert blob_store.exists(info.sha256) is False
        with pytest.raises(BlobNotFound):
            blob_store.open(info.sha256)
        assert info.sha256 not in set(blob_store.iter_digests())
        assert blob_store.delete(info.sha256) is False

    def test_empty_blob(self, blob_store):
        info = blob_store.put(io.BytesIO(b""))
        assert info == BlobInfo(sha256_hex(b""), 0)
        assert blob_store.stat(info.sha256).size == 0
        assert read_all(blob_store.open(info.sha256)) == b""

    def test_same_bytes_twice_make_one_blob(self, blob_store):
        before = list(blob_store.iter_digests())
        first = blob_store.put(io.BytesIO(b"same bytes"))
        second = blob_store.put(io.BytesIO(b"same bytes"), expected_sha256=first.sha256)
        assert first == second
        after = list(blob_store.iter_digests())
        assert len(after) == len(set(after)) == len(before) + 1
        assert after.count(first.sha256) == 1
        assert read_all(blob_store.open(first.sha256)) == b"same bytes"
        self.assert_no_leftovers(blob_store)

    # ------------------------------------------------------------------ refusals

    def test_expected_digest_that_matches(self, blob_store):
        data = b"promised"
        assert blob_store.put(io.BytesIO(data), expected_sha256=sha256_hex(data)).size == 8

    def test_digest_mismatch_stores_nothing(self, blob_store):
        before = set(blob_store.iter_digests())
        wrong = sha256_hex(b"something else")
        with pytest.raises(DigestMismatch) as caught:
            blob_store.put(io.BytesIO(b"actual content"), expected_sha256=wrong)
        assert caught.value.expected == wrong
        assert caught.value.actual == sha256_hex(b"actual content")
        assert isinstance(caught.value, StorageError)
        assert blob_store.exists(sha256_hex(b"actual content")) is False
        assert set(blob_store.iter_digests()) == before
        self.assert_no_leftovers(blob_store)

    def test_too_large_stores_nothing(self, blob_store):
        before = set(blob_store.iter_digests())
        stream = GeneratedStream(3 * MiB, seed=3)
        with pytest.raises(BlobTooLarge) as caught:
            blob_store.put(stream, max_size=MiB + 5)
        assert caught.value.max_size == MiB + 5
        # The store stops reading once it knows the content is too large.
        assert stream.consumed <= MiB + 5 + self.max_read_size, stream.consumed
        assert not blob_store.exists(stream.sha256)
        assert set(blob_store.iter_digests()) == before
        self.assert_no_leftovers(blob_store)

    def test_exactly_max_size_fits(self, blob_store):
        data = b"x" * 1000
        assert blob_store.put(io.BytesIO(data), max_size=1000).size == 1000
        with pytest.raises(BlobTooLarge):
            blob_store.put(io.BytesIO(data + b"y"), max_size=1000)

    def test_failing_stream_propagates_and_stores_nothing(self, blob_store):
        before = set(blob_store.iter_digests())
        error = ConnectionResetError("client went away")
        with pytest.raises(ConnectionResetError):
            blob_store.put(FailingStream(b"partial" * 1000, error))
        assert set(blob_store.iter_digests()) == before
        self.assert_no_leftovers(blob_store)

    @pytest.mark.parametrize("bad", [
        "../etc/passwd", "../" * 21 + "e", "abc", "", "g" * 64, "0" * 63, "0" * 65,
        "0" * 63 + "/", " " + "0" * 63, "0" * 64 + "\n", "UPPER",
    ])
    def test_invalid_digests_are_refused(self, blob_store, bad):
        refused = (ValueError, BlobNotFound)
        calls: list[Callable[[], Any]] = [
            lambda: blob_store.exists(bad), lambda: blob_store.stat(bad),
            lambda: blob_store.open(bad), lambda: blob_store.delete(bad),
            lambda: blob_store.file_path(bad),
            lambda: blob_store.download_url(bad, filename="x.bin"),
        ]
        for call in calls:
            with pytest.raises(refused):
                call()
        with pytest.raises(ValueError):
            blob_store.put(io.BytesIO(b"data"), expected_sha256=bad)

    def test_uppercase_digest_of_a_stored_blob_is_refused(self, blob_store):
        info = blob_store.put(io.BytesIO(b"case matters"))
        upper = info.sha256.upper()
        for call in (blob_store.exists, blob_store.stat, blob_store.open, blob_store.delete):
            with pytest.raises((ValueError, BlobNotFound)):
                call(upper)
        assert blob_store.exists(info.sha256)

    # ------------------------------------------------------------------ streaming

    def test_large_put_streams_in_bounded_reads(self, blob_store):
        stream = GeneratedStream(self.large_size, seed=1)
        info = blob_store.put(stream, expected_sha256=stream.sha256)
        assert info == BlobInfo(stream.sha256, self.large_size)
        assert 0 < stream.largest_read <= self.max_read_size, stream.largest_read
        assert hash_stream(blob_store.open(info.sha256)) == (stream.sha256, self.large_size)
        middle = self.large_size // 2
        got = read_all(blob_store.open(info.sha256, middle - 10, middle + 10))
        assert got == stream.slice(middle - 10, middle + 10)

    def test_concurrent_puts(self, blob_store):
        payloads = [b"shared content"] * 4 + [f"own {i}".encode() for i in range(4)]
        results: list[BlobInfo] = []
        errors: list[BaseException] = []

        def put(data: bytes) -> None:
            try:
                results.append(blob_store.put(io.BytesIO(data * 5000)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(data,)) for data in payloads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len({info.sha256 for info in results}) == 5
        digests = list(blob_store.iter_digests())
        assert len(digests) == len(set(digests))
        for data in set(payloads):
            assert read_all(blob_store.open(sha256_hex(data * 5000))) == data * 5000
        self.assert_no_leftovers(blob_store)

    def test_download_url_and_file_path(self, blob_store):
        data = b"downloadable"
        sha = blob_store.put(io.BytesIO(data)).sha256
        url = blob_store.download_url(sha, filename="model.bin", expires=60)
        assert url is None or (isinstance(url, str) and "://" in url)
        path = blob_store.file_path(sha)
        if path is not None:
            with open(path, "rb") as file:
                assert file.read() == data

    # ------------------------------------------------------------------ uploads in parts

    def test_completing_parts_of_existing_content_dedupes(self, blob_store):
        data = b"already here" * 100
        first = blob_store.put(io.BytesIO(data))
        state = roundtrip(blob_store.begin_upload())
        part = roundtrip(blob_store.upload_part(state, number=1, stream=io.BytesIO(data),
                                                length=len(data)))
        assert blob_store.complete_parts(state, [part], expected_sha256=first.sha256) == first
        assert list(blob_store.iter_digests()).count(first.sha256) == 1
        assert read_all(blob_store.open(first.sha256)) == data
        self.assert_no_leftovers(blob_store)

    def test_complete_parts_refuses_an_invalid_digest(self, blob_store):
        state = roundtrip(blob_store.begin_upload())
        part = roundtrip(blob_store.upload_part(state, number=1, stream=io.BytesIO(b"abc"),
                                                length=3))
        with pytest.raises(ValueError):
            blob_store.complete_parts(state, [part], expected_sha256="../../etc/passwd")
        blob_store.abort_upload(state)
        blob_store.abort_upload(roundtrip(state))  # idempotent
        self.assert_no_leftovers(blob_store)

    def test_parts_in_any_order_from_several_threads(self, blob_store):
        """Parts arrive out of order and in parallel (each with its state from JSON, as
        from another process); completion assembles them in the order given."""
        stream = GeneratedStream(2 * 5 * MiB + 123, seed=11)
        content = stream.slice(0, stream.size)
        bounds = [(1, 0, 5 * MiB), (2, 5 * MiB, 10 * MiB), (3, 10 * MiB, stream.size)]
        state = roundtrip(blob_store.begin_upload())
        before = set(blob_store.iter_digests())
        found: dict[int, Any] = {}
        errors: list[BaseException] = []

        def send(number: int, start: int, end: int) -> None:
            try:
                piece = content[start:end]
                found[number] = roundtrip(blob_store.upload_part(
                    roundtrip(state), number=number, stream=io.BytesIO(piece),
                    length=len(piece), expected_sha256=sha256_hex(piece)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=bound) for bound in reversed(bounds)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for number, start, end in bounds:
            assert found[number]["number"] == number
            assert found[number]["size"] == end - start
            assert found[number]["sha256"] == sha256_hex(content[start:end])
        assert set(blob_store.iter_digests()) == before
        info = blob_store.complete_parts(state, [found[1], found[2], found[3]],
                                         expected_sha256=stream.sha256)
        assert info == BlobInfo(stream.sha256, stream.size)
        assert read_all(blob_store.open(info.sha256)) == content
        self.assert_no_leftovers(blob_store)

    def test_part_with_a_wrong_digest_keeps_nothing(self, blob_store):
        state = roundtrip(blob_store.begin_upload())
        with pytest.raises(DigestMismatch) as caught:
            blob_store.upload_part(state, number=1, stream=io.BytesIO(b"abc"), length=3,
                                   expected_sha256=sha256_hex(b"abd"))
        assert caught.value.actual == sha256_hex(b"abc")
        with pytest.raises(ValueError):
            blob_store.upload_part(state, number=1, stream=io.BytesIO(b"ab"), length=3)
        with pytest.raises(ValueError):
            blob_store.upload_part(state, number=0, stream=io.BytesIO(b"ab"), length=2)
        blob_store.abort_upload(state)
        self.assert_no_leftovers(blob_store)

    def test_a_part_stored_again_with_other_bytes_keeps_the_first(self, blob_store):
        """Two senders of one number: the part each described stays as it was sent."""
        state = roundtrip(blob_store.begin_upload())
        first = roundtrip(blob_store.upload_part(state, number=1, stream=io.BytesIO(b"first"),
                                                 length=5))
        second = roundtrip(blob_store.upload_part(state, number=1,
                                                  stream=io.BytesIO(b"other"), length=5))
        info = blob_store.complete_parts(state, [first], expected_sha256=sha256_hex(b"first"))
        assert read_all(blob_store.open(info.sha256)) == b"first"
        blob_store.delete_part(state, second)
        blob_store.abort_upload(state)
        self.assert_no_leftovers(blob_store)

    def test_complete_parts_with_a_wrong_digest_keeps_the_parts(self, blob_store):
        before = set(blob_store.iter_digests())
        data = [b"a" * (5 * MiB), b"tail"]
        state = roundtrip(blob_store.begin_upload())
        parts = [roundtrip(blob_store.upload_part(state, number=n, stream=io.BytesIO(d),
                                                  length=len(d)))
                 for n, d in enumerate(data, start=1)]
        wrong = sha256_hex(b"a" * (5 * MiB) + b"tale")
        with pytest.raises(DigestMismatch) as caught:
            blob_store.complete_parts(state, parts, expected_sha256=wrong)
        assert caught.value.actual == sha256_hex(b"".join(data))
        assert set(blob_store.iter_digests()) == before
        # The second part is replaced; the first is still there.
        blob_store.delete_part(state, parts[1])
        parts[1] = roundtrip(blob_store.upload_part(state, number=2,
                                                    stream=io.BytesIO(b"tale"), length=4))
        info = blob_store.complete_parts(state, parts, expected_sha256=wrong)
        assert info.sha256 == wrong and info.size == 5 * MiB + 4
        self.assert_no_leftovers(blob_store)

    def test_abort_frees_the_parts(self, blob_store):
        state = roundtrip(blob_store.begin_upload())
        part = blob_store.upload_part(state, number=1, stream=io.BytesIO(b"x" * 100),
                                      length=100)
        blob_store.abort_upload(state)
        self.assert_no_leftovers(blob_store)
        with pytest.raises(UploadNotFound):
            blob_store.upload_part(state, number=2, stream=io.BytesIO(b"y"), length=1)
        with pytest.raises(UploadNotFound):
            blob_store.complete_parts(state, [part], expected_sha256=sha256_hex(b"x" * 100))
        self.assert_no_leftovers(blob_store)


def send_presigned(signed: dict[str, Any], data: bytes) -> int:
    """Send ``data`` to a presigned request (:meth:`IDirectUploads.presign_part`) as a client
    would, with its headers and no credentials; the store's HTTP status."""
    import urllib.error
    import urllib.request

    headers = {k: v for k, v in signed["headers"].items() if k.lower() != "content-length"}
    headers.setdefault("Content-Type", "application/octet-stream")
    request = urllib.request.Request(  # noqa: S310 - the store's own URL
        signed["url"], data=data, method=signed.get("method", "PUT"), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


class DirectUploadsContract:
    """What a blob store that declares :class:`~modelreg.interfaces.IDirectUploads` must do.

    Subclasses provide a ``direct_store`` fixture: a store with direct uploads enabled, whose
    presigned URLs this process can reach; and may override :meth:`leftovers` (as in
    :class:`BlobStoreContract`).
    """

    #: The smallest part but the last (S3: 5 MiB).
    part_size = 5 * MiB

    def leftovers(self, store: Any) -> list[str]:
        """Temporary data the store holds (none once an upload is verified or aborted)."""
        return []

    def _upload(self, store: Any, content: bytes) -> tuple[dict[str, Any], int]:
        from ..interfaces import IDirectUploads

        assert verifyObject(IDirectUploads, store)
        state = store.begin_direct_upload()
        assert state is not None and json.loads(json.dumps(state)) == state
        count = max(1, -(-len(content) // self.part_size))
        for number in range(1, count + 1):
            part = content[(number - 1) * self.part_size:number * self.part_size]
            signed = store.presign_part(state, number=number, length=len(part),
                                        sha256=sha256_hex(part))
            assert signed["method"] == "PUT" and signed["url"].startswith("http")
            assert signed["headers"]["Content-Length"] == str(len(part))
            assert send_presigned(signed, part) == 200
        return state, count

    def test_parts_sent_to_presigned_urls_become_a_verified_blob(self, direct_store):
        content = os.urandom(self.part_size + 1000)
        before = self.leftovers(direct_store)
        state, count = self._upload(direct_store, content)
        assert direct_store.list_direct_parts(state) == {1: self.part_size, 2: 1000}
        direct_store.complete_direct(state, count)
        direct_store.complete_direct(state, count)  # again: nothing changes
        assert not direct_store.exists(sha256_hex(content))  # not a blob until verified
        info = direct_store.verify_direct(state, sha256_hex(content))
        assert info == BlobInfo(sha256_hex(content), len(content))
        assert read_all(direct_store.open(info.sha256)) == content
        assert direct_store.verify_direct(state, sha256_hex(content)) == info  # idempotent
        direct_store.abort_upload(state)
        assert direct_store.exists(info.sha256)
        assert self.leftovers(direct_store) == before

    def test_a_wrong_digest_deletes_the_content(self, direct_store):
        content = os.urandom(self.part_size + 10)
        before = self.leftovers(direct_store)
        state, count = self._upload(direct_store, content)
        direct_store.complete_direct(state, count)
        wrong = sha256_hex(b"other")
        with pytest.raises(DigestMismatch) as caught:
            direct_store.verify_direct(state, wrong)
        assert (caught.value.expected, caught.value.actual) == (wrong, sha256_hex(content))
        assert not direct_store.exists(wrong)
        assert not direct_store.exists(sha256_hex(content))
        with pytest.raises(UploadNotFound):
            direct_store.verify_direct(state, wrong)
        direct_store.abort_upload(state)
        assert self.leftovers(direct_store) == before

    def test_an_aborted_direct_upload_leaves_nothing(self, direct_store):
        before = self.leftovers(direct_store)
        state, _count = self._upload(direct_store, os.urandom(1000))
        direct_store.abort_upload(state)
        direct_store.abort_upload(state)
        with pytest.raises(UploadNotFound):
            direct_store.list_direct_parts(state)
        assert self.leftovers(direct_store) == before

    def test_presigning_checks_its_arguments(self, direct_store):
        state = direct_store.begin_direct_upload()
        try:
            for number, length, digest in ((0, 1, "0" * 64), (10_001, 1, "0" * 64),
                                           (1, -1, "0" * 64), (1, 1, "../etc")):
                with pytest.raises(ValueError):
                    direct_store.presign_part(state, number=number, length=length,
                                              sha256=digest)
        finally:
            direct_store.abort_upload(state)
