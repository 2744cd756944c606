"""Choosing the blob store: by name, through the hook, checked against the interface."""

from __future__ import annotations

import pytest
from pyramid.config import Configurator
from pyramid.request import Request, apply_request_extensions

from modelreg import api
from modelreg.interfaces import IBlobStore
from modelreg.plugins import get_plugin_manager
from modelreg.storage import backend_descriptions, get_blob_store
from modelreg.storage import local as local_backend
from modelreg.storage.local import LocalBlobStore


class NotAStore:
    """A backend whose factory builds something that does not provide IBlobStore."""

    def put(self, stream):
        return None


class FakeBackends:
    def __init__(self, *names, factory=None):
        self.names = names
        self.factory = factory or (lambda settings: NotAStore())

    @api.hookimpl
    def modelreg_storage_backends(self, settings):
        return [api.BackendDescription(name, self.factory, f"the {name} backend")
                for name in self.names]


def hook(*plugins, load_entrypoints=False, settings=None):
    return get_plugin_manager(settings or {}, load_entrypoints=load_entrypoints,
                              plugins=plugins).hook


def test_unknown_backend_names_the_installed_ones(tmp_path):
    with pytest.raises(RuntimeError) as caught:
        get_blob_store({"modelreg.storage": "gcs"}, hook(local_backend, FakeBackends("s3x")))
    message = str(caught.value)
    assert message == ("unknown storage backend 'gcs'; installed backends: local, s3x "
                       "(is the plugin not installed?)")


def test_no_backend_installed_at_all():
    with pytest.raises(RuntimeError, match="installed backends: none"):
        get_blob_store({}, hook())


def test_local_is_the_default(tmp_path):
    settings = {"modelreg.storage.local.path": str(tmp_path / "blobs")}
    store = get_blob_store(settings, hook(local_backend, FakeBackends("other")))
    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "blobs").resolve()
    settings["modelreg.storage"] = " local "
    assert isinstance(get_blob_store(settings, hook(local_backend)), LocalBlobStore)


def test_the_setting_picks_another_backend(tmp_path):
    made = []

    def factory(settings):
        made.append(settings["modelreg.storage.memory.size"])
        return LocalBlobStore(tmp_path / "memory")

    settings = {"modelreg.storage": "memory", "modelreg.storage.memory.size": "10"}
    get_blob_store(settings, hook(local_backend, FakeBackends("memory", factory=factory)))
    assert made == ["10"]


def test_the_store_is_verified_against_the_interface():
    with pytest.raises(RuntimeError, match="'broken' does not provide IBlobStore"):
        get_blob_store({"modelreg.storage": "broken"}, hook(FakeBackends("broken")))


def test_two_plugins_offering_one_name_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="offered by two plugins"):
        backend_descriptions({}, hook(local_backend, FakeBackends("local")))


def test_local_backend_comes_from_the_core_entry_point(tmp_path):
    settings = {"modelreg.storage.local.path": str(tmp_path / "blobs")}
    descriptions = backend_descriptions(settings, hook(load_entrypoints=True))
    assert "local" in descriptions
    assert isinstance(get_blob_store(settings, hook(load_entrypoints=True)), LocalBlobStore)


def test_blocking_the_local_plugin_leaves_no_local_backend(tmp_path):
    settings = {"modelreg.plugins.disabled": "storage-local",
                "modelreg.storage.local.path": str(tmp_path / "blobs")}
    with pytest.raises(RuntimeError, match="unknown storage backend 'local'"):
        get_blob_store(settings, hook(load_entrypoints=True, settings=settings))


def test_includeme_registers_the_store_and_request_blob_store(tmp_path):
    settings = {"modelreg.storage.local.path": str(tmp_path / "blobs")}
    config = Configurator(settings=settings)
    config.registry["modelreg.plugin_manager"] = get_plugin_manager(
        settings, load_entrypoints=False, plugins=[local_backend])
    config.include("modelreg.storage")
    config.commit()
    store = config.registry["modelreg.blob_store"]
    assert isinstance(store, LocalBlobStore)
    assert config.registry.getUtility(IBlobStore) is store
    request = Request.blank("/")
    request.registry = config.registry
    apply_request_extensions(request)
    assert request.blob_store is store
