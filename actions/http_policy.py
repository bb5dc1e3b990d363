"""Outgoing HTTP that never connects to a denied address (WORKFLOW_HTTP_DENY), checked after DNS and on every redirect.

A step names a URL; its host is resolved once, every address it resolves to
is checked against the deny list, and the connection goes to a checked
address (never a second lookup, so a DNS answer that changes between the
check and the connection cannot slip through). Redirects are followed by
requests through the same adapter, so each hop is checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

# Link-local (where cloud metadata services answer: 169.254.169.254) and the other metadata addresses.
DEFAULT_HTTP_DENY = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        return f"{_shown(self.url) if self.url else self.host} resolves to {self.address}, " \
               f"which WORKFLOW_HTTP_DENY refuses"


def _shown(url: str) -> str:
    """The URL for messages: no user:password, query or fragment, which may hold secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


def networks(deny: Iterable[str] | str | None) -> tuple[Network, ...]:
    """The deny list as networks: a tuple of CIDR strings or one comma-separated text; None is the default."""
    if deny is None:
        deny = DEFAULT_HTTP_DENY
    if isinstance(deny, str):
        deny = [part for part in deny.split(",") if part.strip()]
    return tuple(ipaddress.ip_network(str(item).strip(), strict=False) for item in deny)


def denied(address: str, deny: tuple[Network, ...]) -> bool:
    """True when ``address`` (IPv4-mapped IPv6 included, zone index ignored) is in one of ``deny``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in deny
               if candidate.version == network.version)


class _GuardedConnection:
    """Resolves the host itself, refuses a denied address, and connects to the addresses it checked."""

    deny: tuple[Network, ...] = ()

    def _new_conn(self) -> socket.socket:
        host = self._dns_host  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, self.port, allowed_gai_family(), socket.SOCK_STREAM)  # type: ignore[attr-defined]
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error  # type: ignore[attr-defined,arg-type]
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if denied(address, self.deny):
                raise PolicyError(self.host, address)  # type: ignore[attr-defined]
        last: Exception | None = None
        for address in addresses:
            # A literal address: urllib3 connects to it without another lookup; TLS still checks the name.
            self._dns_host = address
            try:
                return super()._new_conn()  # type: ignore[misc]
            except NewConnectionError as error:
                last = error
            finally:
                self._dns_host = host
        raise last or NewConnectionError(self, f"Failed to establish a new connection: {host} has no address")  # type: ignore[arg-type]


class _GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools make guarded connections; a refusal names the request's URL."""

    def __init__(self, deny: tuple[Network, ...]):
        self._deny = deny
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._deny)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS managers bring connection classes of their own
            manager.pool_classes_by_scheme = _pool_classes(self._deny)  # the proxy's address is checked
        return manager

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().send(request, *args, **kwargs)
        except PolicyError as error:
            error.url = request.url
            raise


@lru_cache(maxsize=32)
def _pool_classes(deny: tuple[Network, ...]) -> dict[str, type]:
    """Connection pool classes whose connections check ``deny`` (one set per deny list)."""
    http = type("GuardedHTTPConnection", (_GuardedConnection, HTTPConnection), {"deny": deny})
    https = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), {"deny": deny})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }


def session(settings: Mapping[str, Any] | None = None) -> requests.Session:
    """A requests Session that refuses addresses in the settings' WORKFLOW_HTTP_DENY (its default when unset).

    Through a proxy from the environment (HTTP_PROXY, HTTPS_PROXY) the check
    applies to nothing behind the proxy: that proxy decides where it connects.
    """
    deny = networks((settings or {}).get("WORKFLOW_HTTP_DENY"))
    guarded = requests.Session()
    adapter = _GuardedAdapter(deny)
    guarded.mount("http://", adapter)
    guarded.mount("https://", adapter)
    return guarded
