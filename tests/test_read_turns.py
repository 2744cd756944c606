"""Read turns (``modelreg.servers.ReadTurns``): on modelreg's Waitress, the ``GET`` and
``HEAD`` requests of read-only views run ``reads_at_once`` at a time per process; every
other request (writes, downloads, the plugins' pages) runs beside them as before.

Served by a real Waitress (``modelreg.servers.create_server``, the server of
``egg:modelreg#waitress``) in this process, on the real app with a plugin whose views
sleep and count how many of their requests run at once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pyramid.security import NO_PERMISSION_REQUIRED
from waitress import wasyncore
from waitress.server import BaseWSGIServer

from modelreg import api, servers
from modelreg.db import READ_TURN_KEY
from modelreg.testing import CORE_PLUGINS, clear_database, make_app

#: How long each test view sleeps: long enough that requests sent together overlap.
NAP = 0.15


class Gauge:
    """How many requests of a kind are in their view at once, and the most there were."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


class TurnsPlugin:
    """A read-only view, a view that is not read-only, and a read-only view that fails."""

    def __init__(self) -> None:
        self.reads = Gauge()
        self.pages = Gauge()
        #: While set, the views wait for :attr:`release` instead of napping.
        self.holding = False
        self.release = threading.Event()

    def nap(self) -> None:
        if self.holding:
            assert self.release.wait(30)
        else:
            time.sleep(NAP)

    def read(self, request: Any) -> dict[str, Any]:
        with self.reads:
            request.dbsession.connection().exec_driver_sql("SELECT 1").all()
            self.nap()
        return {"turn": request.environ.get(READ_TURN_KEY) is not None}

    def page(self, request: Any) -> dict[str, Any]:
        with self.pages:
            self.nap()
        turn = request.environ.get(READ_TURN_KEY)
        return {"turn": turn is not None and turn.held}

    def fail(self, request: Any) -> dict[str, Any]:
        raise RuntimeError("a read-only view that fails")

    @api.hookimpl
    def modelreg_pyramid_configure(self, config: Any) -> None:
        """The test routes."""
        for name, view, read_only in (("turns.read", self.read, True),
                                      ("turns.page", self.page, False),
                                      ("turns.fail", self.fail, True)):
            config.add_route(name, f"/turns/{name}")
            config.add_view(view, route_name=name, request_method="GET",
                            permission=NO_PERMISSION_REQUIRED, renderer="json")
            if read_only:
                api.add_read_only_view(config, name)


@pytest.fixture
def plugin() -> TurnsPlugin:
    return TurnsPlugin()


@pytest.fixture
def wsgi(modelreg_settings: dict[str, Any], modelreg_database: Any, plugin: TurnsPlugin
         ) -> Iterator[Any]:
    app = make_app(modelreg_settings, (*CORE_PLUGINS, plugin))
    yield app
    clear_database(app.registry["db_engine"])
    app.registry["db_engine"].dispose()


class Served:
    """``servers.create_server`` on a free port, run in a thread."""

    def __init__(self, app: Any, **settings: Any) -> None:
        self.server = servers.create_server(app, listen="127.0.0.1:0", threads=8, **settings)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def get(self, path: str, timeout: float = 30) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def post(self, path: str, body: dict[str, Any]) -> int:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)

    def close(self) -> None:
        # Closed from the server's own loop (a thunk of its trigger), so that the loop never
        # polls a socket this thread closed; the loop ends when nothing is left to serve.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        self.thread.join(10)
        self.server.task_dispatcher.shutdown()


