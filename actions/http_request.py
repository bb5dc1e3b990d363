"""The http_request action: call an HTTP API and return its answer."""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from actions.base import ActionError, BaseAction, seconds, whole_number
from actions.http_errors import describe
from actions.http_policy import PolicyError, session
from actions.jsontext import load_json
from actions.limits import capped
from actions.redaction import redact
from actions.text import shown_url

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

# The answer goes into the run record; a bigger one belongs in a file, not in JSON.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Statuses that say "try again later" although they are 4xx.
_RETRY_4XX = (408, 425, 429)
_TEXT_TYPES = re.compile(r"^(text/.*|application/(.*\+)?(json|xml)|application/(javascript|x-www-form-urlencoded|"
                         r"x-ndjson|yaml|x-yaml)|image/svg\+xml)$")


# The methods a definition may name (a template may choose one per run).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class HttpRequestAction(BaseAction):
    """Sends one HTTP request; an unexpected status fails the step (5xx, 408 and 429 are retried, other 4xx not).

    ``json`` sends a JSON body, ``data`` a form (a mapping) or a raw text body.
    The result has ``status_code``, ``headers``, ``json`` (the parsed body when
    it is JSON, else null), ``text`` (null for a binary body, which comes as
    ``body_base64`` instead) and ``elapsed_ms``. Redirects are followed; a host
    or redirect that resolves to an address in WORKFLOW_HTTP_DENY fails the step
    before anything is sent (actions/http_policy.py).
    """

    type = "http_request"
    result_keys = ("status_code", "headers", "json", "text", "elapsed_ms", "body_base64")  # the last: binary only
    config_choices = {"method": METHODS}
    # Methods that RFC 9110 defines as idempotent: repeating them after a crash is harmless.
    IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

    def __init__(
        self,
        name: str,
        *,
        url: str,
        method: str = "GET",
        headers: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | str | None = None,
        timeout: float | str = 30,
        expect_status: list[int | str] | int | str | None = None,
        **options: Any,
    ):
        super().__init__(name, **options)
        if json is not None and data is not None:
            raise ValueError(f"action {name!r}: give json or data, not both")
        self.url = url
        self.method = method
        # A POST interrupted by a crash is not sent again (it fails with "interrupted by restart");
        # a method chosen by a template is treated the same way, since it is unknown until the run.
        self.idempotent = isinstance(method, str) and method.strip().upper() in self.IDEMPOTENT_METHODS
        self.headers = headers
        self.params = params
        self.json = json
        self.data = data
        # The request's own timeout; the engine's step timeout is BaseAction.step_timeout.
        self.timeout = timeout
        self.expect_status = expect_status

    def execute(self, data_store: dict) -> dict:
        """Send the request; returns the response as data."""
        import requests  # here, not at the top: listing or starting workflows does not need it

        url = _check_url(self.url)
        method = _check_method(self.method)
        timeout = capped(seconds(self.timeout, "timeout", "http_request"), "WORKFLOW_MAX_STEP_TIMEOUT",
                         self.context.settings, "http_request: timeout")
        expected = _statuses(self.expect_status)
        for field in ("headers", "params"):
            if getattr(self, field) is not None and not isinstance(getattr(self, field), Mapping):
                raise ActionError(f"http_request: {field} must be a mapping, got {getattr(self, field)!r}",
                                  retryable=False)
        if self.data is not None and not isinstance(self.data, (str, bytes, Mapping)):
            raise ActionError(f"http_request: data must be a mapping (a form) or text, got {self.data!r}",
                              retryable=False)
        headers = {str(key): str(value) for key, value in (self.headers or {}).items()}
        # http.client would encode a text body as Latin-1 and fail on anything else.
        data = self.data.encode("utf-8") if isinstance(self.data, str) else self.data
        shown = f"{method} {shown_url(url)}"

        started = time.perf_counter()
        try:
            with session(self.context.settings) as guarded, guarded.request(
                method, url, headers=headers, params=self.params, json=self.json, data=data, timeout=timeout,
                stream=True,
            ) as response:
                content = _read(response, shown)
        except PolicyError as error:
            raise ActionError(f"http_request: {error}", retryable=False) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidHeader) as error:
            raise ActionError(f"http_request: {shown}: {error}", retryable=False)
        except requests.RequestException as error:
            message, retryable = describe(error, url, timeout)
            logger.debug("http_request %s: %s failed", self.name, shown, exc_info=True)
            raise ActionError(f"http_request: {shown}: {message}", retryable=retryable) from None
        elapsed_ms = round((time.perf_counter() - started) * 1000)

        status = response.status_code
        if not (status in expected if expected else 200 <= status < 300):
            snippet = " ".join(content[:300].decode("utf-8", "replace").split())[:200]
            raise ActionError(
                f"http_request: {shown} answered {status} {response.reason or ''}".rstrip()
                + (f": {snippet}" if snippet else ""),
                retryable=status >= 500 or status in _RETRY_4XX,
            )
        parsed, text, encoded = _body(content, response.headers.get("Content-Type", ""))
        if parsed is not None and redact(parsed) is not parsed:
            # The run record shows ``json`` with its secrets as "***": the raw text beside it must not show them.
            text = jsonlib.dumps(redact(parsed), ensure_ascii=False)
        logger.info("http_request %s: %s -> %d in %d ms", self.name, shown, status, elapsed_ms)
        result = {
            "status_code": status,
            "headers": dict(response.headers),
            "json": parsed,
            "text": text,
            "elapsed_ms": elapsed_ms,
        }
        if encoded is not None:
            result["body_base64"] = encoded
        return result


