"""The largest request bodies, computed in one place.

Every route that takes a body has a limit: JSON bodies ``modelreg.api.max_json_body``, a
file in one ``PUT``, a chunk (``PATCH``) and a numbered part of an upload session
``modelreg.upload.max_put_size``.  :func:`largest_request_body` is the largest of them, the
most any single request to the app may carry.

Waitress reads (and spools to disk) a whole body before the app runs, so its own ceiling,
``max_request_body_size`` in ``[server:main]``, must match: Waitress refuses a body of
``max_request_body_size`` bytes *or more*, so the setting is :func:`server_body_limit`, one
more than the largest body.  A body the app would refuse is then refused by Waitress from
its ``Content-Length`` before a byte of it is read (a plain-text 413; a chunked one once
that many bytes arrived), and every body the app accepts gets through.  The shipped ini files
say so (``tests/test_limits.py`` checks them), and start-up warns when an ini's Waitress
limit disagrees with the app's (:func:`check_server_body_limit`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from .files.services import max_put_size
from .openapi import DEFAULT_MAX_JSON_BODY, MAX_JSON_BODY_SETTING
from .servers import ini_waitress_setting

log = logging.getLogger(__name__)

#: Waitress's ``max_request_body_size`` when the ini does not set it.
WAITRESS_DEFAULT_MAX_BODY = 1073741824


def body_limits(settings: Mapping[str, Any]) -> dict[str, int]:
    """The largest body of each kind of request, by the setting that sets it."""
    settings = dict(settings)
    return {
        MAX_JSON_BODY_SETTING: int(settings.get(MAX_JSON_BODY_SETTING) or DEFAULT_MAX_JSON_BODY),
        # one PUT of a file, one chunk (PATCH) and one numbered part of an upload session
        "modelreg.upload.max_put_size": max_put_size(settings),
    }


def largest_request_body(settings: Mapping[str, Any]) -> int:
    """The most bytes any single request to the app may carry."""
    return max(body_limits(settings).values())


def server_body_limit(settings: Mapping[str, Any]) -> int:
    """The ``max_request_body_size`` Waitress needs: it refuses bodies of that many bytes or
    more (``waitress.parser``), so one more than :func:`largest_request_body`."""
    return largest_request_body(settings) + 1


def ini_server_body_limit(ini_path: str | os.PathLike[str] | None,
                          section: str = "server:main") -> int | None:
    """Waitress's ``max_request_body_size`` in ``ini_path``; ``None`` when the server
    section is not Waitress's (or the file cannot be read)."""
    return ini_waitress_setting(ini_path, "max_request_body_size", WAITRESS_DEFAULT_MAX_BODY,
                                section)


def check_server_body_limit(settings: Mapping[str, Any],
                            global_config: Mapping[str, Any] | None) -> str | None:
    """Warn (and return the warning) when the ini's Waitress body limit is not the app's
    largest request body."""
    server = ini_server_body_limit((global_config or {}).get("__file__"))
    wanted = server_body_limit(settings)
    if server is None or server == wanted:
        return None
    message = (
        f"[server:main] max_request_body_size is {server} but the largest body the app "
        f"accepts is {wanted - 1} bytes (the largest of "
        + ", ".join(f"{key} = {value}" for key, value in body_limits(settings).items())
        + f"), and Waitress refuses bodies of max_request_body_size bytes or more: set "
        f"max_request_body_size = {wanted}"
    )
    log.warning(message)
    return message
