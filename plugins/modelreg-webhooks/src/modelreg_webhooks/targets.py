"""Which URLs a subscription may target, and where to connect for them.

Only ``http`` and ``https`` URLs are accepted.  Unless ``modelreg.webhooks.allow_private``
is set, a host that resolves to a loopback, private, link-local, site-local, multicast,
reserved or unspecified address is refused, and so is an IPv6 address that embeds such an
IPv4 address (IPv4-mapped ``::ffff:0:0/96``, IPv4-compatible ``::/96``, NAT64
``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32``), when the subscription is
written and again at every delivery (the connection goes to the address that was checked, so
a DNS answer that changes between the check and the connection cannot redirect it).
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


_V6 = ipaddress.IPv6Network
#: IPv6 ranges refused whatever Python's ``is_global`` says of them (it differs between
#: Python releases): site-local (deprecated by RFC 3879, still routed inside some networks)
#: and the local-use NAT64 prefix (RFC 8215).
_REFUSED_V6 = (_V6("fec0::/10"), _V6("64:ff9b:1::/48"))
#: IPv6 ranges that stand for the IPv4 address in their last 32 bits, which decides alone:
#: IPv4-mapped, IPv4-translated (RFC 2765) and well-known NAT64 (RFC 6052, what DNS64 gives
#: for an IPv4-only host).
_TRANSLATED = (_V6("::ffff:0:0/96"), _V6("::ffff:0:0:0/96"), _V6("64:ff9b::/96"))
#: IPv4-compatible addresses (RFC 4291, deprecated): the last 32 bits too.
_LAST_32_BITS = (*_TRANSLATED, _V6("::/96"))
_6TO4 = _V6("2002::/16")  # RFC 3056: bits 16 to 48 are the IPv4 address
_TEREDO = _V6("2001::/32")  # RFC 4380: the server's IPv4, and the client's (inverted)


def _embedded(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and reaches through a gateway)."""
    value = int(address)
    found = []
    if any(address in network for network in _LAST_32_BITS):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _6TO4:
        found.append(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    if address in _TEREDO:
        found.append(ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF))
        found.append(ipaddress.IPv4Address(~value & 0xFFFFFFFF))
    return found


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` (or an IPv4 address it embeds) is not a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _REFUSED_V6):
            return True
        if any(_refused(embedded) for embedded in _embedded(address)):
            return True
        if any(address in network for network in _TRANSLATED):
            return False  # a public IPv4 address, written the IPv6 way
    return (address.is_loopback or address.is_private or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified
            or getattr(address, "is_site_local", False) or not address.is_global)


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
