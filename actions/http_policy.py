"""Outgoing HTTP that never connects to a denied address (WORKFLOW_HTTP_DENY), checked after DNS and on every redirect.

A step names a URL; its host is resolved once, every address it resolves to
is checked against the deny list, and the connection goes to a checked
address (never a second lookup, so a DNS answer that changes between the
check and the connection cannot slip through). Redirects are followed by
requests through the same adapter, so each hop is checked the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from actions.text import shown_url

if TYPE_CHECKING:
    import requests

# Link-local (where cloud metadata services answer: 169.254.169.254) and the other metadata addresses.
DEFAULT_HTTP_DENY = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# "This host" (RFC 1122): Linux connects 0.0.0.0 and :: to the loopback interface.
_THIS_HOST = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
_LOOPBACK = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


class PolicyError(Exception):
    """A URL whose host resolves to an address WORKFLOW_HTTP_DENY refuses; nothing was sent to it.

    Not an OSError on purpose: urllib3 would wrap (and retry) it like a network error.
    """

    def __init__(self, host: str, address: str):
        super().__init__(host, address)
        self.host = host
        self.address = address
        self.url: str | None = None  # the request's URL (a redirect's hop), set by the adapter

    def __str__(self) -> str:
        return f"{shown_url(self.url) if self.url else self.host} resolves to {self.address}, " \
               f"which WORKFLOW_HTTP_DENY refuses"


def networks(deny: Iterable[str] | str | None) -> tuple[Network, ...]:
    """The deny list as networks: a tuple of CIDR strings or one comma-separated text; None is the default."""
    if deny is None:
        deny = DEFAULT_HTTP_DENY
    if isinstance(deny, str):
        return _parsed(deny)
    items = tuple(deny)
    if all(type(item) is str for item in items):  # a str subclass may hash alike and print otherwise
        return _parsed(items)
    return _parse(items)


# Every request asks for the settings' list: parsed once per list, not 40 µs of CPU per request.
@lru_cache(maxsize=64)
def _parsed(deny: tuple[str, ...] | str) -> tuple[Network, ...]:
    return _parse(deny)


def _parse(deny: Iterable[Any] | str) -> tuple[Network, ...]:
    if isinstance(deny, str):
        deny = [part for part in deny.split(",") if part.strip()]
    return tuple(ipaddress.ip_network(str(item).strip(), strict=False) for item in deny)


def denied(address: str, deny: tuple[Network, ...]) -> bool:
    """True when ``address`` (IPv4-mapped IPv6 included, zone index ignored) is in one of ``deny``.

    The unspecified addresses (``0.0.0.0``, ``0``, ``::``) connect to this host, so they count as
    loopback: a list that refuses 127.0.0.0/8 refuses them too.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    if any(candidate in network for candidate in candidates for network in _THIS_HOST):
        candidates += _LOOPBACK
    return any(candidate in network for candidate in candidates for network in deny
               if candidate.version == network.version)


def session(settings: Mapping[str, Any] | None = None) -> requests.Session:
    """A requests Session that refuses addresses in the settings' WORKFLOW_HTTP_DENY (its default when unset).

    Through a proxy from the environment (HTTP_PROXY, HTTPS_PROXY) the check
    applies to nothing behind the proxy: that proxy decides where it connects.
    """
    # requests is imported by the first request, not by whatever imports this module (app/config.py does).
    from actions.http_guard import guarded_session

    return guarded_session(networks((settings or {}).get("WORKFLOW_HTTP_DENY")))
