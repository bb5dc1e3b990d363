"""Attack replays (issue 12 items 6 and 7) against a real ``python run.py`` on loopback.

One request or one step cannot stall or exhaust the server: runaway regular
expressions, huge parallelism and waits, YAML alias bombs, deep or odd JSON,
schemas that fetch, templates that loop for ever. A definition that cannot be
bound is refused and never stored.
"""

from __future__ import annotations

import http.server
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from tests.fixtures import wait_until
from tests.server import Server, Servers

pytestmark = pytest.mark.slow  # replays attacks on a real run.py server

# Backtracks exponentially in re and in regex alike; regex gives up after WORKFLOW_REGEX_TIMEOUT.
SLOW_PATTERN = r"^(a|a)*$"
SLOW_TEXT = "a" * 30 + "!"
# Generous: health answers in milliseconds; the attacks below would hold it for 30 s and more.


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    with Servers(tmp_path_factory.mktemp("bounds")) as servers:
        yield servers.start()


class HealthWatch:
    """Polls /api/health on a thread while an attack runs: every poll must be answered, 200 (how fast is bench's)."""

    def __init__(self, server: Server):
        self.server = server
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                status = requests.get(self.server.url + "/api/health", timeout=30).status_code
                if status != 200:
                    self.failures.append(f"status {status}")
            except requests.RequestException as error:
                self.failures.append(repr(error))
            self.answers += 1
            self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def assert_answered(self) -> None:
        assert self.failures == []
        assert self.answers >= 2


def create(server: Server, definition: dict) -> requests.Response:
    return server.post("/api/workflows", json=definition)


def finished(server: Server, run_id: str, timeout: float = 30) -> dict:
    def done():
        run = server.get(f"/api/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(done, timeout=timeout, interval=0.1, message=f"run {run_id} finished")


def step_error(run: dict) -> str:
    return next(step["error"] for step in run["steps"] if step["status"] == "failed")


# -- regular expressions -------------------------------------------------------------------------------------
def test_redos_through_an_unsigned_webhook_fails_the_runs_and_health_keeps_answering(server):
    definition = {"name": "redos_hook", "trigger": {"type": "webhook"}, "steps": [
        {"name": "match", "type": "condition", "config": {"condition": {
            "type": "matches", "left": "{{ trigger_data.body.text }}", "right": "{{ trigger_data.body.pattern }}"}}}]}
    assert create(server, definition).status_code == 201
    assert server.post("/api/workflows/redos_hook/start").status_code == 200

    def deliver(pattern: str) -> str:
        response = server.post("/api/hooks/redos_hook", json={"text": SLOW_TEXT, "pattern": pattern})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with HealthWatch(server) as health, ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(deliver, [SLOW_PATTERN] * 6))
        runs = [finished(server, run_id) for run_id in ids]
    health.assert_answered()
    for run in runs:
        assert run["status"] == "failed"
        assert "did not finish within 1 s" in step_error(run)
        assert "(WORKFLOW_REGEX_TIMEOUT)" in step_error(run)

    # The pattern measured in issue 12 (30 s of silence under re) is answered at once by regex.
    run = finished(server, deliver(r"^(a+)+$"))
    assert run["status"] == "succeeded"
    assert run["steps"][0]["result"]["result"] is False


def test_redos_through_an_inputs_schema_pattern_is_422_and_health_keeps_answering(server):
    definition = {"name": "redos_inputs", "inputs": {"type": "object", "properties": {
        "code": {"type": "string", "pattern": SLOW_PATTERN}}},
        "steps": [{"name": "say", "type": "log", "config": {"message": "{{ inputs.code }}"}}]}
    assert create(server, definition).status_code == 201

    def post(_: int) -> requests.Response:
        return server.post("/api/workflows/redos_inputs/runs", json={"inputs": {"code": SLOW_TEXT}})

    with HealthWatch(server) as health, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, range(8)))
    health.assert_answered()
    for response in answers:
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert "did not finish within 1 s" in message and "(WORKFLOW_REGEX_TIMEOUT)" in message


def test_unique_items_over_many_objects_does_not_hold_the_server(server):
    # jsonschema compares unhashable items pairwise: 8,000 objects held a request thread for 54 s.
    definition = {"name": "unique_rows", "inputs": {"type": "object", "properties": {
        "rows": {"type": "array", "uniqueItems": True}}}, "steps": [{"name": "say", "type": "log",
                                                                      "config": {"message": "ok"}}]}
    assert create(server, definition).status_code == 201
    rows = [{"n": index} for index in range(20000)]

    def post(duplicate: bool) -> requests.Response:
        body = rows + rows[:1] if duplicate else rows
        return server.post("/api/workflows/unique_rows/runs", json={"inputs": {"rows": body}}, timeout=30)

    with HealthWatch(server) as health, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, [False, True, False, True]))
    health.assert_answered()
    assert [answer.status_code for answer in answers] == [202, 422, 202, 422]
    assert "has non-unique elements: item 20000 ({'n': 0}) repeats an earlier one" in answers[1].text
    assert len(answers[1].content) < 1000


