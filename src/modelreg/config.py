"""Assemble the application: settings, plugins, then each feature in a fixed order."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pyramid.config import Configurator
from pyramid.events import ContextFound, NewRequest
from pyramid.interfaces import IMultiView, IRequestExtensions, IRequestFactory
from pyramid.predicates import RequestMethodPredicate
from pyramid.renderers import JSON
from pyramid.request import Request

from . import keys
from .openapi import (
    add_method_not_allowed_views,
    conditional_view,
    json_etag_view,
    refuse_control_characters,
    refuse_undecodable_requests,
)
from .plugins import get_plugin_manager, log_plugins
from .settings import ENVIRONMENT_SETTINGS as ENVIRONMENT_SETTINGS
from .settings import apply_environment

log = logging.getLogger(__name__)

def configure(
    settings: dict[str, Any],
    *,
    load_entrypoints: bool = True,
    plugins: Iterable[Any] = (),
) -> Configurator:
    """Build the configurator of the app.

    :param settings: the ``[app:main]`` settings.
    :param load_entrypoints: load the plugins of the ``modelreg`` entry-point group (tests
        pass ``False`` and name their plugins).
    :param plugins: plugins to register explicitly.
    """
    settings = dict(settings)
    apply_environment(settings)
    if not settings.get("sqlalchemy.url"):
        raise RuntimeError(
            "no database configured: set sqlalchemy.url or MODELREG_DATABASE_URL"
        )
    pm = get_plugin_manager(settings, load_entrypoints=load_entrypoints, plugins=plugins)
    log_plugins(pm)

    config = Configurator(settings=settings)
    config.registry[keys.PLUGIN_MANAGER] = pm
    config.add_renderer("json", JSON(separators=(",", ":")))
    # The ``etag=True`` view option (ETag, If-None-Match -> 304), around the rendered view;
    # a JSON read's dict is rendered with its ETag under Pyramid's renderer.
    config.add_view_deriver(conditional_view, "etag")
    config.add_view_deriver(json_etag_view, "etag_json", under="rendered_view",
                            over="mapped_view")
    # Order matters: errors first (every later failure renders as JSON), then the database
    # and its transaction management, then security (the policy, the default permission that
    # refuses any view declared without one, the admin API), then the features, then
    # plugins' own additions.
    config.include(".errors")
    config.include(".logs")  # request ids and the access log
    config.add_subscriber(refuse_undecodable_requests, NewRequest)
    config.add_subscriber(refuse_control_characters, ContextFound)
    config.include(".db")
    config.include(".jobs")  # config.add_job_kind
    config.include(".policy")  # a wrong modelreg.policy.* setting stops start-up here
    # The blob store is built at start-up: an unknown backend stops it here.
    config.include(".storage")
    config.include(".security")
    config.include(".ops")
    config.include(".metrics")  # /metrics, when modelreg.metrics.enabled
    config.include(".registry")  # request.registry_service, its API, retention
    config.include(".files")
    config.include(".scanning")  # the findings API; the scan job kind
    config.include(".plugin_api")  # request.modelreg, the registry of modelreg.api
    pm.hook.modelreg_pyramid_configure(config=config)
    add_method_not_allowed_views(config)
    config.commit()
    # Plugins' start-up checks, in every process that assembles the app (hookspecs.py).
    pm.hook.modelreg_startup(settings=config.registry.settings, registry=config.registry)
    # Last: the embedded worker thread, if enabled, once every job kind is registered and
    # the start-up checks passed.
    config.include(".worker")
    config.commit()
    bake_request_extensions(config.registry)
    order_views_by_method(config.registry)
    return config


def _methods_of(view: Any) -> frozenset[str] | None:
    """The methods of a view's ``request_method`` predicate (``None`` without one)."""
    for predicate in getattr(view, "__predicates__", ()):
        if isinstance(predicate, RequestMethodPredicate):
            return frozenset(predicate.val)
    return None


def order_views_by_method(registry: Any) -> int:
    """In each of Pyramid's multi-views (the views of one route), try the ``GET`` view
    before the other methods' views of the same rank; returns how many were reordered.

    Pyramid tries a route's views in order (their number of predicates, then the order in
    which they were added: here venusian's, alphabetical, so ``delete_alias`` before
    ``get_alias``), and each view whose ``request_method`` does not match raises
    ``PredicateMismatch`` — an HTTP exception, that is a whole WebOb ``Response``, about
    7 µs — before the next is tried: every read paid for one.  Only views of one rank whose
    ``request_method`` sets are pairwise disjoint are reordered, so that the view that
    answers a request is the same as before.
    """
    reordered = 0
    for registration in registry.registeredAdapters():
        if registration.provided is not IMultiView:
            continue
        multiview = registration.factory
        ranks: dict[Any, list[tuple[Any, Any, Any]]] = {}
        for entry in multiview.views:
            ranks.setdefault(entry[0], []).append(entry)
        views = []
        for rank in sorted(ranks):
            entries = ranks[rank]
            methods = [_methods_of(view) for _, view, _ in entries]
            if (len(entries) > 1 and None not in methods
                    and sum(map(len, methods)) == len(frozenset().union(*methods))):
                ordered = sorted(entries, key=lambda e: "GET" not in (_methods_of(e[1]) or ()))
                reordered += ordered != entries
                entries = ordered
            views += entries
        multiview.views[:] = views
    return reordered


def bake_request_extensions(registry: Any) -> None:
    """Put the request methods and properties added so far (``config.add_request_method``:
    ``request.dbsession``, ``request.tm``, ``request.modelreg`` …) on one request class, made
    once, instead of on each request.

    Pyramid applies reified request properties by making a new class for every request
    (``pyramid.util.InstancePropertyHelper.apply_properties``): about 40 µs of CPU per
    request here, and garbage that the cycle collector then walks (docs/performance.md,
    "Read path").  The request factory becomes a subclass holding them; what is added after
    this (a later ``config.commit()``) is applied per request as before, so nothing is lost.
    """
    extensions = registry.queryUtility(IRequestExtensions)
    factory = registry.queryUtility(IRequestFactory, default=Request)
    if extensions is None or not isinstance(factory, type):
        return
    if not (extensions.descriptors or extensions.methods):
        return
    attributes = {**extensions.methods, **extensions.descriptors,
                  "__module__": factory.__module__,
                  "__doc__": "The registry's request: Pyramid's, with the app's request "
                             "methods and properties."}
    registry.registerUtility(type(factory.__name__, (factory,), attributes), IRequestFactory)
    extensions.methods.clear()
    extensions.descriptors.clear()
