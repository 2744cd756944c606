"""The local-filesystem blob store: the contract, plus containment, clean-up and faults."""

from __future__ import annotations

import errno
import hashlib
import io
import os

import pytest
from waitress.buffers import ReadOnlyFileBasedBuffer

from modelreg.api import BlobNotFound, DigestMismatch, StorageError, StorageFull
from modelreg.storage import local
from modelreg.storage.local import LocalBlobStore, create_store
from modelreg.testing import BlobStoreContract


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temporary_files(store: LocalBlobStore) -> list[str]:
    return sorted(
        f"{area.name}/{name}" for area in (store.root / "tmp", store.root / "uploads")
        for name in os.listdir(area)
    )


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blob_store(self, tmp_path):
        return LocalBlobStore(tmp_path / "blobs")

    def leftovers(self, blob_store):
        return temporary_files(blob_store)


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "root")


# --------------------------------------------------------------------------- layout, factory


def test_layout_is_two_levels_of_fan_out(store):
    data = b"layout"
    info = store.put(io.BytesIO(data))
    expected = store.root / "blobs" / "sha256" / info.sha256[:2] / info.sha256[2:4] / info.sha256
    assert expected.read_bytes() == data
    assert store.file_path(info.sha256) == str(expected)
    assert temporary_files(store) == []


def test_factory_needs_the_path_setting(tmp_path):
    with pytest.raises(RuntimeError, match=r"modelreg\.storage\.local\.path"):
        create_store({})
    store = create_store({"modelreg.storage.local.path": str(tmp_path / "a" / "b")})
    assert store.root == (tmp_path / "a" / "b").resolve()
    assert (tmp_path / "a" / "b" / "blobs" / "sha256").is_dir()


def test_the_root_may_be_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    store = LocalBlobStore(tmp_path / "link")
    info = store.put(io.BytesIO(b"via a link"))
    assert store.stat(info.sha256).size == 10
    assert (tmp_path / "real" / "blobs").is_dir()


def test_two_instances_share_an_upload(tmp_path):
    """Any process may continue an upload another began: the state is all in the dict."""
    first, second = LocalBlobStore(tmp_path / "s"), LocalBlobStore(tmp_path / "s")
    state = first.begin_upload()
    parts = [second.upload_part(state, number=1, stream=io.BytesIO(b"hello "), length=6),
             first.upload_part(state, number=2, stream=io.BytesIO(b"world"), length=5)]
    info = second.complete_parts(state, parts, expected_sha256=sha(b"hello world"))
    assert first.stat(info.sha256).size == 11


def test_open_works_as_a_wsgi_file_wrapper(store):
    data = bytes(range(256)) * 10
    info = store.put(io.BytesIO(data))
    stream = store.open(info.sha256, 100, 1100)
    wrapper = ReadOnlyFileBasedBuffer(stream, block_size=64)
    assert wrapper.prepare() == 1000  # waitress measures the range by seeking
    body = b"".join(iter(wrapper))
    assert body == data[100:1100]
    stream.close()


