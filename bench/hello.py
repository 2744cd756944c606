"""The ceiling of ``bench/compare.py --issue18``: a hello-world WSGI app, served by the same
Waitress runner and settings as modelreg's ``pserve`` (``egg:modelreg#waitress``, 8 threads,
the throughput settings of ``production.ini``), so that a request rate can be read against
the most this machine gives one Waitress process under the same load.

It reads the request body (as an app must before answering a write) and answers every method
and path, ``/healthz`` included, with a short JSON body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"hello": "world"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the body, answer ``200`` with :data:`BODY`."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [BODY]


def make_app(global_config: dict[str, Any], **settings: Any) -> Callable[..., Any]:
    """The PasteDeploy app factory (``use = call:hello:make_app``)."""
    return hello
