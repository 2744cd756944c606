"""Delivery end to end: the app writes events, ``modelreg worker`` delivers them to a real
receiver on 127.0.0.1 that verifies every signature; retries, ``Retry-After``, redelivery
and a worker killed in the middle of a delivery."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import signal
import threading
import time
import urllib.request
import uuid
from typing import Any

import sqlalchemy as sa
from modelreg_webhooks import delivery
from modelreg_webhooks.config import WebhookSettings
from modelreg_webhooks.tables import deliveries, subscriptions

from conftest import SECRET, Deployment, Receiver
from modelreg.api import Event, database_engine

W = "/api/v1/webhooks"
_names = itertools.count()

#: What the scripted session must produce, in this order (others may come in between).
SESSION_TYPES = ["model.created", "version.created", "version.finalized", "alias.set",
                 "model.tag_set", "alias.deleted", "model.deleted"]


def subscribe(admin: Any, receiver: Receiver, events: list[str] | None = None) -> int:
    body = {"url": receiver.url, "secret": SECRET, "events": events or ["*"]}
    return admin.post_json(W, body, status=201).json["id"]


def session(admin: Any) -> str:
    """Create a model, a version with a file, finalize it, set an alias and a tag, delete."""
    name = f"hooked-{next(_names)}-{time.monotonic_ns()}"
    m = f"/api/v1/models/{name}"
    admin.post_json("/api/v1/models", {"name": name}, status=201)
    number = admin.post_json(f"{m}/versions", {}, status=201).json["number"]
    admin.put(f"{m}/versions/{number}/files/config.json", b'{"a": 1}',
              content_type="application/octet-stream", status=201)
    admin.post(f"{m}/versions/{number}/finalize", status=(200, 202))
    admin.put_json(f"{m}/aliases/prod", {"version": number}, status=201)
    admin.put_json(f"{m}/tags/team", {"value": "ml"})
    admin.delete(f"{m}/aliases/prod", status=204)
    admin.delete(m, status=204)
    return name


def log(admin: Any, sub: int, **params: Any) -> list[dict[str, Any]]:
    """The whole delivery log of ``sub``, oldest first, through the paged API."""
    rows: list[dict[str, Any]] = []
    before = None
    while True:
        query = {"limit": 3, **params, **({"before": before} if before else {})}
        page = admin.get(f"{W}/{sub}/deliveries", query).json
        rows.extend(page["deliveries"])
        before = page["next"]
        if before is None:
            return rows[::-1]


def assert_subsequence(expected: list[str], actual: list[str]) -> None:
    it = iter(actual)
    assert all(t in it for t in expected), actual


def test_a_scripted_session_arrives_once_per_id_in_order_and_signed(
    admin, receiver, deployment: Deployment
):
    sub = subscribe(admin, receiver)
    name = session(admin)
    deployment.worker_once()
    deployment.worker_once()  # a second run finds nothing new to send
    got = receiver.unique()
    assert all(entry.verified for entry in receiver.received)
    assert all(entry.body["model"] == name for entry in got)
    types = [entry.body["type"] for entry in got]
    assert_subsequence(SESSION_TYPES, types)
    assert len(receiver.received) == len(got)  # nothing was sent twice
    entries = log(admin, sub)
    assert [d["event_id"] for d in entries] == [e.event_id for e in got]
    assert {d["status"] for d in entries} == {"delivered"}
    assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in entries)
    first = got[0].body
    assert set(first) == {"id", "type", "occurred_at", "model", "data"}
    assert first["id"] == got[0].event_id and first["occurred_at"].endswith("Z")


def test_the_event_filter_selects_types(admin, receiver, deployment: Deployment):
    subscribe(admin, receiver, ["alias.*", "model.deleted"])
    session(admin)
    deployment.worker_once()
    assert [e.body["type"] for e in receiver.unique()] == [
        "alias.set", "alias.deleted", "model.deleted"]


def test_a_failing_receiver_is_retried_and_the_log_shows_every_attempt(
    admin, receiver, deployment: Deployment
):
    receiver.script = [(500, {}), (502, {})]
    sub = subscribe(admin, receiver, ["model.*"])
    admin.post_json("/api/v1/models", {"name": f"retried-{next(_names)}"}, status=201)
    with deployment.worker():
        receiver.wait(lambda: len(receiver.unique()) == 1)
    assert [e.status for e in receiver.received] == [500, 502, 200]
    assert len({e.event_id for e in receiver.received}) == 1
    assert all(e.verified for e in receiver.received)
    # backoff: the waits grow
    gaps = [b.at - a.at for a, b in itertools.pairwise(receiver.received)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1
    (entry,) = log(admin, sub)
    assert entry["status"] == "delivered" and entry["attempts"] == 3
    detail = admin.get(f"{W}/{sub}/deliveries/{entry['id']}").json
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 502, 200]
    assert [a["error"] for a in detail["attempt_log"]] == ["HTTP 500", "HTTP 502", None]


def test_retry_after_is_honoured(admin, receiver, deployment: Deployment):
    receiver.script = [(503, {"Retry-After": "3"})]
    sub = subscribe(admin, receiver, ["model.created"])
    admin.post_json("/api/v1/models", {"name": f"later-{next(_names)}"}, status=201)
    with deployment.worker():
        receiver.wait(lambda: len(receiver.unique()) == 1, timeout=60)
    first, second = receiver.received
    assert (first.status, second.status) == (503, 200)
    assert second.at - first.at >= 2.9
    (entry,) = log(admin, sub)
    detail = admin.get(f"{W}/{sub}/deliveries/{entry['id']}").json
    assert detail["attempt_log"][0]["retry_after"] == 3


def test_a_second_worker_with_an_older_list_of_due_deliveries_waits_for_retry_after(
    admin, receiver, deployment: Deployment, webhooks_settings, plugin_engine
):
    """Two workers list the due deliveries at the same moment; one sends first and the
    receiver answers 503 with ``Retry-After``.  The other, sending from its older list, must
    not send again before the receiver asked (nor before the backoff)."""
    receiver.script = [(503, {"Retry-After": "30"})]
    sub = subscribe(admin, receiver, ["model.created"])
    admin.post_json("/api/v1/models", {"name": f"listed-{next(_names)}"}, status=201)
    deployment.worker_once()  # the first worker: one attempt, refused
    assert [e.status for e in receiver.received] == [503]
    (entry,) = log(admin, sub)
    assert entry["status"] == "pending" and entry["next_attempt_at"] is not None
    # The second worker listed it as due before the first one's attempt was recorded.
    config = WebhookSettings.from_settings(webhooks_settings)
    assert delivery.attempt(plugin_engine, config, entry["id"]) is False
    assert [e.status for e in receiver.received] == [503]
    (entry,) = log(admin, sub)
    assert entry["attempts"] == 1
    # Delivered on request; the worker then finds the event done (nothing held back for the
    # next test: the worker's own backoff of the event is 1 s).
    admin.post(f"{W}/{sub}/deliveries/{entry['id']}/redeliver", status=202)
    receiver.wait(lambda: len(receiver.received) == 2)
    time.sleep(1.2)
    deployment.worker_once()
    assert [e.status for e in receiver.received] == [503, 200]


def test_a_receiver_that_never_recovers_fails_for_good(admin, receiver, deployment):
    receiver.script = [(500, {})] * 10
    sub = subscribe(admin, receiver, ["model.created"])
    admin.post_json("/api/v1/models", {"name": f"doomed-{next(_names)}"}, status=201)
    with deployment.worker():
        receiver.wait(lambda: len(receiver.received) == 4)
        deadline = time.monotonic() + 20
        while log(admin, sub)[0]["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    (entry,) = log(admin, sub, status="failed")
    assert entry["attempts"] == 4 and entry["last_status_code"] == 500
    assert len(receiver.received) == 4  # max_attempts


def test_redelivery_on_request(admin, receiver, deployment: Deployment):
    sub = subscribe(admin, receiver, ["model.created"])
    admin.post_json("/api/v1/models", {"name": f"again-{next(_names)}"}, status=201)
    deployment.worker_once()
    (entry,) = log(admin, sub)
    answer = admin.post(f"{W}/{sub}/deliveries/{entry['id']}/redeliver", status=202).json
    assert answer["status"] == "pending"
    receiver.wait(lambda: len(receiver.received) == 2)
    first, second = receiver.received
    assert first.event_id == second.event_id and second.verified
    assert first.body == second.body
    detail = admin.get(f"{W}/{sub}/deliveries/{entry['id']}").json
    assert detail["status"] == "delivered"
    assert [a["status_code"] for a in detail["attempt_log"]] == [200, 200]
    admin.post(f"{W}/{sub}/deliveries/999999/redeliver", status=404)


def test_a_worker_killed_mid_delivery_loses_nothing(admin, receiver, deployment: Deployment):
    sub = subscribe(admin, receiver)
    name = session(admin)
    release = threading.Event()
    arrived = threading.Event()

    def hang_on_the_third(entry: Any) -> None:
        if len(receiver.received) == 3:
            arrived.set()
            release.wait(30)

    receiver.hold = hang_on_the_third
    ini = deployment.ini(**{"modelreg.worker.lease": "1", "modelreg.webhooks.lease": "1"})
    try:
        with deployment.worker(ini) as process:
            assert arrived.wait(60), receiver.received
            process.send_signal(signal.SIGKILL)
            process.wait(30)
    finally:
        release.set()
    receiver.hold = None
    time.sleep(1.5)  # the dead worker's leases run out
    deadline = time.monotonic() + 60
    while True:
        deployment.worker_once(ini)
        if {d["status"] for d in log(admin, sub)} == {"delivered"}:
            break
        assert time.monotonic() < deadline, log(admin, sub)
        time.sleep(1)
    got = receiver.unique()
    assert all(entry.verified for entry in receiver.received)
    assert [d["event_id"] for d in log(admin, sub)] == [e.event_id for e in got]
    assert_subsequence(SESSION_TYPES, [e.body["type"] for e in got])
    assert all(e.body["model"] == name for e in got)
    # the third was sent twice: once to the killed worker's connection, once after
    assert receiver.received[2].event_id in [e.event_id for e in receiver.received[3:]]


def test_an_event_is_queued_when_another_write_commits_between_its_reads_and_its_insert(
    admin, receiver, plugin_engine, webhooks_settings
):
    """``enqueue`` reads the subscriptions, then inserts the deliveries.  A write of the
    app's that commits in between must not fail it: on SQLite, a transaction that began
    ``DEFERRED`` cannot wait for it and fails at once (``database is locked``), so the
    plugin's transactions begin ``IMMEDIATE`` (``database_writer``), and the app's write waits
    for the insert instead."""
    subscribe(admin, receiver, ["model.created"])
    other = database_engine(webhooks_settings)
    done: list[int] = []

    def app_writes() -> None:
        with other.begin() as conn:  # a write of another connection, as the app's would be
            done.append(conn.execute(sa.update(subscriptions).values(
                description="changed meanwhile")).rowcount)

    writer = threading.Thread(target=app_writes)

    def before_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO webhook_deliveries") and writer.ident is None:
            writer.start()
            writer.join(1.0)  # committed at once unless it waits for this transaction

    event = Event(id=str(uuid.uuid4()), type="model.created", model=f"raced-{next(_names)}",
                  payload={}, created_at=dt.datetime.now(dt.UTC))
    sa.event.listen(plugin_engine, "before_cursor_execute", before_insert)
    try:
        ids = delivery.enqueue(plugin_engine, event)
    finally:
        sa.event.remove(plugin_engine, "before_cursor_execute", before_insert)
        writer.join(30)
        other.dispose()
    assert writer.ident is not None and done == [1]
    assert len(ids) == 1
    with plugin_engine.connect() as conn:
        assert conn.execute(sa.select(deliveries.c.event_id, deliveries.c.status)
                            .where(deliveries.c.id == ids[0])).one() == (event.id, "pending")


def test_a_server_with_embedded_worker_killed_mid_delivery_loses_nothing(
    admin, receiver, webhooks_settings
):
    from modelreg.testing.server import LiveServer

    sub = subscribe(admin, receiver)
    release = threading.Event()
    arrived = threading.Event()

    def hang_on_the_second(entry: Any) -> None:
        if len(receiver.received) == 2:
            arrived.set()
            release.wait(30)

    receiver.hold = hang_on_the_second
    settings = {**webhooks_settings, "modelreg.worker.embedded": "true",
                "modelreg.worker.lease": "1", "modelreg.webhooks.lease": "1"}
    first = session(admin)
    try:
        with LiveServer(settings, threads=2) as live:
            assert arrived.wait(60), receiver.received
            live.process.send_signal(signal.SIGKILL)
            live.process.wait(30)
    finally:
        release.set()
    receiver.hold = None
    time.sleep(1.5)  # the dead worker's leases run out
    with LiveServer(settings, threads=2) as live:
        second = f"after-restart-{next(_names)}"
        request = urllib.request.Request(  # noqa: S310 (http to the test server)
            live.url + "/api/v1/models", data=json.dumps({"name": second}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 201
        # Each model's events arrive in order, but the two models' in any order: wait for
        # the last event of each, and nothing left to send.
        ends = {(first, "model.deleted"), (second, "model.created")}
        deadline = time.monotonic() + 60
        while True:
            entries = log(admin, sub)
            if (ends <= {(d["model"], d["event_type"]) for d in entries}
                    and {d["status"] for d in entries} == {"delivered"}):
                break
            assert time.monotonic() < deadline, entries
            time.sleep(0.2)
    got = receiver.unique()
    assert all(entry.verified for entry in receiver.received)
    assert [d["event_id"] for d in log(admin, sub)] == [e.event_id for e in got]
    assert_subsequence(SESSION_TYPES, [e.body["type"] for e in got if e.body["model"] == first])
    assert [e.body["type"] for e in got if e.body["model"] == second] == ["model.created"]
    assert receiver.received[1].event_id in [e.event_id for e in receiver.received[2:]]