# -- parallelism, waits, timeouts ----------------------------------------------------------------------------
LOG = {"name": "say", "type": "log", "config": {"message": "{{ item }}"}}


@pytest.mark.parametrize(("definition", "path", "setting"), [
    ({"steps": [{"name": "fan", "type": "loop", "config": {"items": list(range(1500)), "max_parallel": 1500,
                                                             "steps": [LOG]}}]},
     "steps[0].config.max_parallel", "WORKFLOW_MAX_PARALLEL"),
    ({"steps": [{"name": "nap", "type": "wait", "config": {"seconds": 1e12}}]}, "steps[0].config.seconds",
     "WORKFLOW_MAX_WAIT"),
    ({"steps": [{"name": "nap", "type": "log", "timeout": 1e12, "config": {"message": "x"}}]}, "steps[0].timeout",
     "WORKFLOW_MAX_STEP_TIMEOUT"),
    ({"step_timeout": 1e12, "steps": [LOG]}, "step_timeout", "WORKFLOW_MAX_STEP_TIMEOUT"),
    ({"max_parallel_steps": 1500, "steps": [LOG]}, "max_parallel_steps", "WORKFLOW_MAX_PARALLEL"),
])
def test_a_posted_cap_breaker_is_refused_with_its_path(server, definition, path, setting):
    response = create(server, {"name": "greedy", **definition})
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details[0]["path"] == path and setting in details[0]["message"]
    assert server.get("/api/workflows/greedy").status_code == 404


def test_loop_max_parallel_from_a_template_fails_the_run_and_threads_stay_bounded(server):
    definition = {"name": "fan_out", "steps": [{"name": "fan", "type": "loop", "config": {
        "items": "{{ inputs['items'] }}", "max_parallel": "{{ inputs.parallel }}",
        "steps": [{"name": "nap", "type": "wait", "config": {"seconds": 1}}]}}]}
    assert create(server, definition).status_code == 201
    process = psutil.Process(server.process.pid)
    before = process.num_threads()
    response = server.post("/api/workflows/fan_out/runs?wait=20",
                           json={"inputs": {"items": list(range(1500)), "parallel": 1500}})
    assert response.status_code == 200
    run = response.json()
    assert run["status"] == "failed"
    assert step_error(run) == "loop: max_parallel 1500 is more than WORKFLOW_MAX_PARALLEL (16)"
    assert process.num_threads() < before + 20

    # Within the cap, the pool never grows past it.
    response = server.post("/api/workflows/fan_out/runs", json={"inputs": {"items": list(range(40)), "parallel": 16}})
    run_id = response.json()["id"]
    most = before
    while server.get(f"/api/runs/{run_id}").json()["status"] not in ("succeeded", "failed"):
        most = max(most, process.num_threads())
        time.sleep(0.05)
    assert finished(server, run_id)["status"] == "succeeded"
    assert most <= before + 16 + 8  # the pool, the run's thread and a few of waitress's


def test_a_wait_from_a_template_past_the_cap_fails_the_run(server):
    definition = {"name": "long_nap", "steps": [{"name": "nap", "type": "wait",
                                                 "config": {"seconds": "{{ inputs.seconds }}"}}]}
    assert create(server, definition).status_code == 201
    run = server.post("/api/workflows/long_nap/runs?wait=10", json={"inputs": {"seconds": 1e12}}).json()
    assert run["status"] == "failed"
    assert step_error(run) == "wait: seconds 1000000000000.0 is more than WORKFLOW_MAX_WAIT (3600)"


