"""Which URLs a subscription may target, and where to connect for them.

Only ``http`` and ``https`` URLs are accepted.  Unless ``modelreg.webhooks.allow_private``
is set, a host that resolves to a loopback, private, link-local, multicast, reserved or
unspecified address is refused, when the subscription is written and again at every
delivery (the connection goes to the address that was checked, so a DNS answer that
changes between the check and the connection cannot redirect it).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TargetRefused(ValueError):
    """The URL is malformed, or its host is on a refused address range."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for.

    :ivar scheme: ``http`` or ``https``.
    :ivar host: the host name (for ``Host`` and TLS server name).
    :ivar port: the TCP port.
    :ivar address: the checked IP address to connect to.
    :ivar path: path and query of the request.
    """

    scheme: str
    host: str
    port: int
    address: str
    path: str


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_private or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified
            or not address.is_global)


def parse(url: str) -> tuple[str, str, int, str]:
    """Split ``url`` into scheme, host, port and path; :class:`TargetRefused` if unusable."""
    if not isinstance(url, str) or len(url) > 2000:
        raise TargetRefused("the URL must be a string of at most 2000 characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"the URL cannot be parsed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("only http and https URLs can be webhook targets")
    if not parts.hostname:
        raise TargetRefused("the URL names no host")
    if parts.username or parts.password:
        raise TargetRefused("the URL must not carry credentials; use the secret")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def resolve(url: str, allow_private: bool) -> Target:
    """Check ``url`` and resolve its host to an address that may be contacted.

    :raises TargetRefused: for a URL that is not http(s), a host that does not resolve, or
        (unless ``allow_private``) one that resolves to any refused address.
    """
    scheme, host, port, path = parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if _refused(ipaddress.ip_address(address.split("%")[0])):
                raise TargetRefused(
                    f"the host {host!r} resolves to {address}, a loopback, private, "
                    "link-local or reserved address; set modelreg.webhooks.allow_private "
                    "= true to allow it")
    return Target(scheme, host, port, addresses[0], path)
