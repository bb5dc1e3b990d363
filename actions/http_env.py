"""requests' proxies from the environment, worked out once per environment and host instead of on every request.

For every request requests asks urllib twice for the ``*_proxy`` variables, and urllib walks the whole of
``os.environ`` each time (decoding every name and value): 170 µs of the 1.3 ms of CPU a loopback request
cost, with 35 variables set. What requests gets back depends only on the environment and on the URL's host and
port, so the answer is kept per host and port, and forgotten as soon as anything in ``os.environ`` changes (one
dict comparison per request). The answer is requests' own: this module only decides when to ask again.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from typing import Any
from urllib.parse import urlparse

import requests.sessions
import requests.utils

# Distinct host:port pairs kept per environment; past it, the answers start over (a bound, not an eviction policy).
MAX_HOSTS = 1024

_lock = threading.Lock()
# (a copy of os.environ's data the answers were worked out with, {(host, port): requests' answer}).
_known: tuple[dict[Any, Any] | None, dict[tuple[str | None, int | None], dict[str, str]]] = (None, {})


def environ_proxies(url: str, no_proxy: str | None) -> dict[str, str]:
    """What ``requests.utils.get_environ_proxies(url, no_proxy)`` answers, asked once per environment and host:port.

    Asked afresh every time when ``no_proxy`` is given (requests then edits ``os.environ`` to answer), when the
    environment is not a plain ``os.environ``, and where urllib reads proxies from the system, not the
    environment (macOS, Windows).
    """
    data = getattr(os.environ, "_data", None)
    if no_proxy is not None or not isinstance(data, dict) or not _from_environment_only():
        return requests.sessions.get_environ_proxies(url, no_proxy=no_proxy)
    parsed = urlparse(url)
    try:
        key = (parsed.hostname, parsed.port)  # all of the URL that requests' answer depends on
    except ValueError:  # a port that is not one: requests reads it only with a NO_PROXY list, so let it decide
        return requests.sessions.get_environ_proxies(url, no_proxy=None)
    snapshot, answers = _known
    if snapshot == data:
        answer = answers.get(key)
        if answer is not None:
            return dict(answer)  # a copy: the caller may add to it, the next caller must not see that
    else:
        snapshot = dict(data)
    answer = requests.sessions.get_environ_proxies(url, no_proxy=None)
    _remember(snapshot, key, answer, data)
    return dict(answer)


def _remember(snapshot: dict[Any, Any], key: tuple[str | None, int | None], answer: dict[str, str],
              data: dict[Any, Any]) -> None:
    """Keep ``answer`` for ``key`` unless the environment changed while requests read it."""
    global _known
    with _lock:
        if data != snapshot:
            return
        known, answers = _known
        if known != snapshot or len(answers) >= MAX_HOSTS:
            answers = {}
        answers = {**answers, key: dict(answer)}  # a new dict: readers hold the old one without a lock
        _known = (snapshot, answers)


def _from_environment_only() -> bool:
    """True where requests' proxies come from environment variables alone (urllib's choice on Linux and BSDs)."""
    return (requests.utils.getproxies is urllib.request.getproxies_environment
            and requests.utils.proxy_bypass is urllib.request.proxy_bypass_environment)
