"""The Client's REST operations against a live Waitress: typed results, paging, errors."""

from __future__ import annotations

import datetime as dt

import pytest
from client_support import (  # noqa: F401 - fixtures
    client,
    model_name,
    registry,
)

from modelreg.testing.server import free_port
from modelreg_client import (
    Client,
    Conflict,
    InvalidRequest,
    Model,
    ModelregError,
    NetworkError,
    NotFound,
    PermissionDenied,
    Unauthorized,
    Version,
    parse_ref,
)

pytestmark = pytest.mark.server


def ready_version(client: Client, model: str, content: bytes = b"weights") -> Version:
    draft = client.create_version(model, metadata={"metrics": {"auc": 0.91}})
    client.upload_file(model, draft.number, "model.bin", content)
    return client.finalize_version(model, draft.number)


def test_models_versions_tags_and_aliases(client, model_name):
    model = client.create_model(model_name, "scores fraud", {"team": "risk"})
    assert isinstance(model, Model) and model.tags == {"team": "risk"}
    assert isinstance(model.created_at, dt.datetime)
    client.set_model_tag(model_name, "tier", "gold")
    client.delete_model_tag(model_name, "team")
    model = client.update_model(model_name, description="scores card fraud")
    assert model.tags == {"tier": "gold"} and model.description == "scores card fraud"

    version = ready_version(client, model_name)
    assert version.status == "ready" and version.digest.startswith("sha256:")
    client.set_version_tag(model_name, version.number, "approved", "yes")
    alias = client.set_alias(model_name, "champion", version.number)
    assert alias.version == version.number
    assert client.get_version(model_name, "champion").tags == {"approved": "yes"}
    assert client.get_version(model_name, version.digest).number == version.number
    assert [a.alias for a in client.list_aliases(model_name)] == ["champion"]
    second = ready_version(client, model_name, b"better weights")
    client.set_alias(model_name, "champion", second.number)
    moves = list(client.alias_history(model_name, "champion"))
    assert [(m.from_version, m.to_version) for m in moves] == [
        (version.number, second.number), (None, version.number)]
    client.delete_alias(model_name, "champion")
    client.delete_version_tag(model_name, version.number, "approved")

    files = client.list_files(model_name, second.number)
    assert [f.path for f in files.files] == ["model.bin"] and files.digest == second.digest
    info = client.file_info(model_name, second.number, "model.bin")
    assert (info.size, info.sha256) == (14, files.files[0].sha256)
    assert client.read_file(model_name, "latest", "model.bin") == b"better weights"

    client.delete_version(model_name, version.number)
    with pytest.raises(NotFound) as caught:
        client.get_version(model_name, version.number)
    assert caught.value.code == "version_not_found" and caught.value.status == 404
    client.delete_model(model_name)
    with pytest.raises(NotFound):
        client.get_model(model_name)


def test_deleting_a_version_drops_only_the_aliases_named(client, model_name):
    client.create_model(model_name)
    version = ready_version(client, model_name)
    client.set_alias(model_name, "champion", version.number)
    client.set_alias(model_name, "staging", version.number)
    with pytest.raises(Conflict) as caught:
        client.delete_version(model_name, version.number, drop_aliases=["champion"])
    assert caught.value.code == "version_has_aliases"
    assert caught.value.details["aliases"] == ["champion", "staging"]
    client.delete_version(model_name, version.number, drop_aliases=["champion", "staging"])
    assert client.list_aliases(model_name) == []
    moves = list(client.alias_history(model_name, "staging"))
    assert [(m.from_version, m.to_version) for m in moves] == [
        (version.number, None), (None, version.number)]


def test_search_pages_through_every_result(client, model_name):
    names = [f"{model_name}-{i:02d}" for i in range(7)]
    for name in names:
        client.create_model(name, tags={"batch": model_name})
    found = client.list_models(f"tag.batch = '{model_name}'", page_size=2)
    assert [m.name for m in found] == names
    wanted = f"name IN ('{names[3]}', '{names[5]}') OR name GLOB '{model_name}-?6'"
    assert [m.name for m in client.search(wanted)] == [names[3], names[5], names[6]]
    for i in range(3):
        client.create_version(names[0], metadata={"i": i})
    versions = client.list_versions(names[0], "metadata.i >= 1", page_size=1)
    assert [v.number for v in versions] == [3, 2]


def test_upload_session_operations(client, model_name):
    client.create_model(model_name)
    draft = client.create_version(model_name)
    data = bytes(range(256)) * 40_000  # about 10 MiB
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    upload = client.open_upload(model_name, draft.number, "big.bin", size=len(data), sha256=sha)
    assert upload.offset == 0 and client.max_put_size == upload.max_chunk_size
    first = upload.min_chunk_size
    assert client.upload_chunk(upload.id, 0, data[:first]).offset == first
    assert client.get_upload(upload.id).offset == first
    file = client.complete_upload(upload.id, sha, data[first:], offset=first)
    assert (file.size, file.sha256) == (len(data), sha)
    aborted = client.open_upload(model_name, draft.number, "other.bin")
    client.abort_upload(aborted.id)
    with pytest.raises(NotFound):
        client.get_upload(aborted.id)
    client.delete_file(model_name, draft.number, "big.bin")
    assert client.list_files(model_name, draft.number).files == []


def test_errors_carry_the_servers_code_message_and_status(client, registry, model_name):
    client.create_model(model_name)
    with pytest.raises(Conflict) as caught:
        client.create_model(model_name.upper())
    assert caught.value.code == "model_exists" and caught.value.status == 409
    assert model_name in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        client.create_model("no/slashes")
    assert caught.value.code == "invalid_name" and caught.value.status == 422
    with pytest.raises(InvalidRequest) as caught:
        list(client.list_models("name ==="))
    assert caught.value.code == "invalid_filter" and caught.value.status == 400

    with Client(registry.url, "mr_nope_nope") as stranger:
        with pytest.raises(Unauthorized) as caught:
            stranger.get_model(model_name)
        assert caught.value.status == 401 and isinstance(caught.value, PermissionDenied)
    with Client(registry.url) as anonymous, pytest.raises(Unauthorized):
        list(anonymous.list_models())
    with Client(registry.url, registry.read_token) as reader:
        assert reader.get_model(model_name).name == model_name
        with pytest.raises(PermissionDenied) as caught:
            reader.create_version(model_name)
        assert caught.value.status in (403, 404)


def test_unreachable_server_is_a_network_error():
    with Client(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0) as client:
        with pytest.raises(NetworkError) as caught:
            client.get_model("x")
    assert caught.value.status is None and caught.value.exit_code == 6
    assert isinstance(caught.value, ModelregError)


def test_refs():
    assert parse_ref("fraud-detector/3") == parse_ref("fraud-detector@3")
    assert parse_ref("fraud-detector/03").version == "3"
    assert parse_ref("m@champion").version == "champion"
    assert parse_ref("m@sha256:" + "a" * 64).version == "sha256:" + "a" * 64
    assert parse_ref("m").version is None and str(parse_ref("m@x")) == "m@x"
    for bad in ("", "m/", "m@", "/3", "m/champion", "m@a@b"):
        with pytest.raises(ValueError):
            parse_ref(bad)
    with pytest.raises(ValueError):
        Client("localhost:6543")
