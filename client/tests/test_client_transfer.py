"""Push and pull against a live Waitress: round trips, resuming, skipping, refusing.

The server's single-PUT limit is 32 MiB here (see ``client_support``), so large files go
through upload sessions in 32 MiB chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from client_support import (  # noqa: F401 - fixtures
    MAX_PUT,
    MiB,
    client,
    model_name,
    random_bytes,
    received_bytes,
    registry,
    tree,
    write_random,
)

from modelreg_client import Client, IntegrityError, InvalidRequest, NotFound, Progress
from modelreg_client.manifest import scan_directory, version_digest

pytestmark = pytest.mark.server


class Stop(Exception):
    """Raised from a progress callback to cut a transfer off."""


class Counting(Progress):
    """Counts bytes per kind and file; raises :class:`Stop` once ``limit`` bytes of ``path``
    have gone by (when given)."""

    def __init__(self, path: str | None = None, limit: int = 0) -> None:
        self.path, self.limit = path, limit
        self.bytes: dict[tuple[str, str], int] = {}

    def advance(self, kind: str, path: str, nbytes: int) -> None:
        key = (kind, path)
        self.bytes[key] = self.bytes.get(key, 0) + nbytes
        if path == self.path and kind in ("upload", "download") and \
                self.bytes[key] >= self.limit:
            raise Stop(f"stopped after {self.bytes[key]} bytes of {path}")

    def total(self, kind: str) -> int:
        return sum(n for (k, _), n in self.bytes.items() if k == kind)


class Threads(Counting):
    """Counts bytes, and the threads that sent parts of files."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def advance(self, kind: str, path: str, nbytes: int) -> None:
        super().advance(kind, path, nbytes)
        if threading.current_thread().name.startswith("modelreg-part"):
            self.threads.add(threading.current_thread().name)


def small_tree(root: Path) -> dict[str, str]:
    """A few small files in nested directories (and an empty one)."""
    (root / "config").mkdir(parents=True)
    (root / "config" / "model.json").write_text(json.dumps({"layers": 3}))
    (root / "tokenizer" / "vocab").mkdir(parents=True)
    (root / "tokenizer" / "vocab" / "merges.txt").write_text("a b\nc d\n")
    (root / "docs").mkdir()
    (root / "docs" / "read me ü.txt").write_text("non-ASCII and a space in the name\n")
    (root / "empty.txt").write_bytes(b"")
    write_random(root / "weights" / "shards" / "part-0001.bin", 3 * MiB + 17)
    return tree(root)


