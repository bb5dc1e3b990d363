"""The llm action against an OpenAI-compatible server written here, which checks what it receives."""

from __future__ import annotations

import json

import pytest

from actions.base import ActionError, RunContext
from actions.llm import LlmAction
from tests.llm_server import LlmServer, completion, error, html

KEY = "sk-test-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}


def ask(server: LlmServer | None = None, settings: dict | None = None, **config) -> dict:
    if server is not None and "base_url" not in config and not (settings or {}).get("LLM_BASE_URL"):
        config["base_url"] = server.url
    action = LlmAction("ask", **{"prompt": "Where?", **config})
    action.context = RunContext(settings=settings or {})
    return action.execute({})


def test_a_plain_prompt_sends_the_key_model_messages_and_options_and_returns_the_answer():
    with LlmServer(completion("Paris.", model="llama-3.2-1b")).running() as server:
        result = ask(settings={"LLM_BASE_URL": server.url, "LLM_API_KEY": KEY, "LLM_MODEL": "llama-3.2-1b"},
                     system="Answer in one word.", prompt="Capital of France?", temperature=0.2, max_tokens="16")
    assert result == {"text": "Paris.", "json": None, "model": "llama-3.2-1b",
                      "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["json"] == {"model": "llama-3.2-1b", "temperature": 0.2, "max_tokens": 16, "messages": [
        {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}]}


def test_the_settings_key_goes_only_to_the_settings_server_a_step_naming_another_brings_its_own():
    with LlmServer(completion("ok")).running() as other:
        settings = {"LLM_BASE_URL": "http://127.0.0.1:9/v1", "LLM_API_KEY": KEY}
        ask(settings=settings, base_url=other.url)
        ask(settings=settings, base_url=other.url, api_key="sk-own-key")
    assert "Authorization" not in other.requests[0]["headers"]
    assert other.requests[1]["headers"]["Authorization"] == "Bearer sk-own-key"
    assert "model" not in other.requests[0]["json"]  # none configured: the server's own (llama.cpp serves one)


def test_output_schema_asks_for_json_and_returns_it_parsed_a_markdown_fence_is_tolerated():
    answer = completion('```json\n{"city": "Paris", "population": 2102650}\n```')
    with LlmServer(answer).running() as server:
        result = ask(server, output_schema=SCHEMA, system="You know geography.")
    assert result["json"] == {"city": "Paris", "population": 2102650}
    sent = server.requests[0]["json"]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}
    system = sent["messages"][0]["content"]
    assert system.startswith("You know geography.\n\nAnswer with JSON only") and json.dumps(SCHEMA) in system


def test_json_object_and_none_suit_servers_without_json_schema():
    with LlmServer(completion('{"city": "Oslo", "population": 709037}')).running() as server:
        ask(server, output_schema=SCHEMA, response_format="json_object")
        ask(server, output_schema=SCHEMA, response_format="none")
    assert server.requests[0]["json"]["response_format"] == {"type": "json_object"}
    assert "response_format" not in server.requests[1]["json"]


def test_a_reply_that_does_not_validate_is_sent_back_with_the_errors_and_the_next_one_is_taken():
    with LlmServer(completion('{"city": "Paris", "population": "two million"}'),
                   completion('{"city": "Paris", "population": 2102650}')).running() as server:
        result = ask(server, output_schema=SCHEMA)
    assert result["json"] == {"city": "Paris", "population": 2102650}
    assert result["usage"] == {"prompt_tokens": 24, "completion_tokens": 6, "total_tokens": 30}  # both replies
    retry = server.requests[1]["json"]["messages"]
    assert retry[-2] == {"role": "assistant", "content": '{"city": "Paris", "population": "two million"}'}
    assert retry[-1]["role"] == "user"
    assert "$.population: 'two million' is not of type 'integer'" in retry[-1]["content"]


def test_replies_that_never_validate_fail_the_step_with_the_errors_and_no_retry():
    with LlmServer(completion("Paris, I think.")).running() as server:
        with pytest.raises(ActionError) as raised:
            ask(server, output_schema=SCHEMA, schema_retries=1)
    assert len(server.requests) == 2
    assert str(raised.value).startswith(f"llm: 2 replies from {server.host} did not match output_schema: not JSON (")
    assert not raised.value.retryable


@pytest.mark.parametrize(("answer", "message", "retryable"), [
    (error(429, "Rate limit reached"), "answered 429 Too Many Requests: Rate limit reached", True),
    (error(503, "model is loading"), "answered 503 Service Unavailable: model is loading", True),
    (error(400, "unknown model 'gpt-9'"), "answered 400 Bad Request: unknown model 'gpt-9'", False),
    (html(502, "502 Bad Gateway"), "answered 502 Bad Gateway: an HTML page (502 Bad Gateway)", True),
    ((200, "text/html", b"<!DOCTYPE html><html><title>Welcome to nginx!</title></html>"),
     "answered 200 with no JSON: an HTML page (Welcome to nginx!)", True),
    ((200, "application/json", b'{"object": "list", "data": []}'),
     "answered JSON that is not a chat completion (no choices[0].message.content)", False),
])
def test_a_failed_answer_is_one_line_naming_host_and_status(answer, message, retryable):
    with LlmServer(answer).running() as server:
        with pytest.raises(ActionError) as raised:
            ask(server)
    assert str(raised.value) == f"llm: {server.host} {message}"
    assert raised.value.retryable is retryable


def test_a_server_slower_than_the_timeout_fails_the_attempt_naming_the_host():
    with LlmServer(hang=True).running() as server:
        with pytest.raises(ActionError) as raised:
            ask(server, timeout=0.3)
    assert str(raised.value) == f"llm: no response from {server.host} within 0.3 s"
    assert raised.value.retryable


def test_a_server_that_is_not_there_and_one_the_deny_list_refuses():
    with pytest.raises(ActionError, match=r"^llm: connection to 127.0.0.1:9 refused$"):
        ask(base_url="http://127.0.0.1:9/v1")
    with LlmServer(completion("x")).running() as server:
        with pytest.raises(ActionError, match="resolves to 127.0.0.1, which WORKFLOW_HTTP_DENY refuses") as raised:
            ask(server, settings={"WORKFLOW_HTTP_DENY": "127.0.0.0/8"})
    assert server.requests == [] and not raised.value.retryable


def test_without_a_server_configured_the_step_says_which_setting_to_set():
    with pytest.raises(ActionError, match="llm: no server: set LLM_BASE_URL"):
        ask()
    with pytest.raises(ActionError, match="llm: base_url must be an http:// or https:// URL, got 'ftp://h/v1'"):
        ask(base_url="ftp://user:pw@h/v1")


def test_bad_config_is_refused_when_the_step_is_built():
    with pytest.raises(ValueError, match="output_schema is not a valid JSON Schema"):
        LlmAction("ask", prompt="x", output_schema={"type": "thing"})
    with pytest.raises(ValueError, match="response_format must be one of json_schema, json_object, none"):
        LlmAction("ask", prompt="x", response_format="xml")
    with pytest.raises(ValueError, match="output_schema must be a JSON Schema object"):
        LlmAction("ask", prompt="x", output_schema=["type"])
    LlmAction("ask", prompt="x", output_schema="{{ inputs.schema }}")  # checked once rendered
