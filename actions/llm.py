"""The llm action: one chat completion from any OpenAI-compatible server (OpenAI, llama.cpp's server, Ollama, vLLM)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from actions.base import ActionError, BaseAction, SettingError, seconds, whole_number
from actions.http_errors import describe, host_port
from actions.http_policy import PolicyError, session
from actions.jsontext import load_json
from actions.limits import capped
from actions.text import shown_url

logger = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json_schema", "json_object", "none")
# An answer bigger than this is not a chat completion: refused before it fills the memory.
MAX_ANSWER_BYTES = 10 * 1024 * 1024
# Validation errors named in a retry and in the step's error; a reply can break a schema in a thousand places.
MAX_PROBLEMS = 10
# Statuses that say "try again later" although they are 4xx.
_RETRY_4XX = (408, 409, 425, 429)
# Models often wrap JSON in a Markdown fence although asked not to.
_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class LlmAction(BaseAction):
    """Asks a chat model ``prompt`` (after ``system``) and returns its answer.

    With ``output_schema`` the model is asked for JSON matching that JSON
    Schema; a reply that is not such JSON is sent back with the problems, up to
    ``schema_retries`` times, then fails the step naming them. 429, 5xx, timeouts
    and refused connections fail the attempt as retryable: the step's
    ``retries`` (WORKFLOW_RETRY_COUNT) repeat it with the engine's backoff.
    LLM_API_KEY is sent only to LLM_BASE_URL; a step naming another
    ``base_url`` brings its own ``api_key``.
    """

    type = "llm"
    result_keys = ("text", "json", "model", "usage")
    config_choices = {"response_format": RESPONSE_FORMATS}

    def __init__(
        self,
        name: str,
        *,
        prompt: str,
        system: str = "",
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | str | None = None,
        max_tokens: int | str | None = None,
        output_schema: Mapping[str, Any] | str | None = None,
        response_format: str = "json_schema",
        schema_retries: int | str = 2,
        timeout: float | str = 120,
        **options: Any,
    ):
        super().__init__(name, **options)
        self.prompt = prompt
        self.system = system
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        # A JSON Schema, or a template that renders to one.
        self.output_schema = output_schema
        self.response_format = response_format
        self.schema_retries = schema_retries
        self.timeout = timeout
        if isinstance(response_format, str) and "{{" not in response_format and response_format not in RESPONSE_FORMATS:
            raise SettingError("response_format", f"action {name!r}: response_format must be one of "
                                                  f"{', '.join(RESPONSE_FORMATS)}, got {response_format!r}")
        if isinstance(output_schema, Mapping):
            from actions.schemas import SchemaError, check_schema

            try:
                check_schema(dict(output_schema))
            except SchemaError as error:
                raise SettingError("output_schema", f"action {name!r}: output_schema is not a valid JSON Schema: "
                                                    f"{' '.join(error.message.split())}") from None
        elif output_schema is not None and not (isinstance(output_schema, str) and "{{" in output_schema):
            raise SettingError("output_schema", f"action {name!r}: output_schema must be a JSON Schema object, "
                                                f"got {output_schema!r}")

    def execute(self, data_store: dict) -> dict:
        """Ask the model; returns ``{"text", "json", "model", "usage"}``."""
        settings = self.context.settings
        url, key = self._endpoint()
        timeout = capped(seconds(self.timeout, "timeout", "llm"), "WORKFLOW_MAX_STEP_TIMEOUT", settings,
                         "llm: timeout")
        schema = self._schema()
        retries = _count(self.schema_retries, "schema_retries")
        body = self._request(schema)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        problems: list[str] = []
        usage: dict[str, Any] = {}
        for attempt in range(retries + 1):
            text, used, served_by = _reply(self._post(url, headers, body, timeout), url)
            usage = _added(usage, used)  # every reply costs tokens, the rejected ones too
            result = {"text": text, "json": None, "model": served_by or body.get("model", ""), "usage": usage}
            if schema is None:
                return result
            result["json"], problems = _validated(text, schema, settings)
            if not problems:
                return result
            logger.info("llm %s: reply %d does not match output_schema: %s", self.name, attempt + 1,
                        "; ".join(problems))
            body["messages"] = [*body["messages"], {"role": "assistant", "content": text}, {
                "role": "user", "content": "That reply does not match the JSON Schema: " + "; ".join(problems)
                + ". Answer again with only the corrected JSON."}]
        raise ActionError(f"llm: {retries + 1} repl{'y' if retries == 0 else 'ies'} from {host_port(url)} did not "
                          f"match output_schema: {'; '.join(problems)}", retryable=False)

    def _request(self, schema: dict | None) -> dict[str, Any]:
        """The chat completion request: messages, model, options, and with a schema the JSON instruction."""
        system = "\n\n".join(part for part in (str(self.system or "").strip(),
                                               _json_instruction(schema) if schema is not None else "") if part)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": str(self.prompt)}]
        body: dict[str, Any] = {"messages": messages}
        model = str(self.model or self.context.settings.get("LLM_MODEL") or "").strip()
        if model:
            body["model"] = model
        if self.temperature not in (None, ""):
            body["temperature"] = _number(self.temperature, "temperature")
        if self.max_tokens not in (None, ""):
            body["max_tokens"] = _count(self.max_tokens, "max_tokens", minimum=1)
        fmt = str(self.response_format or "none").strip()
        if fmt not in RESPONSE_FORMATS:
            raise ActionError(f"llm: response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {fmt!r}",
                              retryable=False)
        if schema is not None and fmt == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
        elif schema is not None and fmt == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _endpoint(self) -> tuple[str, str]:
        """The chat completions URL and the key to send there (LLM_API_KEY only to LLM_BASE_URL)."""
        settings = self.context.settings
        configured = str(settings.get("LLM_BASE_URL") or "").strip()
        base = str(self.base_url or "").strip() or configured
        if not base:
            raise ActionError("llm: no server: set LLM_BASE_URL (e.g. http://127.0.0.1:8080/v1 for llama.cpp's "
                              "server) or give the step a base_url", retryable=False)
        try:
            parts = urlsplit(base)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise ActionError(f"llm: base_url must be an http:// or https:// URL, got {shown_url(base)!r}",
                              retryable=False)
        key = str(self.api_key or "").strip()
        if not key and base.rstrip("/") == configured.rstrip("/"):
            key = str(settings.get("LLM_API_KEY") or "").strip()
        url = base.rstrip("/")
        return (url if url.endswith("/chat/completions") else f"{url}/chat/completions"), key

    def _schema(self) -> dict | None:
        if self.output_schema in (None, ""):
            return None
        if not isinstance(self.output_schema, Mapping):
            raise ActionError(f"llm: output_schema must be a JSON Schema object, got {self.output_schema!r}",
                              retryable=False)
        from actions.schemas import SchemaError, check_schema

        schema = dict(self.output_schema)
        try:
            check_schema(schema)
        except SchemaError as error:
            raise ActionError(f"llm: output_schema is not a valid JSON Schema: {' '.join(error.message.split())}",
                              retryable=False) from None
        return schema

    def _post(self, url: str, headers: dict, body: dict, timeout: float) -> Any:
        """The server's parsed JSON answer; ActionError naming host:port and the status otherwise."""
        import requests  # here, not at the top: listing or starting workflows does not need it

        where = host_port(url)
        try:
            with session(self.context.settings) as http, http.post(
                    url, json=body, headers=headers, timeout=timeout, stream=True) as response:
                content = _read(response, where)
        except PolicyError as error:
            raise ActionError(f"llm: {error}", retryable=False) from None
        except requests.RequestException as error:
            message, retryable = describe(error, url, timeout)
            raise ActionError(f"llm: {message}", retryable=retryable) from None
        status = response.status_code
        if not 200 <= status < 300:
            raise ActionError(f"llm: {where} answered {status} {response.reason or ''}".rstrip()
                              + _snippet(content, response.headers.get("Content-Type", "")),
                              retryable=status >= 500 or status in _RETRY_4XX)
        try:
            return load_json(content)
        except ValueError:
            raise ActionError(f"llm: {where} answered {status} with no JSON"
                              + _snippet(content, response.headers.get("Content-Type", "")), retryable=True) from None


