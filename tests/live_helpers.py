"""Helpers for tests against real server processes (:class:`LiveServer`): a keep-alive JSON
client, requests released together from many threads, and assertion messages that carry the
servers' logs."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

from modelreg.testing.server import LiveServer

#: Seconds a live request, or a wait on one, may take.
TIMEOUT = 120.0

#: A request's status and body text; status 0 when the client itself failed.
Answer = tuple[int, str]


class LiveClient:
    """One keep-alive connection to one server process, speaking JSON."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        """``(status, headers, body)`` of one request (JSON ``body`` or ``raw`` bytes); the
        headers are looked up case-insensitively."""
        headers = {"Accept": "application/json", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            headers.setdefault("Content-Type", "application/octet-stream")
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.headers, response.read()

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        """The status and body text of one request."""
        code, _, data = self.call(method, path, body)
        return code, data.decode("utf-8", "replace")

    def json(self, method: str, path: str, body: Any = None, *, status: int | tuple[int, ...]
             = 200, raw: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON body of a request that must answer ``status``."""
        code, _, data = self.call(method, path, body, raw=raw, headers=headers)
        text = data.decode("utf-8", "replace")
        wanted = status if isinstance(status, tuple) else (status,)
        assert code in wanted, f"{self.server.url}: {method} {path}: {code} {text}\n" \
            f"--- its log ---\n{self.server.log_tail()}"
        return json.loads(text) if text else None

    def close(self) -> None:
        self.conn.close()


def all_at_once(requests: list[tuple[LiveServer, str, str, Any]]) -> list[Answer]:
    """Each ``(server, method, path, body)`` from its own thread and connection, released
    together by a barrier.

    Connections are opened before the barrier so that the requests really arrive together.
    A client that fails (timeout, reset) answers with status 0 and the exception's text.
    """
    barrier = threading.Barrier(len(requests), timeout=TIMEOUT)
    answers: list[Answer | None] = [None] * len(requests)

    def run(index: int, server: LiveServer, method: str, path: str, body: Any) -> None:
        client = LiveClient(server)
        try:
            client.conn.connect()
            barrier.wait()
            answers[index] = client.request(method, path, body)
        except Exception as exc:  # reported through the answers, not the thread
            answers[index] = (0, f"{type(exc).__name__}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i, *request), name=f"client-{i}")
               for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads), "clients hung"
    return [answer if answer is not None else (0, "no answer") for answer in answers]


def unexpected(answers: list[Answer], ok: tuple[int, ...], *servers: LiveServer) -> str:
    """The answers whose status is not in ``ok``, and the end of each server's log, for
    assertion messages."""
    bad = [f"{code}: {text[:500]}" for code, text in answers if code not in ok]
    logs = "".join(f"\n--- log of {server.url} ---\n{server.log_tail()}" for server in servers)
    return f"{len(bad)} of {len(answers)} answers unexpected:\n" + "\n".join(bad) + logs