# -- YAML and JSON bodies ------------------------------------------------------------------------------------
def test_a_yaml_alias_bomb_is_refused_with_a_small_answer(server):
    lines = ["name: lol", "description: x", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    body = "\n".join(lines) + "\n"
    assert len(body) < 500  # the 449 bytes became a 66 MB definition and a 149 MB answer
    response = server.post("/api/workflows", data=body, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 400
    assert "YAML aliases are not accepted" in response.json()["error"]["message"]
    assert "line 3 column 4" in response.json()["error"]["message"]
    assert len(response.content) < 1000
    assert server.get("/api/workflows/lol").status_code == 404


def started_hook(server: Server) -> None:
    """An unsigned webhook workflow, json_hook, made and started once per server."""
    if server.get("/api/workflows/json_hook").status_code == 404:
        assert create(server, {"name": "json_hook", "trigger": {"type": "webhook"}, "steps": [LOG]}).status_code == 201
        assert server.post("/api/workflows/json_hook/start").status_code == 200


@pytest.mark.parametrize(("body", "words"), [
    (b"[" * 100000 + b"]" * 100000, "nested deeper than 64 levels (WORKFLOW_MAX_JSON_DEPTH)"),
    (b'{"inputs": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}", "nested deeper than 64 levels"),
    (b'{"inputs": {"n": ' + b"9" * 5000 + b"}}", "an integer of 5000 digits is too long"),
    (b'{"inputs": {"n": NaN}}', "NaN is not a JSON number"),
    (b'{"inputs": {"n": Infinity}}', "Infinity is not a JSON number"),
])
@pytest.mark.parametrize("where", ["runs", "hook", "definition"])
def test_json_past_a_bound_is_400(server, body, words, where):
    if where == "hook":
        started_hook(server)
    url = {"runs": "/api/workflows/echo/runs", "hook": "/api/hooks/json_hook", "definition": "/api/workflows"}[where]
    response = server.post(url, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]


# -- JSON Schema $refs ---------------------------------------------------------------------------------------
@pytest.fixture
def schema_host():
    """A local http.server that serves a schema and records every request it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_remote_and_file_refs_are_refused_and_nothing_is_fetched(server, schema_host, tmp_path):
    base, seen = schema_host
    secret = tmp_path / "schema.json"
    secret.write_text('{"type": "integer"}', encoding="utf-8")
    for ref in (f"{base}/schema.json", secret.as_uri()):
        response = create(server, {"name": "ref_inputs", "inputs": {"type": "object", "properties": {
            "who": {"$ref": ref}}}, "steps": [LOG]})
        assert response.status_code == 422
        detail = response.json()["error"]["details"][0]
        assert detail["path"] == "inputs.properties.who.$ref"
        assert f"$ref {ref!r} points outside the schema" in detail["message"]

    # A schema that arrives with the run's data (validate_data) is refused when the step runs.
    definition = {"name": "ref_step", "steps": [{"name": "check", "type": "validate_data", "config": {
        "data": "{{ inputs.data }}", "schema": "{{ inputs.schema }}"}}]}
    assert create(server, definition).status_code == 201
    for ref in (f"{base}/schema.json", secret.as_uri()):
        run = server.post("/api/workflows/ref_step/runs?wait=10", json={"inputs": {
            "data": {"who": 1}, "schema": {"properties": {"who": {"$ref": ref}}}}}).json()
        assert run["status"] == "failed"
        assert f"$ref {ref!r} points outside the schema" in step_error(run)
    assert seen == []


# -- templates -----------------------------------------------------------------------------------------------
def test_a_template_that_loops_for_ever_fails_the_step_and_health_keeps_answering(server):
    loops = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    definition = {"name": "spin", "steps": [{"name": "say", "type": "log", "config": {"message": loops}}]}
    assert create(server, definition).status_code == 201
    with HealthWatch(server) as health:
        run = server.post("/api/workflows/spin/runs?wait=20").json()
    health.assert_answered()
    assert run["status"] == "failed"
    assert "rendering took longer than 2 s (WORKFLOW_TEMPLATE_TIMEOUT)" in step_error(run)


def test_a_template_that_multiplies_a_text_fails_the_step(server):
    definition = {"name": "big_text", "steps": [{"name": "say", "type": "log", "config": {
        "message": "{{ 'a' * 10**9 }}"}}]}
    assert create(server, definition).status_code == 201
    run = server.post("/api/workflows/big_text/runs?wait=10").json()
    assert run["status"] == "failed"
    assert "a repeated value of 1,000,000,000 items is larger than the limit" in step_error(run)


# -- a definition that cannot be bound (item 7) --------------------------------------------------------------
def test_an_unbindable_trigger_is_422_not_stored_and_the_server_restarts(tmp_path):
    with Servers(tmp_path) as servers:
        server = servers.start()
        definition = {"name": "divide", "trigger": {"type": "interval", "seconds": "{{ 1/0 }}"}, "steps": [LOG]}
        response = create(server, definition)
        assert response.status_code == 422
        assert "ZeroDivisionError" in response.json()["error"]["details"][0]["message"]
        assert server.get("/api/workflows/divide").status_code == 404
        assert not (Path(server.storage) / "definitions" / "divide").exists()
        server.restart()  # exits 0, starts again (it exited 2 when the definition stayed on disk)
        assert server.get("/api/workflows/divide").status_code == 404
        assert server.get("/api/health").status_code == 200


# -- request metadata ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/api/workflows/echo/runs", "/api/hooks/json_hook"])
def test_a_giant_idempotency_key_is_400(server, url):
    if "hooks" in url:
        started_hook(server)
    response = server.post(url, json={}, headers={"Idempotency-Key": "k" * 10000})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Idempotency-Key must be at most 255 characters"
