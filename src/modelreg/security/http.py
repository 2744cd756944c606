"""HTTP hardening applied to every request in one place: the ``Host`` allow-list and
``X-Content-Type-Options: nosniff``; and the client's address as the registry records it.

Setting:

``modelreg.allowed_hosts`` (space- or newline-separated; unset or empty: any host)
    The names the registry answers to.  A request whose ``Host`` header matches none (or
    that sends none) is answered ``400 invalid_host`` before anything else happens, so that
    links and ``Location`` headers built from ``Host`` cannot point elsewhere (cache
    poisoning, password-reset-style link hijacking).  Entries:

    * ``registry.example.com`` — that name, on any port;
    * ``registry.example.com:8443`` — that name on that port only;
    * ``*.example.com`` — any name below ``example.com`` (not ``example.com`` itself);
    * ``127.0.0.1``, ``[::1]`` — addresses, IPv6 in brackets, optionally with ``:port``;
    * ``*`` — any host (the same as leaving the setting empty).

    Names are compared case-insensitively, without a trailing dot.  Behind a reverse proxy the
    ``Host`` checked is the one the app sees (Waitress puts ``X-Forwarded-Host`` there only
    from a ``trusted_proxy``).

The tween sits above every other one (:data:`pyramid.tweens.INGRESS`): a refused host costs
no database transaction, and every response — errors included — carries ``nosniff``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.tweens import INGRESS

from .. import keys
from ..errors import BadRequest, error_response
from ..settings import ALLOWED_HOSTS

ALLOWED_HOSTS_SETTING = ALLOWED_HOSTS
#: Where the parsed allow-list is kept in the registry (``None``: any host).
ALLOWED_HOSTS_KEY = keys.ALLOWED_HOSTS
#: Longest client address recorded (the audit log's and the throttle's column).
CLIENT_MAX = 64

_NAME = r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?"
_HOST = re.compile(rf"(?P<host>{_NAME}|\[[0-9a-f:.]+\])\.?(?::(?P<port>[0-9]{{1,5}}))?")
_ENTRY = re.compile(rf"(?P<host>(?:\*\.)?{_NAME}|\[[0-9a-f:.]+\])\.?(?::(?P<port>[0-9]{{1,5}}))?")


def client_address(request: Request) -> str | None:
    """The client's address as the audit log and the throttle see it: ``REMOTE_ADDR``.

    Unlike ``request.client_addr`` this never reads ``X-Forwarded-For``, which the client
    writes; a trusted reverse proxy's view of the client reaches ``REMOTE_ADDR`` through
    Waitress's ``trusted_proxy`` settings.
    """
    address = request.environ.get("REMOTE_ADDR")
    return address[:CLIENT_MAX] if address else None


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header, lower-cased without a trailing dot; ``None``
    when it is not a well-formed host."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return None
    return match.group("host"), int(port) if port is not None else None


@dataclass(frozen=True)
class HostPattern:
    """One entry of the allow-list: an exact name or ``*.`` and a suffix; a port or any."""

    host: str
    port: int | None = None

    def matches(self, host: str, port: int | None) -> bool:
        """Whether a request's host and port match this entry."""
        if self.port is not None and port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


@dataclass(frozen=True)
class AllowedHosts:
    """The ``Host`` allow-list."""

    patterns: tuple[HostPattern, ...]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> AllowedHosts | None:
        """The allow-list of ``modelreg.allowed_hosts``; ``None`` when any host is allowed.

        :raises RuntimeError: for an entry that is not a host pattern.
        """
        entries = str(settings.get(ALLOWED_HOSTS_SETTING) or "").split()
        if not entries or "*" in entries:
            return None
        patterns = []
        for entry in entries:
            match = _ENTRY.fullmatch(entry.lower())
            port = match.group("port") if match else None
            if match is None or (port is not None and not 0 < int(port) < 65536):
                raise RuntimeError(
                    f"{ALLOWED_HOSTS_SETTING}: {entry!r} is not a host name, '*.' and a "
                    "domain, or an address, optionally followed by ':port'"
                )
            patterns.append(HostPattern(match.group("host"),
                                        int(port) if port is not None else None))
        return cls(tuple(patterns))

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header (``None``: none sent) is served."""
        parsed = split_host(header) if header else None
        if parsed is None:
            return False
        return any(pattern.matches(*parsed) for pattern in self.patterns)


def http_tween_factory(
    handler: Callable[[Request], Response], registry: Registry
) -> Callable[[Request], Response]:
    """The tween that refuses hosts off the allow-list and marks every response nosniff."""
    hosts: AllowedHosts | None = registry.get(ALLOWED_HOSTS_KEY)

    def http_tween(request: Request) -> Response:
        header = request.environ.get("HTTP_HOST")
        if hosts is not None and not hosts.allows(header):
            shown = (header or "")[:200]
            response = error_response(request, BadRequest(
                f"this registry does not answer to the host {shown!r}" if header
                else "a Host header is required",
                code="invalid_host",
                details={"host": shown},
            ))
        else:
            response = handler(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return http_tween


def includeme(config: Configurator) -> None:
    """Read the allow-list (failing start-up on a bad entry) and install the tween."""
    config.registry[ALLOWED_HOSTS_KEY] = AllowedHosts.from_settings(config.get_settings())
    config.add_tween("modelreg.security.http.http_tween_factory", under=INGRESS)
