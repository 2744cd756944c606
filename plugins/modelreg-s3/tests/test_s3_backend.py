"""The S3 backend against a real S3-compatible server process (see conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.parse
import urllib.request
from importlib.metadata import entry_points

import boto3
import botocore.config
import pytest
from modelreg_s3 import S3BlobStore, content_disposition, create_store
from zope.interface.verify import verifyObject

from modelreg.api import (
    BlobInfo,
    DigestMismatch,
    IBlobStore,
    StorageError,
    UploadNotFound,
)
from modelreg.testing import BlobStoreContract, DirectUploadsContract

MiB = 1024 * 1024


def leftovers(store: S3BlobStore) -> list[str]:
    """Temporary keys and unfinished multipart uploads under the store's prefix."""
    client, bucket, prefix = store.client, store.bucket, store.prefix
    keys = [item["Key"] for item in
            client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}tmp/").get("Contents", ())]
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", ())
    return sorted(keys + [f"multipart:{upload['Key']}" for upload in uploads])


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def blob_store(self, s3_settings):
        return create_store(s3_settings)

    def leftovers(self, blob_store):
        return leftovers(blob_store)


class TestS3DirectUploads(DirectUploadsContract):
    @pytest.fixture
    def direct_store(self, s3_settings):
        return create_store({**s3_settings, "modelreg.storage.s3.presigned_uploads": "true"})

    def leftovers(self, store):
        return leftovers(store)


def test_direct_uploads_are_off_unless_enabled(s3_settings):
    assert create_store(s3_settings).begin_direct_upload() is None