def test_put_is_durable(store, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(local.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store.put(io.BytesIO(b"durable"))
    assert len(synced) >= (1 if os.name == "nt" else 2)  # the file, then its directory


# --------------------------------------------------------------------------- containment


def test_invalid_upload_states_are_refused(store):
    for state in ({"id": "../../etc", "offset": 0}, {"id": "A" * 32, "offset": 0}, {},
                  "not a dict", {"id": None}):
        with pytest.raises(ValueError):
            store.upload_part(state, number=1, stream=io.BytesIO(b"x"), length=1)
        with pytest.raises(ValueError):
            store.abort_upload(state)


def test_symlinked_fan_out_directory_cannot_escape(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = b"would land outside"
    digest = sha(data)
    (store.root / "blobs" / "sha256" / digest[:2]).symlink_to(outside, target_is_directory=True)
    # A file planted outside under the name the blob would have is never read...
    (outside / digest[2:4]).mkdir()
    (outside / digest[2:4] / digest).write_bytes(b"secret outside the root")
    for call in (store.exists, store.stat, store.open, store.delete, store.file_path):
        with pytest.raises(StorageError):
            call(digest)
    # ...nor written.
    (outside / digest[2:4] / digest).unlink()
    (outside / digest[2:4]).rmdir()
    with pytest.raises(StorageError):
        store.put(io.BytesIO(data))
    assert list(outside.iterdir()) == []
    assert temporary_files(store) == []
    assert list(store.iter_digests()) == []


def test_symlinked_blob_file_cannot_escape(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"password")
    digest = sha(b"password")
    parent = store.root / "blobs" / "sha256" / digest[:2] / digest[2:4]
    parent.mkdir(parents=True)
    (parent / digest).symlink_to(secret)
    with pytest.raises(StorageError):
        store.open(digest)
    with pytest.raises(StorageError):
        store.delete(digest)
    assert secret.read_bytes() == b"password"
    assert list(store.iter_digests()) == []  # links are not listed as blobs


def test_symlinked_tmp_directory_is_refused(store, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store.root / "tmp").rmdir()
    (store.root / "tmp").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        store.put(io.BytesIO(b"data"))
    with pytest.raises(StorageError):
        store.check()
    with pytest.raises(StorageError):
        LocalBlobStore(store.root)
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- faults


def failing_after(limit: int, code: int):
    """An ``os.write`` that fails with ``code`` once ``limit`` bytes were written."""
    real_write = os.write
    written = 0

    def write(fd, data):
        nonlocal written
        if written + len(data) > limit:
            raise OSError(code, os.strerror(code))
        written += len(data)
        return real_write(fd, data)

    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_storage_full(store, monkeypatch, code):
    monkeypatch.setattr(local.os, "write", failing_after(2 * 1024 * 1024, code))
    with pytest.raises(StorageFull):
        store.put(io.BytesIO(b"z" * 5 * 1024 * 1024))
    monkeypatch.undo()
    assert temporary_files(store) == []
    assert list(store.iter_digests()) == []


def test_a_full_disk_during_a_part(store, monkeypatch):
    state = store.begin_upload()
    first = store.upload_part(state, number=1, stream=io.BytesIO(b"a" * 10), length=10)
    monkeypatch.setattr(local.os, "write", failing_after(0, errno.ENOSPC))
    with pytest.raises(StorageFull):
        store.upload_part(state, number=2, stream=io.BytesIO(b"b" * 10), length=10)
    monkeypatch.undo()
    assert [name for name in temporary_files(store) if name.startswith("tmp/")] == []
    # The part can be sent again once there is room.
    second = store.upload_part(state, number=2, stream=io.BytesIO(b"b" * 10), length=10)
    info = store.complete_parts(state, [first, second],
                                expected_sha256=sha(b"a" * 10 + b"b" * 10))
    assert info.size == 20
    assert temporary_files(store) == []


def test_a_full_disk_at_fsync(store, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local.os, "fsync", fsync)
    with pytest.raises(StorageFull):
        store.put(io.BytesIO(b"flushed too late"))
    monkeypatch.undo()
    assert temporary_files(store) == []


def test_other_io_errors_are_storage_errors(store, monkeypatch):
    monkeypatch.setattr(local.os, "write", failing_after(0, errno.EIO))
    with pytest.raises(StorageError) as caught:
        store.put(io.BytesIO(b"data"))
    assert not isinstance(caught.value, StorageFull)
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.undo()
    assert temporary_files(store) == []


def test_a_failed_put_leaves_no_temporary_file(store):
    with pytest.raises(DigestMismatch):
        store.put(io.BytesIO(b"data"), expected_sha256=sha(b"other"))
    with pytest.raises(KeyboardInterrupt):
        store.put(_Interrupting())
    assert temporary_files(store) == []


class _Interrupting:
    def __init__(self):
        self.calls = 0

    def read(self, n=-1):
        self.calls += 1
        if self.calls > 2:
            raise KeyboardInterrupt
        return b"x" * 1000


def test_check_fails_when_the_root_is_gone(store, tmp_path):
    import shutil

    shutil.rmtree(store.root)
    with pytest.raises(StorageError):
        store.check()
    with pytest.raises(BlobNotFound):
        store.stat(sha(b"anything"))


# ------------------------------------------------------------- parts written in place


def _send(store, state, number, data, offset):
    return store.upload_part(state, number=number, stream=io.BytesIO(data), length=len(data),
                             expected_sha256=sha(data), offset=offset)


def _blob_path(store, digest):
    return store.root / "blobs" / "sha256" / digest[:2] / digest[2:4] / digest


def test_parts_in_place_out_of_order_become_the_blob_without_a_copy(store):
    data = os.urandom(3 * 100_000 + 7)
    pieces = [(n, data[(n - 1) * 100_000:n * 100_000], (n - 1) * 100_000) for n in (1, 2, 3)]
    pieces.append((4, data[300_000:], 300_000))
    state = store.begin_upload()
    parts = {n: _send(store, state, n, piece, offset) for n, piece, offset in reversed(pieces)}
    data_file = store.root / "uploads" / state["id"]
    assert data_file.read_bytes() == data  # every part at its offset of one file
    inode = data_file.stat().st_ino
    info = store.complete_parts(state, [parts[n] for n in (1, 2, 3, 4)],
                                expected_sha256=sha(data))
    assert (info.sha256, info.size) == (sha(data), len(data))
    blob = _blob_path(store, info.sha256)
    assert blob.read_bytes() == data and blob.stat().st_ino == inode  # renamed, not copied
    assert temporary_files(store) == []


def test_another_process_completes_by_reading_what_it_did_not_see(tmp_path):
    """The running hash is per process: a store that received no part reads the file."""
    first, second = LocalBlobStore(tmp_path / "s"), LocalBlobStore(tmp_path / "s")
    data = os.urandom(200_000)
    state = first.begin_upload()
    parts = [_send(first, state, 2, data[100_000:], 100_000),
             _send(second, state, 1, data[:100_000], 0)]
    with pytest.raises(DigestMismatch) as caught:
        second.complete_parts(state, parts[::-1], expected_sha256=sha(b"other"))
    assert caught.value.actual == sha(data)  # refused, the parts kept
    info = second.complete_parts(state, parts[::-1], expected_sha256=sha(data))
    assert first.open(info.sha256).read() == data
    assert temporary_files(first) == []


def test_a_wrong_running_hash_is_never_trusted(store):
    """Completion refuses on a full reading only: a running hash that went wrong costs a
    reading of the file, never a wrong blob nor a refused upload."""
    data = os.urandom(300_000)
    state = store.begin_upload()
    parts = [_send(store, state, n, data[(n - 1) * 100_000:n * 100_000], (n - 1) * 100_000)
             for n in (1, 2, 3)]
    store._running[state["id"]].digest.update(b"corrupted")
    info = store.complete_parts(state, parts, expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data


def test_a_part_replaced_after_it_was_hashed(store):
    data = os.urandom(200_000)
    other = os.urandom(100_000)
    state = store.begin_upload()
    first = _send(store, state, 1, data[:100_000], 0)
    second = _send(store, state, 2, other, 100_000)
    store.delete_part(state, second)
    second = _send(store, state, 2, data[100_000:], 100_000)
    info = store.complete_parts(state, [first, second], expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data
    assert temporary_files(store) == []


def test_a_region_left_locked_by_a_crashed_writer_takes_a_part_file(store):
    """A lock nobody releases (its writer crashed): the part goes to a file of its own and
    completion assembles a copy; nothing is lost and the bytes are right."""
    data = os.urandom(200_000)
    state = store.begin_upload()
    first = _send(store, state, 1, data[:100_000], 0)
    parts_dir = store.root / "uploads" / f"{state['id']}.parts"
    os.symlink("w", parts_dir / "2.lock")
    second = _send(store, state, 2, data[100_000:], 100_000)
    assert (parts_dir / f"2-{sha(data[100_000:])}").read_bytes() == data[100_000:]
    info = store.complete_parts(state, [first, second], expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data
    assert temporary_files(store) == []


def test_acknowledged_parts_survive_a_restart(tmp_path):
    """What upload_part returned is on disk: a new process (store) completes the upload."""
    data = os.urandom(150_000)
    state = LocalBlobStore(tmp_path / "s").begin_upload()
    parts = [_send(LocalBlobStore(tmp_path / "s"), state, 1, data[:100_000], 0),
             _send(LocalBlobStore(tmp_path / "s"), state, 2, data[100_000:], 100_000)]
    restarted = LocalBlobStore(tmp_path / "s")
    info = restarted.complete_parts(state, parts, expected_sha256=sha(data))
    assert restarted.open(info.sha256).read() == data


def test_sequential_chunks_in_place_and_a_shorter_resend(store):
    """Chunks at any offset; a chunk stored again shorter (its first sender gave up) leaves
    bytes past the end, which completion cuts off."""
    data = os.urandom(250_001)
    state = store.begin_upload()
    first = _send(store, state, 1, data[:123_457], 0)
    stale = _send(store, state, 2, os.urandom(200_000), 123_457)
    store.delete_part(state, stale)
    second = _send(store, state, 2, data[123_457:], 123_457)
    info = store.complete_parts(state, [first, second], expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data
    assert _blob_path(store, info.sha256).stat().st_size == len(data)


@pytest.mark.parametrize("direct", ["false", "true"])
def test_parts_in_place_with_and_without_direct_writes(tmp_path, direct):
    store = create_store({"modelreg.storage.local.path": str(tmp_path / "s"),
                          "modelreg.storage.local.direct_writes": direct})
    assert store.direct_writes is (direct == "true")
    data = os.urandom(3 * 1024 * 1024 + 5)
    bounds = [(1, 0, 1024 * 1024), (2, 1024 * 1024, 3 * 1024 * 1024),
              (3, 3 * 1024 * 1024, len(data))]
    state = store.begin_upload()
    parts = [_send(store, state, n, data[a:b], a) for n, a, b in reversed(bounds)]
    info = store.complete_parts(state, parts[::-1], expected_sha256=sha(data))
    assert _blob_path(store, info.sha256).read_bytes() == data


def test_the_direct_writes_setting_is_a_boolean(tmp_path):
    with pytest.raises(RuntimeError, match="direct_writes"):
        create_store({"modelreg.storage.local.path": str(tmp_path),
                      "modelreg.storage.local.direct_writes": "sometimes"})


def _spooled(data: bytes, tmp_path, name: str):
    """``data`` as the app gets a body Waitress spooled to a file (files/body.py)."""
    from modelreg.files.body import BodyReader

    spool = open(tmp_path / name, "w+b")
    spool.write(b"headers" + data)
    spool.seek(7)
    return spool, BodyReader(spool, len(data))


def test_a_body_spooled_at_a_page_boundary_is_mapped_not_copied(store, tmp_path, monkeypatch):
    """Waitress's spool holds the body from a page boundary: the store hashes and writes the
    part straight from a read-only mapping of it (no copy into a buffer), the metered stream
    counts every byte once, and the bytes on disk are the body's."""
    from modelreg.files.body import BodyReader
    from modelreg.metrics import MeteredStream

    class Counter:
        value = 0

        def inc(self, n: int) -> None:
            self.value += n

    mapped = []
    original = BodyReader.mapped

    def spy(self, length):
        view = original(self, length)
        mapped.append(view is not None)
        return view

    monkeypatch.setattr(BodyReader, "mapped", spy)
    monkeypatch.setattr(local, "_MAP_WINDOW", 2 * local.CHUNK_SIZE)
    data = os.urandom(5 * local.CHUNK_SIZE + 4567)  # whole windows, blocks and a tail
    state = store.begin_upload()
    with open(tmp_path / "spool", "w+b") as spool:
        spool.write(b"h" * 4096 + data)
        spool.seek(4096)
        counter = Counter()
        body = MeteredStream(BodyReader(spool, len(data)), counter)
        part = store.upload_part(state, number=1, stream=body, length=len(data),
                                 expected_sha256=sha(data), offset=0)
        assert spool.tell() == 4096 + len(data)
    # One window of the spool mapped at a time (what is mapped counts in the RSS).
    assert mapped == [True] * -(-len(data) // local._MAP_WINDOW)
    assert counter.value == len(data)
    assert part["sha256"] == sha(data)
    info = store.complete_parts(state, [part], expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data


def test_a_body_is_mapped_only_where_the_spool_allows_it(tmp_path):
    """Off a page boundary, or with fewer bytes spooled than the body's length (a client gone
    before the end), there is no mapping: the body is read, and a short one is refused."""
    from webob.request import DisconnectionError

    from modelreg.files.body import BodyReader

    with open(tmp_path / "spool", "w+b") as spool:
        spool.write(b"h" * 4096 + b"x" * 10_000)
        spool.seek(7)
        assert BodyReader(spool, 100).mapped(100) is None  # not on a page boundary
        spool.seek(4096)
        short = BodyReader(spool, 20_000)
        assert short.mapped(20_000) is None  # the spool ends first
        with pytest.raises(DisconnectionError):
            short.read()
        spool.seek(4096)
        body = BodyReader(spool, 10_000)
        view = body.mapped(10_000)
        assert bytes(view) == b"x" * 10_000 and body.remaining == 0 and body.read() == b""
        view.release()
    assert BodyReader(io.BytesIO(b"in memory"), 9).mapped(9) is None


def test_parts_out_of_order_are_hashed_from_their_spool(store, tmp_path):
    """A part that lands beyond the running hash keeps its spool open after the request;
    once the gap is filled its bytes are hashed from there, so the running hash covers the
    whole file without reading the data file."""
    data = os.urandom(3 * 100_000)
    state = store.begin_upload()
    parts = {}
    for n in (3, 2, 1):
        piece = data[(n - 1) * 100_000:n * 100_000]
        spool, body = _spooled(piece, tmp_path, f"spool-{n}")
        with spool:  # Waitress closes its spool when the request ends
            parts[n] = store.upload_part(state, number=n, stream=body, length=len(piece),
                                         expected_sha256=sha(piece), offset=(n - 1) * 100_000)
    running = store._running[state["id"]]
    assert running.position == len(data) and not running._spools
    os.truncate(store.root / "uploads" / state["id"], 0)  # so the data file cannot be read
    os.truncate(store.root / "uploads" / state["id"], len(data))
    digest, position = running.resume([parts[1], parts[2], parts[3]])
    assert (digest.hexdigest(), position) == (sha(data), len(data))
    store.abort_upload(state)


def test_a_spool_that_changed_is_not_trusted(store, tmp_path):
    data = os.urandom(200_000)
    state = store.begin_upload()
    spool, body = _spooled(data[100_000:], tmp_path, "spool-2")
    with spool:
        second = store.upload_part(state, number=2, stream=body, length=100_000,
                                   expected_sha256=sha(data[100_000:]), offset=100_000)
        spool.seek(0, 2)
        spool.write(b"more")  # the spool is not what it was: read the data file instead
        spool.flush()
        first = _send(store, state, 1, data[:100_000], 0)
    assert store._running[state["id"]].position == len(data)
    info = store.complete_parts(state, [first, second], expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data


def test_spools_are_kept_within_a_budget_and_an_age(store, tmp_path, monkeypatch):
    """Spools only save a reading: past the process's budget none is kept, an old one is
    closed, and the upload completes all the same (from the data file)."""
    data = os.urandom(300_000)
    state = store.begin_upload()
    monkeypatch.setattr(local._Spool, "LIMIT", 150_000)
    parts = {}
    for n in (3, 2):
        piece = data[(n - 1) * 100_000:n * 100_000]
        spool, body = _spooled(piece, tmp_path, f"spool-{n}")
        with spool:
            parts[n] = store.upload_part(state, number=n, stream=body, length=len(piece),
                                         expected_sha256=sha(piece), offset=(n - 1) * 100_000)
    running = store._running[state["id"]]
    assert list(running._spools) == [200_000]  # the second did not fit the budget
    monkeypatch.setattr(local._Spool, "MAX_AGE", 0.0)
    spool, body = _spooled(b"x", tmp_path, "spool-other")
    with spool:
        other = local._Spool.of(body, 1)
        assert other is not None  # and the old one was closed
        other.close()
    assert running._spools[200_000].closed
    parts[1] = _send(store, state, 1, data[:100_000], 0)
    info = store.complete_parts(state, [parts[1], parts[2], parts[3]],
                                expected_sha256=sha(data))
    assert store.open(info.sha256).read() == data