def test_round_trip_of_nested_directory_with_a_200_mb_file(client, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    write_random(source / "weights" / "model.bin", 200 * MiB + 123)
    expected = tree(source)
    local_digest = version_digest(
        {"path": path, "size": location.stat().st_size, "sha256": expected[path]}
        for path, location in scan_directory(source))

    pushed = client.push(source, model_name, tags={"stage": "test"},
                         metadata={"framework": "none", "metrics": {"auc": 0.5}},
                         alias="staging")
    assert pushed.version.status == "ready" and not pushed.existing
    assert pushed.digest == pushed.version.digest == local_digest
    assert pushed.version.tags == {"stage": "test"} and pushed.version.aliases == ["staging"]
    # Files whose content another test pushed already are linked, not sent.
    assert sorted(pushed.uploaded_files + pushed.linked_files) == sorted(expected)
    assert "weights/model.bin" in pushed.uploaded_files
    assert pushed.uploaded_bytes == sum((source / path).stat().st_size
                                        for path in pushed.uploaded_files)

    destination = tmp_path / "elsewhere" / "copy"
    pulled = client.pull(f"{model_name}@staging", destination)
    assert tree(destination) == expected
    assert (destination / "weights" / "model.bin").read_bytes() == \
        (source / "weights" / "model.bin").read_bytes()
    assert pulled.version == pushed.version.number and pulled.digest == local_digest
    assert not list(destination.rglob("*.part"))

    # The same version by number and by digest; a second pull finds everything in place.
    again = client.pull(f"{model_name}/{pushed.version.number}", destination)
    assert again.downloaded_bytes == 0 and sorted(again.skipped_files) == sorted(expected)
    by_digest = client.pull(f"{model_name}@{local_digest}", tmp_path / "by-digest")
    assert tree(tmp_path / "by-digest") == expected and by_digest.version == pulled.version


def test_second_push_of_the_same_directory_uploads_nothing(client, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    first = client.push(source, model_name)
    counting = Counting()
    second = client.push(source, model_name, alias="champion", progress=counting)
    assert second.existing and second.uploaded_bytes == 0 and second.uploaded_files == []
    assert counting.total("upload") == 0
    assert second.version.number == first.version.number
    assert second.version.aliases == ["champion"]
    assert [v.number for v in client.list_versions(model_name)] == [first.version.number]


def test_a_push_never_rewrites_an_existing_versions_provenance(client, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    first = client.push(source, model_name, tags={"run": "43"}, metadata={"auc": 0.9})
    # The same files with another tag, other metadata or another description: new versions,
    # each with the same digest; the first keeps what it was pushed with.
    other_tag = client.push(source, model_name, tags={"run": "99"}, metadata={"auc": 0.9})
    other_metadata = client.push(source, model_name, tags={"run": "43"},
                                 metadata={"auc": 0.8})
    other_text = client.push(source, model_name, tags={"run": "43"}, metadata={"auc": 0.9},
                             description="retrained")
    numbers = [r.version.number for r in (first, other_tag, other_metadata, other_text)]
    assert numbers == sorted(set(numbers)) and not any(
        r.existing for r in (other_tag, other_metadata, other_text))
    assert {r.version.digest for r in (first, other_tag, other_metadata, other_text)} == {
        first.digest}
    assert client.get_version(model_name, first.version.number).tags == {"run": "43"}
    assert client.get_version(model_name, other_tag.version.number).tags == {"run": "99"}
    # Identical in everything: the first version again, untouched, nothing uploaded.
    again = client.push(source, model_name, tags={"run": "43"}, metadata={"auc": 0.9},
                        alias="champion")
    assert again.existing and again.version.number == first.version.number
    assert again.uploaded_bytes == 0
    assert client.get_version(model_name, "champion").number == first.version.number


def test_push_leaves_out_the_folders_junk_and_what_the_ignore_rules_name(
        client, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    junk = [".git/objects/pack/pack-1.pack", ".git/HEAD", "__pycache__/m.cpython-311.pyc",
            "helpers.pyc", ".DS_Store", "docs/.notes.md.swp", "config/model.json~",
            "logs/train.log", "logs/keep.log", "checkpoints/step-100.bin"]
    for path in junk:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(b"not part of the model")
    (source / ".modelregignore").write_text("# scratch\nlogs/*.log\n!logs/keep.log\n")
    expected = {path for path in tree(source)
                if path not in junk and path != ".modelregignore"} | {"logs/keep.log"}

    pushed = client.push(source, model_name, exclude=["checkpoints/"])
    remote = {f.path for f in client.list_files(model_name, pushed.version.number).files}
    assert remote == expected
    assert set(pushed.excluded_files) == {
        ".git/", "__pycache__/", "helpers.pyc", ".DS_Store", "docs/.notes.md.swp",
        "config/model.json~", "logs/train.log", "checkpoints/", ".modelregignore"}

    only_json = client.push(source, model_name, include=["*.json"])
    assert [f.path for f in client.list_files(model_name, only_json.version.number).files] \
        == ["config/model.json"]


def test_second_push_of_a_changed_directory_sends_only_the_changed_file(
        client, registry, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    write_random(source / "big.bin", MAX_PUT + 3 * MiB)  # through an upload session
    first = client.push(source, model_name)
    changed = "weights/shards/part-0001.bin"
    size = 2 * MiB + 5
    write_random(source / changed, size)

    before = received_bytes(registry)
    counting = Counting()
    second = client.push(source, model_name, progress=counting)
    assert received_bytes(registry) - before == size  # what the server saw arrive
    assert second.version.number == first.version.number + 1 and not second.existing
    assert second.uploaded_files == [changed]
    assert second.uploaded_bytes == counting.total("upload") == size
    assert sorted(second.linked_files) == sorted(
        path for path, _ in scan_directory(source) if path != changed)
    assert second.digest == second.version.digest
    pulled = tmp_path / "pulled"
    client.pull(f"{model_name}/{second.version.number}", pulled)
    assert tree(pulled) == tree(source)


def test_content_the_caller_may_not_read_is_uploaded_not_linked(
        client, registry, model_name, tmp_path):
    from modelreg.cli import db_session
    from modelreg.security.services import SecurityService

    source = tmp_path / "model"
    source.mkdir()
    write_random(source / "weights.bin", 3 * MiB)
    client.push(source, model_name)  # the admin's model: the content is on the server
    with db_session(registry.settings) as db:
        security = SecurityService(db, actor="client-tests")
        name = f"own-{model_name}"
        security.create_principal(name)
        security.create_grant(principal=name, pattern=f"{name}*", level="write")
        _, token = security.create_token(name, scopes=["write"])
    with Client(registry.url, token, state_dir=tmp_path / "state") as other:
        before = received_bytes(registry)
        pushed = other.push(source, f"{name}-copy")
    assert pushed.linked_files == [] and pushed.uploaded_files == ["weights.bin"]
    assert received_bytes(registry) - before == 3 * MiB


def test_a_server_without_linking_gets_every_file_uploaded(client, model_name, tmp_path,
                                                           monkeypatch):
    source = tmp_path / "model"
    small_tree(source)
    client.push(source, model_name)
    (source / "more.txt").write_text("a change")
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise InvalidRequest("method not allowed", code="method_not_allowed", status=405)

    monkeypatch.setattr(client, "link_file", refuse)
    pushed = client.push(source, model_name)
    assert len(calls) == 1  # then the push stops asking
    assert sorted(pushed.uploaded_files) == sorted(tree(source))
    assert pushed.linked_files == []


def test_interrupted_push_resumes_and_sends_only_what_is_missing(
        client, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    size = 4 * MAX_PUT - 5 * MiB  # four chunks: 32 + 32 + 32 + 27 MiB
    write_random(source / "big.bin", size)
    total = sum(p.stat().st_size for _, p in scan_directory(source))

    client.parallel = 1  # one part at a time: the first two are complete when it stops
    with pytest.raises(Stop):
        client.push(source, model_name, progress=Counting("big.bin", 2 * MAX_PUT + MiB))
    client.parallel = 4
    # The draft holds what arrived: two whole parts of big.bin, maybe some small files.
    draft = next(client.list_versions(model_name))
    assert draft.status == "draft"
    journal = next((Path(client.state_dir) / "pushes").glob("*.json"))
    upload_id = json.loads(journal.read_text())["uploads"]["big.bin"]
    held = client.get_upload(upload_id)
    assert held.offset == 2 * MAX_PUT and held.part_size == MAX_PUT
    assert [part.number for part in held.parts] == [1, 2]
    already = sum(f.size for f in client.list_files(model_name, draft.number).files)

    counting = Counting()
    resumed = client.push(source, model_name, progress=counting)
    assert resumed.version.number == draft.number and resumed.version.status == "ready"
    # What the server held already (earlier tests' small files) is added by digest.
    linked = sum((source / path).stat().st_size for path in resumed.linked_files)
    missing = total - already - 2 * MAX_PUT - linked
    assert resumed.uploaded_bytes == counting.total("upload") == missing
    assert counting.bytes[("upload", "big.bin")] == size - 2 * MAX_PUT
    assert not journal.exists()
    with pytest.raises(NotFound):
        client.get_upload(upload_id)
    pulled = tmp_path / "pulled"
    client.pull(f"{model_name}/{draft.number}", pulled)
    assert tree(pulled) == tree(source)


def test_large_files_go_in_parallel_parts_and_a_wrong_part_is_sent_again(
        client, registry, model_name, tmp_path):
    """Parts of one file go ``parallel`` at once.  When the server refuses the completion
    for a wrong digest, the client compares the server's parts with the local file and sends
    again only the part that differs."""
    source = tmp_path / "model"
    size = 3 * MAX_PUT + 123
    write_random(source / "big.bin", size)
    client.parallel = 1
    with pytest.raises(Stop):
        client.push(source, model_name, progress=Counting("big.bin", MAX_PUT + MiB))
    journal = next((Path(client.state_dir) / "pushes").glob("*.json"))
    upload_id = json.loads(journal.read_text())["uploads"]["big.bin"]
    assert [p.number for p in client.get_upload(upload_id).parts] == [1]
    # Part 1 on the server now holds other bytes (with their own, correct, digest).
    client.delete_part(upload_id, 1)
    other = random_bytes(MAX_PUT)
    client.upload_part(upload_id, 1, other, hashlib.sha256(other).hexdigest())
    client.parallel = 3
    counting = Threads()
    pushed = client.push(source, model_name, progress=counting)
    assert pushed.version.status == "ready"
    assert len(counting.threads) == 3, counting.threads  # three parts at once
    # Parts 2 to 4 once, then part 1 again: nothing else twice.
    assert counting.bytes[("upload", "big.bin")] == size
    pulled = tmp_path / "pulled"
    client.pull(f"{model_name}/{pushed.version.number}", pulled)
    assert tree(pulled) == tree(source)


class Timeline(Counting):
    """Counts bytes, and notes when each kind's first byte went and each file's hash ended."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, float] = {}
        self.hashed: dict[str, float] = {}

    def advance(self, kind: str, path: str, nbytes: int) -> None:
        self.first.setdefault(kind, time.perf_counter())
        super().advance(kind, path, nbytes)

    def finish(self, kind: str, path: str) -> None:
        if kind == "hash":
            self.hashed[path] = time.perf_counter()


def test_a_large_file_is_sent_while_it_is_hashed(client, model_name, tmp_path):
    """No ready version of the model can be identical to the push, so its large file's
    parts go while the file is still being hashed; the version is as a push in turn."""
    source = tmp_path / "model"
    small_tree(source)
    size = 4 * MAX_PUT + 4321
    write_random(source / "big.bin", size)
    timeline = Timeline()
    pushed = client.push(source, model_name, progress=timeline)
    assert timeline.first["upload"] < timeline.hashed["big.bin"]
    assert pushed.version.status == "ready" and not pushed.existing
    assert "big.bin" in pushed.uploaded_files  # the small files may be linked (other tests')
    assert sorted(pushed.uploaded_files + pushed.linked_files) == sorted(tree(source))
    assert pushed.uploaded_bytes == timeline.total("upload") == sum(
        (source / path).stat().st_size for path in pushed.uploaded_files)
    files = [{"path": path, "size": location.stat().st_size,
              "sha256": hashlib.sha256(location.read_bytes()).hexdigest()}
             for path, location in scan_directory(source)]
    assert pushed.version.digest == pushed.digest == version_digest(files)
    pulled = tmp_path / "pulled"
    client.pull(f"{model_name}/{pushed.version.number}", pulled)
    assert tree(pulled) == tree(source)


def test_a_large_push_that_may_repeat_a_ready_version_hashes_first(
        client, model_name, tmp_path):
    """A second push of the same directory (the same metadata too) may be the version
    already made: it hashes before it sends anything, finds it, and makes no draft (the
    next version's number is the next one)."""
    source = tmp_path / "model"
    write_random(source / "big.bin", 3 * MAX_PUT + 99)
    first = client.push(source, model_name, metadata={"run": 1})
    timeline = Timeline()
    again = client.push(source, model_name, metadata={"run": 1}, progress=timeline)
    assert again.existing and again.version.number == first.version.number
    assert "upload" not in timeline.first and again.uploaded_bytes == 0
    with (source / "big.bin").open("r+b") as file:
        file.write(b"changed")
    changed = client.push(source, model_name, metadata={"run": 1})
    assert changed.version.number == first.version.number + 1
    assert [v.number for v in client.list_versions(model_name, order_by="number asc")] == [
        first.version.number, changed.version.number]


def test_a_large_file_the_server_holds_is_added_by_digest_once_hashed(
        client, registry, model_name, tmp_path, monkeypatch):
    """Sent while hashed (no version of the new model can repeat), a file whose bytes the
    server holds in another model is added by digest once its digest is known: the parts
    not yet sent never go, the session is aborted, and the version holds the bytes."""
    source = tmp_path / "model"
    size = 6 * MAX_PUT + 7
    write_random(source / "big.bin", size)
    client.push(source, model_name)
    opened = []
    open_upload = client.open_upload

    def spy(*args, **kwargs):
        upload = open_upload(*args, **kwargs)
        opened.append(upload.id)
        return upload

    monkeypatch.setattr(client, "open_upload", spy)
    client.parallel = 1
    copy = client.push(source, f"{model_name}-copy")
    assert copy.linked_files == ["big.bin"] and copy.uploaded_files == []
    assert copy.version.status == "ready" and copy.version.digest == copy.digest
    assert len(opened) == 1 and copy.uploaded_bytes < size
    with pytest.raises(NotFound):
        client.get_upload(opened[0])
    pulled = tmp_path / "pulled"
    client.pull(f"{model_name}-copy/{copy.version.number}", pulled)
    assert tree(pulled) == tree(source)


def test_interrupted_pull_resumes_with_range(client, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    write_random(source / "big.bin", 40 * MiB + 1)
    client.push(source, model_name)
    destination = tmp_path / "pulled"

    with pytest.raises(Stop):
        client.pull(model_name, destination, progress=Counting("big.bin", 10 * MiB))
    assert not (destination / "big.bin").exists()
    part = destination / "big.bin.part"
    assert part.stat().st_size >= 10 * MiB
    # What is still missing: the rest of every file that has no final name yet.
    files = client.list_files(model_name, "latest").files
    missing = 0
    for file in files:
        final = destination / file.path
        if not final.exists():
            partial = final.with_name(final.name + ".part")
            missing += file.size - (partial.stat().st_size if partial.exists() else 0)

    big_before = part.stat().st_size

    counting = Counting()
    resumed = client.pull(model_name, destination, progress=counting)
    assert resumed.downloaded_bytes == counting.total("download") == missing
    assert counting.bytes[("download", "big.bin")] == 40 * MiB + 1 - big_before
    assert tree(destination) == tree(source)
    assert not list(destination.rglob("*.part"))


def test_partial_file_left_behind_is_completed_not_refetched(client, model_name, tmp_path):
    source = tmp_path / "model"
    data = random_bytes(9 * MiB + 5)
    source.mkdir()
    (source / "weights.bin").write_bytes(data)
    client.push(source, model_name)
    destination = tmp_path / "pulled"
    destination.mkdir()
    (destination / "weights.bin.part").write_bytes(data[: 6 * MiB])
    result = client.pull(model_name, destination)
    assert result.downloaded_bytes == len(data) - 6 * MiB
    assert (destination / "weights.bin").read_bytes() == data


def test_corrupted_blob_is_refused_and_leaves_no_file(client, registry, model_name, tmp_path):
    source = tmp_path / "model"
    small_tree(source)
    data = random_bytes(2 * MiB)
    (source / "weights.bin").write_bytes(data)
    pushed = client.push(source, model_name)
    sha = next(f.sha256 for f in client.list_files(model_name, pushed.version.number).files
               if f.path == "weights.bin")
    blob = registry.blob_path(sha)
    original = blob.read_bytes()
    os.chmod(blob, 0o644)
    try:
        blob.write_bytes(original[:1000] + bytes([original[1000] ^ 0xFF]) + original[1001:])
        destination = tmp_path / "pulled"
        with pytest.raises(IntegrityError) as caught:
            client.pull(f"{model_name}/{pushed.version.number}", destination)
        assert caught.value.code == "corrupted_download"
        # Neither under its name nor as a partial file; other files of the version may
        # have been cut off and left as partial files, to be resumed by the next pull.
        assert not (destination / "weights.bin").exists()
        assert not (destination / "weights.bin.part").exists()
    finally:
        blob.write_bytes(original)


def test_push_of_an_empty_directory_is_refused(client, model_name, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no files"):
        client.push(tmp_path / "empty", model_name)


def test_unsafe_paths_from_a_server_are_refused(tmp_path):
    from modelreg_client.manifest import check_remote_path

    for bad in ("/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "C:/x", "a/\x00", ""):
        with pytest.raises(ValueError):
            check_remote_path(bad)
    assert str(check_remote_path("weights/model.bin")) == "weights/model.bin"


def test_client_closes_its_connections(registry):
    with Client(registry.url, registry.token) as client:
        assert client.health()["status"] == "ok"


def test_a_rejected_version_is_reported_with_its_problems(tmp_path):
    from click.testing import CliRunner
    from client_support import start_registry

    from modelreg_client import VersionRejected
    from modelreg_client.cli import main

    source = tmp_path / "model"
    small_tree(source)
    with start_registry(**{"modelreg.policy.required_metadata": "framework"}) as registry:
        with Client(registry.url, registry.token, state_dir=tmp_path / "state") as client:
            with pytest.raises(VersionRejected) as caught:
                client.push(source, "policy-model", metadata={"other": 1})
            rejected = caught.value.version
            assert rejected.status == "rejected"
            assert [p.code for p in rejected.problems] == ["missing_metadata"]
            assert not list((tmp_path / "state").rglob("*.json"))  # nothing to resume
            assert client.push(source, "policy-model",
                               metadata={"framework": "x"}).version.status == "ready"
        (source / "more.txt").write_text("new content: a new version, without metadata")
        result = CliRunner().invoke(main, [
            "--url", registry.url, "--token", registry.token, "push", str(source),
            "--model", "policy-model"], env={"MODELREG_STATE_DIR": str(tmp_path / "state"),
                                             "MODELREG_CONFIG": str(tmp_path / "c.toml")})
        assert result.exit_code == 5
        assert "was rejected" in result.output
        assert "missing_metadata: versions must carry the metadata key 'framework'" in \
            result.output


class _Dangerous:
    def __reduce__(self):
        return (os.system, ("echo never run",))


def test_scan_findings_come_with_the_rejection(client, model_name, tmp_path):
    pytest.importorskip("modelreg_scan")
    pytest.importorskip("modelreg.scanning")  # scans at finalize
    import pickle

    source = tmp_path / "model"
    source.mkdir()
    (source / "model.pkl").write_bytes(pickle.dumps(_Dangerous()))
    (source / "readme.txt").write_text("weights in model.pkl\n")
    from modelreg_client import VersionRejected

    with pytest.raises(VersionRejected) as caught:
        client.push(source, model_name)
    assert caught.value.version.status == "rejected"
    assert {f.path for f in caught.value.findings} == {"model.pkl"}
    assert caught.value.details["findings"][0]["severity"]
    assert client.list_findings(model_name, caught.value.version.number) == \
        caught.value.findings


def test_a_body_cut_short_is_resumed_with_range_not_taken_as_corrupt(tmp_path):
    """A server that closes the connection before ``Content-Length`` bytes: the download
    is a network failure, the partial file is kept and the rest is fetched with ``Range``."""
    import hashlib
    import socket
    import threading

    from modelreg_client.transfer import Puller
    from modelreg_client.types import FileEntry

    data = os.urandom(3 * MiB + 7)
    cut = MiB + 3
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head = request.decode("latin-1")
                seen.append(head)
                ranged = "Range: bytes=" in head
                start = int(head.split("Range: bytes=")[1].split("-")[0]) if ranged else 0
                status = "206 Partial Content" if ranged else "200 OK"
                extra = f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}\r\n" \
                    if ranged else ""
                conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(data) - start}\r\n"
                             f"{extra}Connection: close\r\n\r\n".encode())
                conn.sendall(data[start:] if ranged else data[:cut])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with Client(url, retries=0) as client:
            puller = Puller(client)
            entry = FileEntry("w.bin", len(data), hashlib.sha256(data).hexdigest())
            puller._download("m", 1, entry, tmp_path / "w.bin")
    finally:
        thread.join(10)
        listener.close()
    assert (tmp_path / "w.bin").read_bytes() == data
    assert not (tmp_path / "w.bin.part").exists()
    assert "Range" not in seen[0] and f"Range: bytes={cut}-" in seen[1]
    assert all("Accept-Encoding: identity" in head for head in seen)
    assert puller.received.value == len(data)


@pytest.mark.parametrize("direct", [True, False])
def test_pull_writes_the_same_bytes_with_and_without_direct_writes(
        registry, client, model_name, tmp_path, direct):
    """Downloads go to disk in whole aligned blocks (O_DIRECT where allowed) and a partial
    last block; a resumed download that starts at an unaligned offset writes the rest
    through the page cache.  Either way the pulled files are the pushed bytes."""
    source = tmp_path / "model"
    source.mkdir()
    write_random(source / "big.bin", 9 * MiB + 4097)
    write_random(source / "small.bin", 4095)
    client.push(source, model_name)
    destination = tmp_path / "pulled"
    with Client(registry.url, registry.token, direct_writes=direct,
                state_dir=tmp_path / "state", cache_dir=tmp_path / "cache") as puller:
        with pytest.raises(Stop):
            puller.pull(model_name, destination, progress=Counting("big.bin", 4 * MiB))
        part = destination / "big.bin.part"
        with open(part, "r+b") as partial:  # resume from an offset that is not aligned
            partial.truncate(part.stat().st_size - 1000)
        puller.pull(model_name, destination)
    assert tree(destination) == tree(source)
    assert not list(destination.rglob("*.part"))