@pytest.fixture
def serve(wsgi: Any) -> Iterator[Any]:
    started: list[Served] = []

    def start(**settings: Any) -> Served:
        served = Served(wsgi, **settings)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def together(calls: list[Any]) -> list[Any]:
    """Run ``calls`` at the same moment, each in a thread of its own; their results."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_reads_of_read_only_views_take_turns(serve, plugin):
    served = serve()  # reads_at_once: 1 by default
    results = together([lambda: served.get("/turns/turns.read")] * 6)
    assert results == [(200, {"turn": True})] * 6
    assert plugin.reads.most == 1


@pytest.mark.parametrize("at_once", [2, 3])
def test_reads_at_once_sets_how_many_run_together(serve, plugin, at_once):
    served = serve(reads_at_once=str(at_once))  # as the ini file gives it
    together([lambda: served.get("/turns/turns.read")] * 6)
    assert plugin.reads.most == at_once


def test_zero_reads_at_once_switches_turns_off(serve, plugin):
    served = serve(reads_at_once="0")
    results = together([lambda: served.get("/turns/turns.read")] * 6)
    assert results == [(200, {"turn": False})] * 6
    assert plugin.reads.most > 1


def test_other_get_requests_give_their_turn_up_and_run_beside_reads(serve, plugin):
    """A GET to a view that is not read-only (a page, a download) gives up its turn before
    its view runs: such requests run together, and reads go on while they wait."""
    served = serve()
    results = together([lambda: served.get("/turns/turns.page")] * 4)
    assert results == [(200, {"turn": False})] * 4
    assert plugin.pages.most > 1
    plugin.holding = True
    with ThreadPoolExecutor(1) as pool:
        page = pool.submit(served.get, "/turns/turns.page")
        while not plugin.pages.now:  # the page is in its view, until released
            time.sleep(0.005)
        plugin.holding = False
        assert served.get("/turns/turns.read") == (200, {"turn": True})
        assert plugin.pages.now == 1  # the read did not wait for the page
        plugin.release.set()
        assert page.result() == (200, {"turn": False})


def test_writes_run_while_a_read_holds_the_turn(serve, plugin):
    served = serve()
    plugin.holding = True
    with ThreadPoolExecutor(1) as pool:
        read = pool.submit(served.get, "/turns/turns.read")
        while not plugin.reads.now:  # the read is in its view, holding the turn
            time.sleep(0.005)
        assert served.post("/api/v1/models", {"name": "written-during-a-read"}) == 201
        assert plugin.reads.now == 1  # the write did not wait for the read
        plugin.release.set()
        assert read.result() == (200, {"turn": True})
    assert served.get("/api/v1/models/written-during-a-read")[0] == 200


def test_a_read_that_fails_gives_its_turn_back(serve, plugin):
    served = serve()
    status, body = served.get("/turns/turns.fail")
    assert status == 500 and body["error"]["code"]
    # The turn is free again: the next reads are served (each would wait forever if not).
    assert together([lambda: served.get("/turns/turns.read", timeout=10)] * 2) == [
        (200, {"turn": True})] * 2


def test_the_core_reads_take_turns_and_answer_as_before(serve, plugin):
    served = serve()
    assert served.post("/api/v1/models", {"name": "turned"}) == 201
    answers = together([lambda: served.get("/api/v1/models/turned")] * 8)
    assert {status for status, _ in answers} == {200}
    assert {body["name"] for _, body in answers} == {"turned"}
    missing = served.get("/api/v1/models/not-there")
    assert missing[0] == 404 and missing[1]["error"]["code"] == "model_not_found"


def test_one_set_of_turns_for_every_listening_socket(wsgi):
    server = servers.create_server(wsgi, listen="127.0.0.1:0 127.0.0.1:0", threads=2)
    try:
        listeners = [d for d in server.map.values() if isinstance(d, BaseWSGIServer)]
        assert len(listeners) == 2
        turns = {id(listener.modelreg_read_turns) for listener in listeners}
        assert len(turns) == 1 and listeners[0].modelreg_read_turns.at_once == 1
    finally:
        server.close()
        server.task_dispatcher.shutdown()


@pytest.mark.parametrize("value", ["-1", "two", ""])
def test_a_wrong_reads_at_once_is_refused_at_start_up(value):
    with pytest.raises(ValueError, match="reads_at_once must be a whole number"):
        servers.create_server(lambda environ, start_response: [], listen="127.0.0.1:0",
                              reads_at_once=value)
