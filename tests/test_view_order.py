"""The views of a route are tried GET first (modelreg.config.order_views_by_method): a read
raises no PredicateMismatch on its way to its view, and every method still reaches its own
view."""

from __future__ import annotations

from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.interfaces import IMultiView, IRouteRequest, IView, IViewClassifier
from pyramid.security import NO_PERMISSION_REQUIRED
from webtest import TestApp
from zope.interface import Interface

from modelreg.config import order_views_by_method


def _views(registry: Any, route: str) -> list[str]:
    iface = registry.getUtility(IRouteRequest, name=route)
    multiview = registry.adapters.lookup((IViewClassifier, iface, Interface), IView, name="")
    assert IMultiView.providedBy(multiview)
    return [view.__name__ for _, view, _ in multiview.views]


def _app(extra_view: bool = False) -> tuple[Any, Configurator]:
    config = Configurator()
    config.add_route("thing", "/thing")
    for method in ("DELETE", "GET", "PUT"):
        def view(request: Any, method: str = method) -> dict[str, str]:
            return {"method": method}
        view.__name__ = f"{method.lower()}_thing"
        config.add_view(view, route_name="thing", request_method=method, renderer="json",
                        permission=NO_PERMISSION_REQUIRED)
    if extra_view:  # a second GET view of the same rank: overlapping methods
        def also(request: Any) -> dict[str, str]:
            return {"method": "also"}
        config.add_view(also, route_name="thing", request_method=("POST", "GET"),
                        renderer="json", permission=NO_PERMISSION_REQUIRED)
    config.commit()
    return config.make_wsgi_app(), config


def test_the_get_view_comes_first_and_every_method_keeps_its_view():
    app, config = _app()
    assert _views(config.registry, "thing")[0] == "delete_thing"
    assert order_views_by_method(config.registry) == 1
    assert _views(config.registry, "thing")[0] == "get_thing"
    client = TestApp(app)
    for method in ("GET", "PUT", "DELETE"):
        assert client.request("/thing", method=method).json == {"method": method}
    assert client.head("/thing").status_int == 200
    client.post("/thing", status=404)


@pytest.mark.parametrize("extra_view", [True])
def test_views_of_overlapping_methods_keep_their_order(extra_view):
    _, config = _app(extra_view)
    before = _views(config.registry, "thing")
    assert order_views_by_method(config.registry) == 0
    assert _views(config.registry, "thing") == before


def test_the_apps_reads_reach_their_view_first(testapp):
    registry = testapp.app.registry
    for route in ("api.alias", "api.version", "api.model", "api.models", "api.versions",
                  "api.files"):
        assert _views(registry, route)[0].startswith(("get_", "list_")), route
