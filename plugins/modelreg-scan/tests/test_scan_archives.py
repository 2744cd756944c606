"""Archives: links, device files, unsafe paths, bombs; the pickles inside are scanned."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile

import pytest
import scan_samples as s

EVIL = s.call_stack_global("os", "system", "id")


def test_a_torch_zip_checkpoint_with_a_clean_pickle(scan):
    result = scan(s.torch_like_zip(s.torch_state_dict_pickle()))
    assert result == {"formats": ["zip"], "findings": []}


@pytest.mark.parametrize("root", ["archive", "model", "pytorch_model"])
def test_a_torch_zip_checkpoint_with_os_system(scan, root):
    (found,) = scan(s.torch_like_zip(EVIL, root=root))["findings"]
    assert found["code"] == "pickle_dangerous_import"
    assert found["details"]["member"] == f"{root}/data.pkl"
    assert found["details"]["offset"] == EVIL.index(b"\x93")


def test_pickles_are_found_by_their_bytes_in_any_member(scan):
    data = zip_of({"weights.bin": EVIL, "notes.txt": b"just text"})
    (found,) = scan(data)["findings"]
    assert found["details"]["member"] == "weights.bin"


def test_raw_storages_are_not_taken_for_pickles(scan):
    data = s.torch_like_zip(s.clean_pickle(2), storages={"0": b"\x80\x03\xff\xff" * 8})
    assert scan(data)["findings"] == []


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_members_with_unsafe_paths_and_links(scan):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escape.txt", "x")
        archive.writestr("/etc/cron.d/x", "x")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        fifo = zipfile.ZipInfo("fifo")
        fifo.create_system = 3
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        archive.writestr(fifo, "")
    result = scan(buffer.getvalue())
    assert s.codes(result) == ["archive_unsafe_path", "archive_unsafe_path", "archive_link",
                               "archive_device"]
    assert result["findings"][2]["details"]["target"] == "/etc/passwd"


def test_zip_bomb_by_ratio_and_by_size(scan):
    data = zip_of({"zeros": bytes(20 << 20)}, zipfile.ZIP_DEFLATED)
    assert "archive_bomb" in s.codes(scan(data))
    assert s.codes(scan(data, max_ratio=100_000)) == []
    assert "archive_too_large" in s.codes(scan(data, max_ratio=100_000,
                                                max_uncompressed=1 << 20))


def test_a_bomb_is_not_decompressed(scan):
    data = zip_of({"a.pkl": EVIL + bytes(20 << 20)}, zipfile.ZIP_DEFLATED)
    assert "pickle_dangerous_import" not in s.codes(scan(data))
    assert "pickle_dangerous_import" in s.codes(scan(data, max_ratio=100_000))


def test_too_many_members(scan):
    data = zip_of({f"m{i}": b"" for i in range(5)})
    assert s.codes(scan(data, max_members=4)) == ["archive_too_many_members"]


def test_a_broken_zip_fails_closed(scan):
    data = s.torch_like_zip(EVIL)
    assert "archive_malformed" in s.codes(scan(data[:60]))


def test_tar_with_dotdot_symlink_hardlink_device_and_a_pickle(scan):
    data = s.tar_bytes([
        (s.tar_member("../../etc/passwd"), b"x"),
        (s.tar_member("/abs"), b"x"),
        (s.tar_member("ln", tarfile.SYMTYPE, "/etc/shadow"), None),
        (s.tar_member("hard", tarfile.LNKTYPE, "abs"), None),
        (s.tar_member("dev", tarfile.CHRTYPE), None),
        (s.tar_member("model/data.pkl"), EVIL),
        (s.tar_member("model/ok.pkl"), s.clean_pickle(4)),
    ])
    result = scan(data)
    assert result["formats"] == ["tar"]
    assert s.codes(result) == ["archive_unsafe_path", "archive_unsafe_path", "archive_link",
                               "archive_link", "archive_device", "pickle_dangerous_import"]
    assert result["findings"][-1]["details"]["member"] == "model/data.pkl"


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_tars(scan, mode):
    data = s.tar_bytes([(s.tar_member("x/data.pkl"), EVIL)], mode=mode)
    result = scan(data)
    assert s.codes(result) == ["pickle_dangerous_import"]


def test_gzip_bomb(scan):
    data = gzip.compress(bytes(30 << 20))
    assert s.codes(scan(data)) == ["archive_bomb"]


def test_a_gzipped_pickle_is_scanned(scan):
    result = scan(gzip.compress(EVIL))
    assert s.codes(result) == ["pickle_dangerous_import"]
    assert result["findings"][0]["details"]["compression"] == "gzip"


def test_broken_gzip_fails_closed(scan):
    assert s.codes(scan(gzip.compress(EVIL)[:-12])) == ["archive_malformed"]


def test_a_torch_checkpoint_inside_a_tar_gz_is_scanned(scan):
    checkpoint = s.torch_like_zip(EVIL, root="model")
    data = s.tar_bytes([(s.tar_member("release/model.pt"), checkpoint)], mode="w:gz")
    (found,) = scan(data)["findings"]
    assert found["code"] == "pickle_dangerous_import"
    assert found["details"]["member"] == "release/model.pt/model/data.pkl"


def test_archives_inside_zips_are_scanned_to_a_limit(scan):
    data = s.torch_like_zip(EVIL)
    for level in range(3):
        data = zip_of({f"level{level}.zip": data})
    (found,) = scan(data)["findings"]
    assert found["details"]["member"] == (
        "level2.zip/level1.zip/level0.zip/archive/data.pkl")
    assert s.codes(scan(zip_of({"level3.zip": data}))) == ["archive_too_deep"]


def test_safetensors_inside_an_archive_are_checked(scan):
    broken = s.safetensors_bytes(
        {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4))
    result = scan(zip_of({"model.safetensors": broken}))
    assert s.codes(result) == ["safetensors_size_mismatch"]
    assert result["findings"][0]["details"]["member"] == "model.safetensors"


def test_a_zip_of_an_unsupported_version_fails_closed(scan):
    data = bytearray(s.torch_like_zip(s.clean_pickle(2)))
    central = data.index(b"PK\x01\x02")
    data[central + 6:central + 8] = (64).to_bytes(2, "little")  # version needed: 6.4
    assert s.codes(scan(bytes(data))) == ["archive_malformed"]