def _read(response: Any, where: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ActionError(f"llm: answer from {where} over {MAX_ANSWER_BYTES // 2**20} MB", retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _snippet(content: bytes, content_type: str) -> str:
    """A short hint of what came instead of a completion: the error's message, or the page's words."""
    text = content[:4000].decode("utf-8", "replace")
    try:
        data = json.loads(text)
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message.strip():
            return ": " + " ".join(message.split())[:200]
    except ValueError:
        pass
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = f"an HTML page ({' '.join(title.group(1).split())})" if title else "an HTML page"
        return f": {text[:200]}"
    words = " ".join(text.split())[:200]
    return f": {words}" if words else ""


def _reply(answer: Any, url: str) -> tuple[str, dict, str]:
    """(text, usage, model) of a chat completion; ActionError when the answer is not one."""
    if not isinstance(answer, dict):
        answer = {}
    try:
        message = answer["choices"][0]["message"]
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise TypeError
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ActionError(f"llm: {host_port(url)} answered JSON that is not a chat completion "
                          f"(no choices[0].message.content)", retryable=False) from None
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    model = answer.get("model") if isinstance(answer.get("model"), str) else ""
    return text, usage, model


def _added(total: dict, usage: dict) -> dict:
    """Token counts of two replies added up (numbers only; other fields as the last reply says)."""
    summed = {**total, **usage}
    for key, value in usage.items():
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(total.get(key), int):
            summed[key] = total[key] + value
    return summed


def _json_instruction(schema: dict) -> str:
    return ("Answer with JSON only (no prose, no Markdown fence), an instance of this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))


def _validated(text: str, schema: dict, settings: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """(the parsed JSON, []) when ``text`` is JSON valid against ``schema``; else (None, the problems)."""
    from actions import patterns
    from actions.schemas import SchemaFailure, errors_of, make_validator, message_of

    fenced = _FENCE.match(text)
    try:
        parsed = load_json(fenced.group(1) if fenced else text.strip())
    except ValueError as error:
        return None, [f"not JSON ({error})"]
    timeout = settings.get(patterns.SETTING, patterns.DEFAULT_TIMEOUT)
    validator = make_validator(schema, timeout=timeout)
    try:
        errors = errors_of(validator, parsed, timeout)
    except SchemaFailure as error:
        raise ActionError(f"llm: validating against output_schema: {error}", retryable=False) from None
    problems = [f"{error.json_path}: {message_of(error)}" for error in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return (parsed, []) if not problems else (None, problems)


def _number(value: Any, field: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ActionError(f"llm: {field} must be a number, got {value!r}", retryable=False) from None
    return number


def _count(value: Any, field: str, minimum: int = 0) -> int:
    number = whole_number(value)
    if number is None or number < minimum:
        raise ActionError(f"llm: {field} must be an integer >= {minimum}, got {value!r}", retryable=False)
    return number
