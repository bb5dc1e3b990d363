"""The http_check action: an uptime probe of one URL."""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

from actions.base import ActionError, BaseAction, SettingError
from actions.http_errors import describe
from actions.http_policy import PolicyError, session
from actions.limits import capped

logger = logging.getLogger(__name__)


class HttpCheckAction(BaseAction):
    """Requests ``url`` once and reports whether it answered ``expected_status`` within ``max_latency_ms``.

    An unreachable site is a result (``"ok": false`` with an ``error``), not a
    step failure, so the workflow can go on to alert about it. Redirects are
    followed; latency covers the whole exchange, body included. An address in
    WORKFLOW_HTTP_DENY (after DNS, on every redirect) fails the step instead.
    """

    type = "http_check"
    result_keys = ("url", "status_code", "latency_ms", "ok", "error")

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
        # Fail at definition time for values that are not templates to render later, naming the field.
        for field in ("url", "expected_status", "max_latency_ms", "request_timeout", "method"):
            value = getattr(self, field)
            if _is_template(value):
                continue
            try:
                if field == "url":
                    _check_url(value)
                elif field == "method":
                    _check_method(value)
                else:
                    self._number(field, value)
            except ActionError as error:
                raise SettingError(field, f"action {name!r}: {error}") from None

    def execute(self, data_store: dict) -> dict:
        """Probe the URL; returns ``{"url", "status_code", "latency_ms", "ok", "error"}``."""
        import requests  # here, not at the top: listing or starting workflows does not need it

        url = str(self.url).strip()
        _check_url(url)
        expected = self._number("expected_status", self.expected_status)
        limit = self._number("max_latency_ms", self.max_latency_ms)
        timeout = self._number("request_timeout", self.request_timeout)
        capped(timeout, "WORKFLOW_MAX_STEP_TIMEOUT", self.context.settings, "http_check: request_timeout")
        method = _check_method(self.method)

        status_code = None
        started = time.perf_counter()
        try:
            with session(self.context.settings) as guarded:
                # stream: the status is all a check needs; the body (any size, or endless) is never read.
                response = guarded.request(method, url, timeout=timeout, allow_redirects=True, stream=True)
                status_code = response.status_code
                response.close()
            error = None
        except PolicyError as exc:
            raise ActionError(f"http_check: {exc}", retryable=False) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise ActionError(f"http_check: invalid url {url!r}: {exc}", retryable=False)
        except requests.RequestException as exc:
            error = describe(exc, url, timeout)[0]
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
