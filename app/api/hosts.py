"""Trusted Host names: the server answers only the names it is reached by, which closes DNS rebinding.

A page on ``rebind.evil.example`` whose DNS name is switched to 127.0.0.1
makes the visitor's browser talk to a local PyFlow as if it were the same site
(so Origin checks pass), but the browser still sends ``Host:
rebind.evil.example``. Refusing unknown Host names refuses those requests.

Werkzeug's own ``TRUSTED_HOSTS`` check would do, but it cannot match a
bracketed IPv6 name (``[::1]`` is cut at its first colon) and compares case
sensitively, so ``http://[::1]:5001`` would be refused by the default list.
This module applies the same rules (an entry with a leading dot also accepts
every subdomain; ports are ignored) to a parsed, lower-cased host.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from app.errors import ConfigError, error_body

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


# What a Host header may be (werkzeug's own pattern): a name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(r"([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::([1-9][0-9]{0,4}))?", re.ASCII | re.IGNORECASE)


def _bare(name: str) -> str:
    """A host name without port or IPv6 brackets, lower-cased; "" when it is not a valid Host value."""
    name = name.strip()
    if name.count(":") > 1 and not name.startswith("["):
        name = f"[{name}]"  # a bare IPv6 address written in a setting, like ::1
    match = _HOST.fullmatch(name)
    if match is None or (match.group(2) and int(match.group(2)) > 65535):
        return ""
    return match.group(1).strip("[]").lower().rstrip(".")


def is_loopback(host: str) -> bool:
    """True for a name or address only this machine reaches (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name resolves to whatever DNS says: not assumed local


def trusted_hosts(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """WORKFLOW_TRUSTED_HOSTS, bare and lower-cased; by default the loopback names and HOST.

    ConfigError names an entry of WORKFLOW_TRUSTED_HOSTS that is not a host name.
    """
    configured = tuple(settings.get("WORKFLOW_TRUSTED_HOSTS") or ())
    names = []
    for entry in configured:
        dot = "." if entry.strip().startswith(".") else ""
        bare = _bare(entry.strip().removeprefix("."))
        if not bare:
            raise ConfigError(f"setting WORKFLOW_TRUSTED_HOSTS: {entry!r} is not a host name; write names such as "
                              f"pyflow.example.org, 192.0.2.7 or .example.org (a domain and its subdomains), "
                              f"without scheme or path")
        names.append(dot + bare)
    if not configured:
        host = _bare(str(settings.get("HOST") or ""))
        names = [*LOOPBACK_NAMES, *([host] if host else [])]
    return tuple(dict.fromkeys(names))


def host_is_trusted(host_header: str, trusted: Iterable[str]) -> bool:
    """True when the Host header's name is one of ``trusted`` (".example.org" also matches subdomains)."""
    host = _bare(host_header)
    if not host:
        return False
    for entry in trusted:
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def check_host() -> Response | tuple[Response | str, int, dict] | None:
    """The first before_request hook: 400 for a Host name not in the trusted list (JSON under /api)."""
    header = request.environ.get("HTTP_HOST")
    if header is None:
        return None  # HTTP/1.0 without Host: not a browser, so not a rebinding attack
    if host_is_trusted(header, current_app.extensions["pyflow_trusted_hosts"]):
        return None
    shown = header if len(header) <= 100 else header[:100] + "..."
    message = f"host {shown!r} is not one this server answers to; if it is yours, add it to WORKFLOW_TRUSTED_HOSTS"
    if request.path.startswith("/api"):
        return jsonify(error_body(400, "untrusted_host", message)), 400, {}
    # Plain text, not a dashboard page: no template, no session, nothing a rebinding page could read.
    return message + "\n", 400, {"Content-Type": "text/plain; charset=utf-8",
                                  "X-Content-Type-Options": "nosniff"}


def init_app(app: Flask) -> None:
    """Check every request's Host before anything else looks at the request."""
    app.extensions["pyflow_trusted_hosts"] = trusted_hosts(app.config)
    host = str(app.config.get("HOST") or "")
    if not app.config.get("WORKFLOW_TRUSTED_HOSTS") and not is_loopback(host):
        # Serving on 0.0.0.0 or a LAN address, but only loopback names (and HOST) are answered.
        logger.warning("HOST is %s but WORKFLOW_TRUSTED_HOSTS is not set: requests are answered only for the "
                       "Host names %s; set WORKFLOW_TRUSTED_HOSTS to the names clients use",
                       host, ", ".join(app.extensions["pyflow_trusted_hosts"]))
    # First of all hooks, whoever registered theirs earlier: no other hook may act for an untrusted host.
    app.before_request_funcs.setdefault(None, []).insert(0, check_host)
