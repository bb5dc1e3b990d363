"""llm steps run by the engine: 429 and 5xx retried by the step's retries, the key scrubbed from everything."""

from __future__ import annotations

import json
from contextlib import contextmanager

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.llm_server import LlmServer, completion, error

KEY = "sk-live-9f8e7d6c5b4a3210"


@contextmanager
def client_for(storage, server: LlmServer):
    """A test client of an app whose LLM_* settings name ``server``."""
    settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                "LLM_BASE_URL": server.url, "LLM_API_KEY": KEY, "LLM_MODEL": "local-model"}
    app = start_app(create_app(settings))
    try:
        yield app.test_client()
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def define(client, steps: list[dict], **options) -> None:
    response = client.post("/api/workflows", json={"name": "ask", "steps": steps, **options})
    assert response.status_code == 201, response.get_json()


def run(client, inputs: dict | None = None) -> dict:
    response = client.post("/api/workflows/ask/runs?wait=20", json={"inputs": inputs or {}})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_429_then_5xx_are_retried_by_the_step_then_the_answer_is_its_result(storage):
    answers = [error(429, "Rate limit reached for requests"), error(503, "model is loading"), completion("Paris.")]
    with LlmServer(*answers).running() as server, client_for(storage, server) as client:
        define(client, [{"name": "ask", "type": "llm", "retries": 2, "config": {
            "prompt": "Capital of {{ inputs.country }}?"}}])
        finished = run(client, {"country": "France"})
    assert finished["status"] == "succeeded", finished["error"]
    step = finished["steps"][0]
    assert step["attempts"] == 3
    assert step["result"]["text"] == "Paris."
    assert [request["json"]["messages"][-1]["content"] for request in server.requests] == ["Capital of France?"] * 3
    assert all(request["json"]["model"] == "local-model" for request in server.requests)


def test_a_4xx_other_than_429_fails_the_step_at_once(storage):
    with LlmServer(error(404, "model 'nope' not found")).running() as server, client_for(storage, server) as client:
        define(client, [{"name": "ask", "type": "llm", "retries": 3, "config": {"prompt": "hi", "model": "nope"}}])
        finished = run(client)
    assert finished["status"] == "failed"
    assert finished["steps"][0]["attempts"] == 1
    assert finished["steps"][0]["error"] == f"llm: {server.host} answered 404 Not Found: model 'nope' not found"


def test_the_key_never_shows_in_the_run_its_log_or_any_answer_even_when_the_server_echoes_it(storage):
    def echo(request: dict):
        # A hostile or careless server: the key comes back in the completion, and then in an error.
        sent = request["headers"].get("Authorization", "")
        if request["json"]["messages"][-1]["content"] == "fail":
            return error(401, f"invalid api key {sent.removeprefix('Bearer ')}")
        return completion(f"you sent {sent}")

    with LlmServer(echo).running() as server, client_for(storage, server) as client:
        define(client, [
            {"name": "ask", "type": "llm", "config": {"prompt": "{{ inputs.prompt }}"}},
            {"name": "say", "type": "log", "config": {"message": "model said: {{ steps.ask.text }}"}},
        ], max_retries=0)
        answered = run(client, {"prompt": "hello"})
        failed = run(client, {"prompt": "fail"})
        answers = [json.dumps(answered), json.dumps(failed)]
        for finished in (answered, failed):
            answers.append(json.dumps(client.get(f"/api/runs/{finished['id']}").get_json()))
            answers.append(json.dumps(client.get(f"/api/runs/{finished['id']}/logs").get_json()))
        answers.append(json.dumps(client.get("/api/runs").get_json()))
        answers.append(json.dumps(client.get("/api/workflows/ask").get_json()))
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"  # it was sent
    assert answered["status"] == "succeeded", answered["error"]
    assert answered["steps"][0]["result"]["text"] == "you sent Bearer ***"
    assert failed["steps"][0]["error"] == f"llm: {server.host} answered 401 Unauthorized: invalid api key ***"
    assert not any(KEY in answer for answer in answers)
    stored = "".join(path.read_text(errors="replace") for path in storage.rglob("*") if path.is_file())
    assert KEY not in stored
