"""The http_check action: an uptime probe of one URL."""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from actions.base import ActionError, BaseAction

logger = logging.getLogger(__name__)


class HttpCheckAction(BaseAction):
    """Requests ``url`` once and reports whether it answered ``expected_status`` within ``max_latency_ms``.

    An unreachable site is a result (``"ok": false`` with an ``error``), not a
    step failure, so the workflow can go on to alert about it. Redirects are
    followed; latency covers the whole exchange, body included.
    """

    type = "http_check"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        expected_status: int | str = 200,
        max_latency_ms: float | str = 2000,
        request_timeout: float | str = 10,
        method: str = "GET",
        **options: Any,
    ):
        super().__init__(name, **options)
        self.url = url
        self.expected_status = expected_status
        self.max_latency_ms = max_latency_ms
        # The request's own limit; BaseAction.step_timeout is the engine's.
        self.request_timeout = request_timeout
        self.method = method
        # Fail at definition time for values that are not templates to render later.
        try:
            if not _is_template(url):
                _check_url(url)
            for field in ("expected_status", "max_latency_ms", "request_timeout"):
                if not _is_template(getattr(self, field)):
                    self._number(field, getattr(self, field))
            if not _is_template(method):
                _check_method(method)
        except ActionError as error:
            raise ValueError(f"action {name!r}: {error}") from None

    def execute(self, data_store: dict) -> dict:
        """Probe the URL; returns ``{"url", "status_code", "latency_ms", "ok", "error"}``."""
        url = str(self.url).strip()
        _check_url(url)
        expected = self._number("expected_status", self.expected_status)
        limit = self._number("max_latency_ms", self.max_latency_ms)
        timeout = self._number("request_timeout", self.request_timeout)
        method = _check_method(self.method)

        status_code = None
        started = time.perf_counter()
        try:
            with requests.Session() as session:
                response = session.request(method, url, timeout=timeout, allow_redirects=True)
                status_code = response.status_code
                response.close()
            error = None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise ActionError(f"http_check: invalid url {url!r}: {exc}", retryable=False)
        except requests.RequestException as exc:
            error = _describe_request_error(exc, url, timeout)
        latency_ms = round((time.perf_counter() - started) * 1000)

        if error is None and status_code != expected:
            error = f"expected status {expected}, got {status_code}"
        elif error is None and latency_ms > limit:
            error = f"latency {latency_ms} ms over the {limit:g} ms limit"
        result = {
            "url": url,
            "status_code": status_code,
            "latency_ms": latency_ms,
            "ok": error is None,
            "error": error,
        }
        logger.info("http_check %s: %s %s", self.name, url, "ok" if error is None else error)
        return result

    @staticmethod
    def _number(field: str, value: Any) -> float:
        """Coerce a configured number, which templates may have rendered as a string."""
        try:
            number = float(str(value).strip())
        except ValueError:
            number = float("nan")
        if field == "expected_status":
            if not (number.is_integer() and 100 <= number <= 599):
                raise ActionError(f"http_check: {field} must be an HTTP status code, got {value!r}", retryable=False)
            return int(number)
        # "not >" also refuses NaN.
        if not number > 0:
            raise ActionError(f"http_check: {field} must be a number > 0, got {value!r}", retryable=False)
        return number


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{" in value


def _check_url(url: Any) -> None:
    """ActionError unless ``url`` is an http:// or https:// URL with a host and a valid port."""
    try:
        parts = urlsplit(url.strip()) if isinstance(url, str) else None
        # .port raises ValueError for a port out of range or not a number.
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ActionError(f"http_check: url must be an http:// or https:// URL, got {url!r}", retryable=False)


def _check_method(method: Any) -> str:
    """The HTTP method upper-cased; ActionError unless it is a plain token such as GET or HEAD."""
    text = str(method or "GET").strip().upper()
    if not re.fullmatch(r"[A-Z]+", text):
        raise ActionError(f"http_check: method must be an HTTP method such as GET, got {method!r}", retryable=False)
    return text


def _where(url: str) -> str:
    """``host:port`` of a URL, with the scheme's default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: urllib3 keeps the socket error in ``reason``, requests in ``args[0]``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = current.args[0] if current.args else None
        candidates = (getattr(current, "reason", None), current.__cause__, current.__context__, wrapped)
        current = next((item for item in candidates if isinstance(item, BaseException)), None)


def _describe_request_error(error: requests.RequestException, url: str, timeout: float) -> str:
    """One line naming host:port and why no answer came."""
    # After a redirect, the failing request is not the one to ``url``.
    url = getattr(error.request, "url", None) or url
    where = _where(url)
    if isinstance(error, requests.ConnectTimeout):
        return f"connection to {where} timed out after {timeout:g} s"
    if isinstance(error, requests.Timeout):
        return f"no response from {where} within {timeout:g} s"
    if isinstance(error, requests.TooManyRedirects):
        return f"too many redirects from {url}"
    for cause in _causes(error):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection to {where} refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {urlsplit(url).hostname} ({cause.strerror})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate of {where} not trusted: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {where} failed: {cause.reason or cause}"
        if isinstance(cause, ConnectionResetError):
            return f"connection to {where} reset"
    # Keep the line short; the traceback goes to the log.
    logger.debug("http_check: request to %s failed", url, exc_info=error)
    return f"request to {where} failed: {' '.join(str(error).split())[:200]}"