def _check_url(url: Any) -> str:
    """The URL stripped; ActionError unless it is http(s) with a host."""
    text = str(url or "").strip()
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range or not a number
        valid = False
    if not valid:
        raise ActionError(f"http_request: url must be an http:// or https:// URL, got {shown_url(text)!r}",
                          retryable=False)
    return text


def _check_method(method: Any) -> str:
    text = str(method or "GET").strip().upper()
    if text not in METHODS:
        raise ActionError(f"http_request: method must be one of {', '.join(METHODS)}, got {method!r}",
                          retryable=False)
    return text


def _statuses(value: Any) -> set[int]:
    """The accepted statuses: a list, one status or "200,201"; empty means any 2xx."""
    if value is None or value == "" or value == []:
        return set()
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    statuses = set()
    for item in items:
        status = whole_number(item)
        if status is None or not 100 <= status <= 599:
            raise ActionError(f"http_request: expect_status must list HTTP status codes, got {value!r}",
                              retryable=False)
        statuses.add(status)
    return statuses


def _read(response: requests.Response, shown: str) -> bytes:
    """The whole body, refusing one over MAX_BODY_BYTES before it fills the memory."""
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ActionError(f"http_request: {shown}: response body over {MAX_BODY_BYTES // 2**20} MB",
                              retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _body(content: bytes, content_type: str) -> tuple[Any, str | None, str | None]:
    """(parsed JSON or None, text or None, base64 or None) of a response body."""
    mime, _, rest = content_type.partition(";")
    mime = mime.strip().lower()
    charset = re.search(r"charset\s*=\s*\"?([\w.:-]+)", rest, re.IGNORECASE)
    text = None
    if mime and not _TEXT_TYPES.match(mime) and not charset:
        pass  # a declared binary type (image/png, application/pdf, octet-stream)
    elif charset:
        try:
            text = content.decode(charset.group(1), "replace")
        except LookupError:  # an unknown charset name
            text = content.decode("utf-8", "replace")
    elif mime:
        text = content.decode("utf-8", "replace")
    else:
        try:  # no Content-Type: text only if it decodes
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if text is None:
        return None, None, base64.b64encode(content).decode("ascii")
    parsed = None
    if mime == "application/json" or mime.endswith("+json"):
        try:
            parsed = load_json(text)  # bounded: a server's JSON 100,000 levels deep must not break the run
        except ValueError:
            pass  # a server that says JSON and sends something else (or too deep, NaN): the text is still there
    return parsed, text, None
