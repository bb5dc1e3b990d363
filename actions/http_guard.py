"""The requests Session behind actions/http_policy.py's ``session()``: connections that check the deny list.

Kept apart from the policy so that importing the policy (the settings do) does not import requests.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from actions.http_env import environ_proxies
from actions.http_policy import Network, PolicyError, denied
from actions.redaction import is_secret_key


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
        # A pool serves one session, which holds one connection at a time (a redirect's is closed before the
        # next hop): room for ten made and emptied ten queue slots per request for nothing.
        super().__init__(pool_maxsize=1)

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


class _GuardedSession(requests.Session):
    """A Session that keeps credentials with their host and leaves redirect bodies unread.

    requests drops ``Authorization`` when a redirect leaves the host; ``X-Api-Key``, ``Private-Token``
    and the like it would carry to whatever host the first one names.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hooks["response"].append(_unread_redirect_body)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in [name for name in prepared_request.headers if is_secret_key(name)]:
                del prepared_request.headers[name]
        super().rebuild_auth(prepared_request, response)

    def merge_environment_settings(self, url: str, proxies: dict[str, str] | None, stream: bool | None,
                                   verify: Any, cert: Any) -> dict[str, Any]:
        """requests' Session.merge_environment_settings, with the environment's proxies asked once per environment.

        Only the lookup of the environment's proxies differs (actions/http_env.py); tests/test_http_env.py
        compares the two for proxy, NO_PROXY and CA bundle variables.
        """
        if self.trust_env:
            no_proxy = proxies.get("no_proxy") if proxies is not None else None
            env_proxies = environ_proxies(url, no_proxy)
            if proxies is not None:
                for key, value in env_proxies.items():
                    proxies.setdefault(key, value)
            if verify is True or verify is None:
                verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
        return {
            "proxies": _merged(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


def _merged(request_setting: Any, session_setting: Any) -> Any:
    """requests' ``merge_setting`` of two plain dicts, without its two typing-Protocol checks (slow on Python 3.11)."""
    if type(request_setting) is not dict or type(session_setting) is not dict:
        return merge_setting(request_setting, session_setting)
    merged = OrderedDict(session_setting)
    merged.update(request_setting)
    for key in [key for key, value in merged.items() if value is None]:
        del merged[key]
    return merged


def _unread_redirect_body(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """A redirect's body, left unread: requests reads it whole to reuse the connection, whatever its size."""
    if response.is_redirect:
        response._content = b""  # what requests would have read
        response.close()  # the connection goes, its body unread (also when too many redirects end it here)
    return response


def guarded_session(deny: tuple[Network, ...]) -> requests.Session:
    """A requests Session whose connections, the proxy's included, refuse the addresses in ``deny``.

    A redirect to another host (or scheme, or port) carries no header whose name is secret by the key rule,
    and a redirect's body is never read.
    """
    guarded = _GuardedSession()
    adapter = _GuardedAdapter(deny)
    guarded.mount("http://", adapter)
    guarded.mount("https://", adapter)
    return guarded
