"""What HTTP actions share to name a failed request: host:port and the underlying cause."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests


def host_port(url: str) -> str:
    """``host:port`` of a URL, with the scheme's default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: urllib3 keeps the socket error in ``reason``, requests in ``args[0]``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = current.args[0] if current.args else None
        candidates = (getattr(current, "reason", None), current.__cause__, current.__context__, wrapped)
        current = next((item for item in candidates if isinstance(item, BaseException)), None)


def describe(error: requests.RequestException, url: str, timeout: float) -> tuple[str, bool]:
    """One line naming host:port and why no answer came, and whether another attempt may help."""
    import requests

    # After a redirect, the failing request is not the one to ``url``.
    url = getattr(error.request, "url", None) or url
    where = host_port(url)
    if isinstance(error, requests.ConnectTimeout):
        return f"connection to {where} timed out after {timeout:g} s", True
    if isinstance(error, requests.Timeout):
        return f"no response from {where} within {timeout:g} s", True
    if isinstance(error, requests.TooManyRedirects):
        return f"too many redirects from {where}", False
    for cause in causes(error):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection to {where} refused", True
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {urlsplit(url).hostname} ({cause.strerror})", True
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate of {where} not trusted: {cause.verify_message or cause.reason}", False
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {where} failed: {cause.reason or cause}", False
        if isinstance(cause, ConnectionResetError):
            return f"connection to {where} reset", True
    return f"request to {where} failed ({type(error).__name__})", True