def test_a_presigned_part_signs_its_length_and_checksum(s3_settings):
    store = create_store({**s3_settings, "modelreg.storage.s3.presigned_uploads": "true",
                          "modelreg.storage.s3.presign_expires": "120"})
    state = store.begin_direct_upload()
    try:
        digest = hashlib.sha256(b"abc").hexdigest()
        signed = store.presign_part(state, number=3, length=3, sha256=digest)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(signed["url"]).query))
        assert query["partNumber"] == "3" and query["uploadId"] == state["upload_id"]
        assert query["X-Amz-Expires"] == "120"
        assert query["X-Amz-SignedHeaders"].split(";") == [
            "content-length", "host", "x-amz-checksum-sha256"]
        assert signed["headers"] == {
            "Content-Length": "3",
            "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(digest)).decode()}
    finally:
        store.abort_upload(state)


class CallRecorder:
    """Records the S3 operations a client makes, with their parameters."""

    def __init__(self, client):
        self.calls: list[tuple[str, dict]] = []
        client.meta.events.register("provide-client-params.s3.*", self._record)

    def _record(self, params, model, **kwargs):
        self.calls.append((model.name, dict(params)))

    def named(self, name):
        return [params for operation, params in self.calls if operation == name]


def test_the_plugin_is_an_entry_point():
    (entry,) = [e for e in entry_points(group="modelreg") if e.name == "storage-s3"]
    assert entry.value == "modelreg_s3"
    descriptions = entry.load().modelreg_storage_backends()
    assert [d.name for d in descriptions] == ["s3"]


def test_the_store_provides_the_interface(s3_settings):
    assert verifyObject(IBlobStore, create_store(s3_settings))


def test_a_large_put_goes_through_multipart_and_a_temporary_key(s3_settings, s3_admin):
    store = create_store(s3_settings)
    recorder = CallRecorder(store.client)
    data = hashlib.sha256(b"seed").digest() * (20 * MiB // 32)
    info = store.put(io.BytesIO(data))
    assert info == BlobInfo(hashlib.sha256(data).hexdigest(), 20 * MiB)
    parts = recorder.named("UploadPart")
    assert [len(p["Body"]) for p in parts] == [8 * MiB, 8 * MiB, 4 * MiB]
    assert all(p["ChecksumSHA256"] for p in parts)
    (created,) = recorder.named("CreateMultipartUpload")
    assert created["Key"].startswith(store.prefix + "tmp/")
    (copied,) = recorder.named("CopyObject")
    digest = info.sha256
    assert copied["Key"] == f"{store.prefix}sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert copied["CopySource"]["Key"] == created["Key"]
    assert leftovers(store) == []
    body = s3_admin.get_object(Bucket=store.bucket, Key=copied["Key"])["Body"].read()
    assert body == data
    # Dedupe: the same content again is not copied again.
    recorder.calls.clear()
    assert store.put(io.BytesIO(data)) == info
    assert recorder.named("CopyObject") == []
    assert leftovers(store) == []


def test_a_small_put_goes_straight_to_its_content_key(s3_settings):
    store = create_store(s3_settings)
    recorder = CallRecorder(store.client)
    info = store.put(io.BytesIO(b"small"))
    (put,) = recorder.named("PutObject")
    assert put["Key"].endswith(f"sha256/{info.sha256[:2]}/{info.sha256[2:4]}/{info.sha256}")
    assert put["ChecksumSHA256"]
    assert recorder.named("CreateMultipartUpload") == []
    recorder.calls.clear()
    store.put(io.BytesIO(b"small"))
    assert recorder.named("PutObject") == []  # already there


def test_checksums_are_not_sent_when_only_required(s3_settings):
    s3_settings["modelreg.storage.s3.request_checksum_calculation"] = "when_required"
    s3_settings["modelreg.storage.s3.response_checksum_validation"] = "when_required"
    store = create_store(s3_settings)
    recorder = CallRecorder(store.client)
    data = b"q" * (9 * MiB)
    info = store.put(io.BytesIO(data))
    assert all("ChecksumSHA256" not in params for _, params in recorder.calls)
    assert store.stat(info.sha256).size == 9 * MiB
    state = store.begin_upload()
    part = store.upload_part(state, number=1, stream=io.BytesIO(b"abc"), length=3)
    assert store.complete_parts(state, [part],
                                expected_sha256=hashlib.sha256(b"abc").hexdigest())
    assert all("ChecksumSHA256" not in params for _, params in recorder.calls)


def test_a_large_put_with_the_wrong_digest_leaves_nothing(s3_settings):
    store = create_store(s3_settings)
    data = b"m" * (17 * MiB)
    with pytest.raises(DigestMismatch):
        store.put(io.BytesIO(data), expected_sha256=hashlib.sha256(b"x").hexdigest())
    assert list(store.iter_digests()) == []
    assert leftovers(store) == []


def test_objects_larger_than_a_single_copy_are_copied_in_parts(s3_settings):
    store = create_store(s3_settings)
    store.max_copy_size = 8 * MiB  # S3's limit is 5 GiB; pretend so that 20 MiB exceeds it
    recorder = CallRecorder(store.client)
    data = bytes(range(256)) * (20 * MiB // 256)
    info = store.put(io.BytesIO(data))
    copies = recorder.named("UploadPartCopy")
    assert [c["CopySourceRange"] for c in copies] == [
        f"bytes=0-{8 * MiB - 1}", f"bytes={8 * MiB}-{16 * MiB - 1}",
        f"bytes={16 * MiB}-{20 * MiB - 1}"]
    assert recorder.named("CopyObject") == []
    with store.open(info.sha256, 8 * MiB - 5, 8 * MiB + 5) as stream:
        assert stream.read() == data[8 * MiB - 5:8 * MiB + 5]
    digest = hashlib.sha256()
    with store.open(info.sha256) as stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == info.sha256


def test_presigned_downloads(s3_settings):
    store = create_store(s3_settings)
    data = b"presigned bytes"
    info = store.put(io.BytesIO(data))
    assert store.download_url(info.sha256, filename="model.bin") is None  # off by default
    s3_settings["modelreg.storage.s3.presigned_downloads"] = "true"
    s3_settings["modelreg.storage.s3.presign_expires"] = "120"
    store = create_store(s3_settings)
    url = store.download_url(info.sha256, filename="wëights \"v1\".bin")
    assert url.startswith(s3_settings["modelreg.storage.s3.endpoint_url"])
    assert "Expires=" in url or "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own server
        assert response.read() == data
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert "filename*=UTF-8''w%C3%ABights%20%22v1%22.bin" in disposition


def test_content_disposition():
    assert content_disposition("model.bin") == (
        "attachment; filename=\"model.bin\"; filename*=UTF-8''model.bin")
    assert content_disposition("weights/a\"b\\c.bin").startswith('attachment; filename="c.bin"')
    header = content_disposition("ñ\r\n.bin")
    assert "\r" not in header and "\n" not in header
    assert 'filename="___.bin"' in header


def test_tampered_upload_states_are_refused(s3_settings):
    store = create_store(s3_settings)
    good = store.begin_upload()
    for bad in (
        {**good, "key": "elsewhere/" + good["key"]},
        {**good, "key": store.prefix + "sha256/ab/cd/" + "a" * 64},
        {**good, "offset": -1},
        {**good, "parts": [{"PartNumber": "1"}]},
        {**good, "upload_id": ""},
        "not a state",
    ):
        with pytest.raises(ValueError):
            store.upload_part(bad, number=1, stream=io.BytesIO(b"x"), length=1)
        with pytest.raises(ValueError):
            store.abort_upload(bad)
    store.abort_upload(good)
    assert leftovers(store) == []


def test_completing_twice_after_a_lost_response(s3_settings):
    """If the response to a completion is lost, completing again says the upload is gone
    (the blob stays where the first completion put it) and leaves nothing behind."""
    store = create_store(s3_settings)
    data = b"c" * (5 * MiB + 1)
    state = store.begin_upload()
    parts = [store.upload_part(state, number=1, stream=io.BytesIO(data[:5 * MiB]),
                               length=5 * MiB),
             store.upload_part(state, number=2, stream=io.BytesIO(data[5 * MiB:]), length=1)]
    digest = hashlib.sha256(data).hexdigest()
    assert store.complete_parts(state, parts, expected_sha256=digest) == BlobInfo(digest,
                                                                                  len(data))
    with pytest.raises(UploadNotFound):
        store.complete_parts(state, parts, expected_sha256=digest)
    assert store.stat(digest) == BlobInfo(digest, len(data))
    assert leftovers(store) == []


def test_settings_are_checked(s3_settings):
    for key, value, message in [
        ("bucket", "", "bucket is not set"),
        ("request_checksum_calculation", "always", "request_checksum_calculation must be"),
        ("response_checksum_validation", "never", "response_checksum_validation must be"),
        ("secret_access_key", "", "set both"),
        ("addressing_style", "dns", "addressing_style"),
        ("multipart_chunk_size", str(MiB), "at least"),
        ("presign_expires", "soon", "invalid literal"),
        ("presigned_downloads", "maybe", "not a boolean"),
    ]:
        settings = {**s3_settings, f"modelreg.storage.s3.{key}": value}
        with pytest.raises(RuntimeError, match=message):
            create_store(settings)


def test_an_unreachable_server_is_a_storage_error(s3_settings):
    client = boto3.session.Session().client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",  # noqa: S106 - not a secret
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2))
    store = S3BlobStore(client, "bucket")
    with pytest.raises(StorageError):
        store.check()
    with pytest.raises(StorageError):
        store.put(io.BytesIO(b"data"))
    with pytest.raises(StorageError):
        store.exists("0" * 64)
    with pytest.raises(StorageError):
        list(store.iter_digests())


def test_a_missing_bucket_fails_the_check(s3_settings):
    store = create_store({**s3_settings, "modelreg.storage.s3.bucket": "no-such-bucket"})
    with pytest.raises(StorageError):
        store.check()


def test_settings_left_unset_come_from_the_environment(s3_settings):
    prefix = "modelreg.storage.s3."
    from_ini = {key: value for key, value in s3_settings.items()
                if key not in (prefix + "bucket", prefix + "endpoint_url", prefix + "prefix")}
    environ = {"MODELREG_S3_BUCKET": s3_settings[prefix + "bucket"],
               "MODELREG_S3_ENDPOINT_URL": s3_settings[prefix + "endpoint_url"],
               "MODELREG_S3_PREFIX": "from-env"}
    store = S3BlobStore.from_settings(from_ini, environ)
    assert (store.bucket, store.prefix) == (s3_settings[prefix + "bucket"], "from-env/")
    info = store.put(io.BytesIO(b"through the environment's settings"))
    assert store.open(info.sha256).read() == b"through the environment's settings"
    # A value in the ini wins over the environment.
    store = S3BlobStore.from_settings({**from_ini, prefix + "prefix": "from-ini"}, environ)
    assert store.prefix == "from-ini/"
    with pytest.raises(RuntimeError, match="nor MODELREG_S3_BUCKET"):
        S3BlobStore.from_settings(from_ini, {})
