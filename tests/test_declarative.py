"""Declarative definitions: building them from YAML and JSON, every kind of mistake, run.py validate and run."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from app import create_app, start_app
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.fixtures import wait_until
from tests.server import REPO, server_env
from workflows.declarative import DefinitionError, load_file, parse

VALID_YAML = """\
name: fetch_and_report
description: Fetch open tickets and mail a summary.
inputs: {type: object, properties: {team: {type: string}}, required: [team]}
trigger: {type: interval, seconds: 60}
max_parallel_steps: 2
steps:
  - {name: fetch, type: http_request, retries: 2, timeout: 10,
     config: {url: "https://tickets.example/api?team={{ inputs.team }}"}}
  - {name: many, type: condition, config: {condition: {type: gt, left: "{{ steps.fetch.json | length }}", right: 10}}}
  - name: mail
    type: send_email
    depends_on: [many]
    when: "{{ steps.many.result }}"
    on_failure: alert
    config: {to: [lead@example.org], subject: "{{ steps.fetch.json | length }} open tickets", body: "..."}
  - {name: alert, type: log, config: {message: "{{ run.error }}", level: error}}
"""


def write(tmp_path, text: str, name: str = "flow.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize("form", ["yaml", "json"])
def test_a_valid_definition_becomes_a_workflow(tmp_path, form):
    text = VALID_YAML if form == "yaml" else json.dumps(yaml.safe_load(VALID_YAML))
    workflow = load_file(write(tmp_path, text, f"flow.{form}"))
    assert workflow.name == "fetch_and_report"
    assert workflow.description == "Fetch open tickets and mail a summary."
    assert workflow.inputs_schema["required"] == ["team"]
    assert workflow.max_parallel_steps == 2
    assert workflow.trigger.type == "interval"
    fetch, many, mail, alert = workflow.actions
    assert [action.type for action in workflow.actions] == ["http_request", "condition", "send_email", "log"]
    assert (fetch.retries, fetch.step_timeout) == (2, 10)
    assert fetch.url == "https://tickets.example/api?team={{ inputs.team }}"
    assert (mail.depends_on, mail.when, mail.on_failure, mail.to) == (
        ["many"], "{{ steps.many.result }}", "alert", ["lead@example.org"])
    assert many.depends_on is None  # the step before it


def test_a_definition_without_trigger_is_manual(tmp_path):
    workflow = load_file(write(tmp_path, "name: hello\nsteps: [{name: say, type: log, config: {message: hi}}]\n"))
    assert workflow.trigger.type == "manual"


STEP = "{name: say, type: log, config: {message: hi}}"
ONE_STEP = f"steps: [{STEP}]"
LOG = "type: log, config: {message: hi}"

# name -> (definition text, the problems' paths, the first problem's message or a part of it)
INVALID = {
    "unknown top key": (f"name: x\ntimeout: 5\n{ONE_STEP}", ["timeout"], "unknown key; a definition has"),
    "bad name": (f"name: Bad-Name\n{ONE_STEP}", ["name"], "must match [a-z0-9_]+, got 'Bad-Name'"),
    "unknown trigger type": (f"name: x\ntrigger: {{type: pigeon}}\n{ONE_STEP}", ["trigger.type"],
                             "unknown trigger type 'pigeon'; known: cron, email, event, file"),
    "unknown trigger setting": (f"name: x\ntrigger: {{type: interval, every: 5}}\n{ONE_STEP}", ["trigger.every"],
                                "unknown setting for type 'interval'"),
    "no steps": ("name: x\nsteps: []", ["steps"], "must be a non-empty list of steps"),
    "unknown step type": ("name: x\nsteps: [{name: s, type: telepathy}]", ["steps[0].type"],
                          "unknown step type 'telepathy'; known: approval, condition,"),
    "unknown step key": (f"name: x\nsteps: [{{name: s, retry: 2, {LOG}}}]", ["steps[0].retry"],
                         "unknown key; a step has cache, compensate, config, depends_on, limits, name, on_failure, "
                         "retries, timeout, type, when"),
    "unknown config key": ("name: x\nsteps: [{name: get, type: http_request, config: {uri: 'http://a.example'}}]",
                           ["steps[0].config.uri", "steps[0].config.url"],
                           "unknown setting for type 'http_request'; known: data, expect_status, headers, json"),
    "missing required config": ("name: x\nsteps: [{name: w, type: wait, config: {}}]", ["steps[0].config.seconds"],
                                "is required"),
    "bad config value": ("name: x\nsteps: [{name: w, type: log, config: {message: hi, level: loud}}]",
                         ["steps[0].config.level"], "log: level must be one of debug, info, warning, error"),
    "negative retries": (f"name: x\nsteps: [{{name: s, retries: -1, {LOG}}}]", ["steps[0].retries"],
                         "must be a number >= 0, got -1"),
    "timeout as text": (f"name: x\nsteps: [{{name: s, timeout: soon, {LOG}}}]", ["steps[0].timeout"],
                        "must be a number >= 0, got 'soon'"),
    "unknown depends_on": (f"name: x\nsteps: [{STEP}, {{name: b, depends_on: [nope], {LOG}}}]",
                           ["steps[1].depends_on"], "unknown step(s): nope"),
    "cycle": (f"name: x\nsteps: [{{name: a, depends_on: [b], {LOG}}}, {{name: b, {LOG}}}]", ["steps"],
              "steps form a cycle: a -> b -> a"),
    "duplicate names": (f"name: x\nsteps: [{STEP}, {STEP}]", ["steps[0].name", "steps[1].name"],
                        "duplicate step name 'say'"),
    "on_failure to an unknown step": (f"name: x\nsteps: [{{name: s, on_failure: rescue, {LOG}}}]",
                                      ["steps[0].on_failure"],
                                      "must be 'fail', 'continue' or the name of another step, got 'rescue'"),
    "on_failure to itself": (f"name: x\nsteps: [{{name: s, on_failure: s, {LOG}}}]", ["steps[0].on_failure"],
                             "the name of another step, got 's'"),
    "invalid inputs schema": (f"name: x\ninputs: {{properties: {{n: {{type: integr}}}}}}\n{ONE_STEP}",
                              ["inputs.properties.n.type"], "not a valid JSON Schema: 'integr' is not valid"),
    # Found by tests/test_openapi_fuzz.py: a number here was a TypeError, so POST /api/workflows answered 500.
    "inputs schema not an object": (f"name: x\ninputs: 0\n{ONE_STEP}", ["inputs"],
                                    "must be a JSON Schema object, got int"),
    "bad workflow setting": (f"name: x\nmax_parallel_steps: 0\n{ONE_STEP}", ["max_parallel_steps"],
                             "max_parallel_steps must be an integer >= 1, got 0"),
    "invalid nested loop step": ("name: x\nsteps: [{name: each, type: loop, config: {items: [1],"
                                 " steps: [{name: s, type: nope}]}}]", ["steps[0].config.steps[0].type"],
                                 "unknown step type 'nope'"),
    # A constructor's refusal of one setting (SettingError) is reported at that field, for the designer to mark.
    "badly shaped python function": ("name: x\nsteps: [{name: p, type: python, config: {function: os.system}}]",
                                     ["steps[0].config.function"], "function must look like 'package.module:function'"),
    "python kwargs not a mapping": ("name: x\nsteps: [{name: p, type: python, config: {function: 'a:b', kwargs: 3}}]",
                                    ["steps[0].config.kwargs"], "kwargs must be a mapping, got 3"),
    "badly shaped function in a loop": ("name: x\nsteps: [{name: each, type: loop, config: {items: [1], steps: "
                                        "[{name: p, type: python, config: {function: 'a:b.c'}}]}}]",
                                        ["steps[0].config.steps[0].config.function"], "got 'a:b.c'"),
    "badly shaped function in a compensation": (f"name: x\nsteps: [{{name: s, {LOG}, compensate: {{type: python, "
                                                "config: {function: os.system}}}]",
                                                ["steps[0].compensate.config.function"], "got 'os.system'"),
    "badly shaped function in a short compensation": (f"name: x\nsteps: [{{name: s, {LOG}, compensate: "
                                                      "{type: python, function: 'a:_b'}}]",
                                                      ["steps[0].compensate.function"], "got 'a:_b'"),
    "not a mapping": ("- just\n- a list", [""], "a definition is a mapping with name, trigger, steps"),
    "YAML syntax error": ("name: x\nsteps:\n  - name: a\n   type: log\n", ["line 4 column 4"], "not valid YAML"),
}


@pytest.mark.parametrize(("text", "paths", "message"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_definitions_name_the_path(tmp_path, text, paths, message):
    path = write(tmp_path, text)
    with pytest.raises(DefinitionError) as caught:
        load_file(path)
    assert [problem["path"] for problem in caught.value.problems] == paths
    assert message in caught.value.problems[0]["message"]
    assert str(caught.value).startswith(f"{path}: ")


def test_invalid_json_names_the_line(tmp_path):
    with pytest.raises(DefinitionError) as caught:
        load_file(write(tmp_path, '{"name": "x",\n "steps": [}', "flow.json"))
    assert caught.value.problems == [{"path": "line 2 column 12", "message": "not valid JSON: Expecting value"}]


def test_every_problem_is_listed_at_once(tmp_path):
    text = "name: X\nsteps: [{name: a, type: nope}, {name: b, type: wait, config: {sekonds: 1}}]"
    with pytest.raises(DefinitionError) as caught:
        load_file(write(tmp_path, text))
    assert [problem["path"] for problem in caught.value.problems] == [
        "name", "steps[0].type", "steps[1].config.sekonds", "steps[1].config.seconds"]


def test_every_problem_of_one_step_is_listed_not_only_the_first(tmp_path):
    text = """\
        name: x
        steps:
          - {name: a, type: log, config: {message: hi}}
          - name: b
            type: log
            retry: 2
            retries: -1
            timeout: soon
            depends_on: [nope]
            on_failure: rescue
            config: {message: hi, level: loud, colour: red}
        """
    with pytest.raises(DefinitionError) as caught:
        load_file(write(tmp_path, text))
    assert [(problem["path"], problem["message"]) for problem in caught.value.problems] == [
        ("steps[1].retry",
         "unknown key; a step has cache, compensate, config, depends_on, limits, name, on_failure, retries, timeout, "
         "type, when"),
        ("steps[1].depends_on", "unknown step(s): nope"),
        ("steps[1].retries", "must be a number >= 0, got -1"),
        ("steps[1].timeout", "must be a number >= 0, got 'soon'"),
        ("steps[1].on_failure", "must be 'fail', 'continue' or the name of another step, got 'rescue'"),
        ("steps[1].config.colour", "unknown setting for type 'log'; known: level, message"),
        ("steps[1].config.level", "action 'b': log: level must be one of debug, info, warning, error, got 'loud'"),
    ]


# -- template syntax, checked with the app's sandbox as the server does -------------------------------

BROKEN_TEMPLATES = """\
    name: typos
    trigger: {type: interval, seconds: "{{ settings.UPTIME_INTERVAL | }}"}
    steps:
      - {name: fine, type: log, config: {message: "{{ inputs.x | upper }} {% if inputs.y %}y{% endif %}"}}
      - {name: pipe, type: log, config: {message: "{{ inputs.x | }}"}}
      - {name: cond, type: log, when: "{{ inputs.x == }}", config: {message: "hi"}}
      - name: each
        type: loop
        config:
          items: [1, 2]
          steps:
            - {name: inner, type: log, config: {message: "{% for a in item %}{{ a }}"}}
      - name: deep
        type: http_request
        config: {url: "http://a.example", headers: {X-Team: "{{ inputs.team ) }}"}}
      - {name: lines, type: log, config: {message: "Dear {{ name }},\\nyour {{ thing + }} is ready"}}
    """
BROKEN_PROBLEMS = [
    ("trigger.seconds", "template syntax error: expected token 'name', got 'end of print statement'"),
    ("steps[1].config.message", "template syntax error: expected token 'name', got 'end of print statement'"),
    ("steps[2].when", "template syntax error: unexpected 'end of print statement'"),
    ("steps[3].config.steps[0].config.message", "template syntax error: Unexpected end of template. Jinja was "
     "looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'."),
    ("steps[4].config.headers.X-Team", "template syntax error: unexpected ')'"),
    ("steps[5].config.message", "template syntax error: unexpected 'end of print statement' (line 2)"),
]


def test_template_syntax_errors_are_found_when_the_file_is_validated(tmp_path):
    from app.core.definitions import checked
    from app.core.templating import Renderer

    path = write(tmp_path, BROKEN_TEMPLATES)
    with pytest.raises(DefinitionError) as caught:
        checked(yaml.safe_load(path.read_text()), str(path), {**TEST_SETTINGS, "WORKFLOW_MAX_RETRIES": 100,
                                                                "WORKFLOW_MAX_STEP_TIMEOUT": 86400.0}, Renderer())
    assert [(problem["path"], problem["message"]) for problem in caught.value.problems] == BROKEN_PROBLEMS


# -- run.py -------------------------------------------------------------------------------------------

def run_py(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_run_py_validate(tmp_path):
    good = write(tmp_path, VALID_YAML, "good.yaml")
    bad = write(tmp_path, "name: x\nsteps: [{name: get, type: http_request, config: {uri: 'http://a.example'}}]",
                "bad.yaml")
    env = server_env(tmp_path / "data")

    ok = run_py("validate", str(good), env=env)
    assert (ok.returncode, ok.stdout) == (0, f"{good}: ok (fetch_and_report: 4 steps, interval trigger)\n")

    mixed = run_py("validate", str(good), str(bad), str(tmp_path / "missing.yaml"), env=env)
    assert mixed.returncode == 1
    assert mixed.stdout.splitlines() == [
        f"{good}: ok (fetch_and_report: 4 steps, interval trigger)",
        f"{bad}: invalid",
        "  steps[0].config.uri: unknown setting for type 'http_request'; known: data, expect_status, headers, json, "
        "method, params, timeout, url",
        "  steps[0].config.url: is required",
        f"{tmp_path / 'missing.yaml'}: invalid",
        "  (top): cannot read: No such file or directory",
    ]


def test_run_py_validate_checks_caps_and_binding_as_the_server_does(tmp_path):
    greedy = write(tmp_path, "name: x\nstep_timeout: 1000000000000\n"
                   "steps: [{name: s, type: log, config: {message: m}}]",
                   "greedy.yaml")
    unbound = write(tmp_path, "name: y\ntrigger: {type: interval, seconds: '{{ 1/0 }}'}\n"
                    "steps: [{name: s, type: log, config: {message: m}}]", "unbound.yaml")
    checked = run_py("validate", str(greedy), str(unbound), env=server_env(tmp_path / "data"))
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        f"{greedy}: invalid",
        "  step_timeout: 1000000000000 is more than WORKFLOW_MAX_STEP_TIMEOUT (86400)",
        f"{unbound}: invalid",
        "  trigger: field 'seconds': template failed: ZeroDivisionError: division by zero",
    ]


def test_run_py_validate_lists_every_problem_with_template_syntax_errors(tmp_path):
    typos = write(tmp_path, BROKEN_TEMPLATES, "typos.yaml")
    # Structure and templates at once: an unknown key does not hide the broken template beside it.
    mixed = write(tmp_path, 'name: y\nsteps: [{name: s, type: log, colour: red, config: {message: "{{ a | }}"}}]',
                  "mixed.yaml")
    checked = run_py("validate", str(typos), str(mixed), env=server_env(tmp_path / "data"))
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        f"{typos}: invalid",
        *(f"  {path}: {message}" for path, message in BROKEN_PROBLEMS),
        f"{mixed}: invalid",
        "  steps[0].colour: unknown key; a step has cache, compensate, config, depends_on, limits, name, on_failure, "
        "retries, timeout, type, when",
        "  steps[0].config.message: template syntax error: expected token 'name', got 'end of print statement'",
    ]


def test_run_py_runs_a_yaml_workflow(tmp_path):
    folder = tmp_path / "definitions"
    folder.mkdir()
    write(folder, """\
        name: greet
        inputs: {type: object, properties: {who: {type: string}}, required: [who]}
        steps:
          - {name: hello, type: log, config: {message: "hello {{ inputs.who }}"}}
          - {name: shout, type: log, config: {message: "{{ steps.hello.message | upper }}"}}
        """, "greet.yaml")
    env = server_env(tmp_path / "data", {"WORKFLOW_DEFINITIONS_PATH": str(folder)})

    done = run_py("run", "greet", "--input", '{"who": "Ann"}', env=env)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["workflow"], run["status"], run["source"]) == ("greet", "succeeded", "cli")
    assert [step["result"]["message"] for step in run["steps"]] == ["hello Ann", "HELLO ANN"]


def test_an_invalid_file_stops_start_up(tmp_path):
    folder = tmp_path / "definitions"
    folder.mkdir()
    write(folder, f"name: fine\n{ONE_STEP}", "fine.yaml")
    bad = write(folder, "name: broken\nsteps: [{name: get, type: http_request, config: {url: 'http://a', uri: x}}]",
                "broken.yaml")
    with pytest.raises(ConfigError) as caught:
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                    "WORKFLOW_DEFINITIONS_PATH": str(folder)}))
    assert str(bad) in caught.value.message
    assert "steps[0].config.uri: unknown setting for type 'http_request'" in caught.value.message


def test_a_definition_file_taking_a_python_workflows_name_stops_start_up(tmp_path):
    folder = tmp_path / "definitions"
    folder.mkdir()
    write(folder, f"name: echo\n{ONE_STEP}", "echo.yaml")
    with pytest.raises(ConfigError,
                       match=r"echo\.yaml: workflow name 'echo' is already used by tests/fixtures/workflows\.py"):
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                              "WORKFLOW_DEFINITIONS_PATH": str(folder),
                              "WORKFLOW_MODULES": ("tests.fixtures.workflows",)}))


# -- YAML without anchors and aliases, nesting bounded (issue 12 item 6) -------------------------------------
@pytest.mark.parametrize(("text", "where", "words"), [
    ('a: &a ["x", "x"]\nb: [*a, *a]\n', "line 1 column 4", "YAML aliases are not accepted"),
    ("base: &base {type: log}\nother:\n  <<: *base\n", "line 1 column 7", "YAML aliases are not accepted"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", "line 1 column 67", "YAML nested deeper than 64 levels"),
])
def test_yaml_aliases_and_deep_nesting_are_refused(text, where, words):
    with pytest.raises(DefinitionError) as caught:
        parse(text, "request.yaml")
    [problem] = caught.value.problems
    assert problem["path"] == where
    assert problem["message"].startswith(f"not valid YAML: {words}")


def test_a_json_definition_is_parsed_with_the_json_bounds():
    with pytest.raises(DefinitionError, match="NaN is not a JSON number"):
        parse('{"name": "x", "retry_delay": NaN}', "x.json")


# -- steps that park cannot be among a loop's steps ------------------------------------------------------------
# A loop holding an approval, and in a loop of its own a wait_for_event: both refused where they stand.
PARKING_IN_A_LOOP = {"name": "orders", "steps": [
    {"name": "fetch", "type": "log", "config": {"message": "fetching"}},
    {"name": "each", "type": "loop", "config": {"items": [1, 2], "steps": [
        {"name": "note", "type": "log", "config": {"message": "{{ item }}"}},
        {"name": "ok", "type": "approval", "config": {"to": "boss@example.org"}},
        {"name": "inner", "type": "loop", "config": {"items": [1], "steps": [
            {"name": "paid", "type": "wait_for_event", "config": {"event": "order.paid"}}]}}]}}]}
PARKING_WHY = ("cannot be inside a loop's steps: approval and wait_for_event steps wait by parking the run (no "
               "thread held, across restarts), which only a workflow's own steps can do, not the steps a loop runs "
               "on its thread for each item; put it before or after the loop (a wait step may be inside: it sleeps "
               "on the loop's thread)")
PARKING_PROBLEMS = [
    {"path": "steps[1].config.steps[1].type", "message": f"'approval' {PARKING_WHY}"},
    {"path": "steps[1].config.steps[2].config.steps[0].type", "message": f"'wait_for_event' {PARKING_WHY}"},
]


def test_a_step_that_parks_inside_a_loop_is_refused_when_the_definition_is_posted(client):
    for response in (client.post("/api/workflows/validate", json=PARKING_IN_A_LOOP),
                     client.post("/api/workflows", json=PARKING_IN_A_LOOP)):
        assert response.status_code == 422
        assert response.get_json()["error"]["details"] == PARKING_PROBLEMS
    assert client.get("/api/workflows/orders").status_code == 404
    # Nor can an edit move one into a loop: the saved version stays.
    first = {"name": "orders", "steps": PARKING_IN_A_LOOP["steps"][:1]}
    assert client.post("/api/workflows", json=first).status_code == 201
    edited = client.put("/api/workflows/orders", json=PARKING_IN_A_LOOP)
    assert edited.status_code == 422
    assert edited.get_json()["error"]["details"] == PARKING_PROBLEMS
    assert [step["name"] for step in client.get("/api/workflows/orders").get_json()["definition"]["steps"]] == ["fetch"]


def test_a_loop_of_ordinary_steps_and_a_wait_is_still_accepted(client):
    definition = {"name": "orders", "steps": [{"name": "each", "type": "loop", "config": {"items": [1, 2], "steps": [
        {"name": "note", "type": "log", "config": {"message": "{{ item }}"}},
        {"name": "settle", "type": "wait", "config": {"seconds": 0}}]}}]}
    assert client.post("/api/workflows/validate", json=definition).get_json() == {"valid": True}
    assert client.post("/api/workflows", json=definition).status_code == 201
    run = client.post("/api/workflows/orders/runs?wait=10", json={"inputs": {}}).get_json()
    assert run["status"] == "succeeded", run
    assert [sorted(item) for item in run["steps"][0]["result"]["results"]] == [["note", "settle"]] * 2


def test_run_py_validate_names_a_step_that_parks_inside_a_loop(tmp_path):
    path = write(tmp_path, yaml.safe_dump(PARKING_IN_A_LOOP), "orders.yaml")
    checked = run_py("validate", str(path), env=server_env(tmp_path / "data"))
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        f"{path}: invalid", *(f"  {problem['path']}: {problem['message']}" for problem in PARKING_PROBLEMS)]


def test_a_python_workflows_loop_holding_an_approval_is_refused_when_bound():
    from actions.loop import LoopAction
    from app.core.binding import BoundWorkflow
    from app.core.config import load_settings
    from app.core.templating import Renderer
    from workflows.base import Workflow

    class Orders(Workflow):
        name = "orders"
        actions = [LoopAction("each", items=[1], steps=[
            {"name": "inner", "type": "loop", "config": {"items": [1], "steps": [
                {"name": "ok", "type": "approval", "config": {}}]}}])]

    with pytest.raises(ConfigError) as caught:
        BoundWorkflow.bind(Orders, {**load_settings({}), **TEST_SETTINGS}, Renderer())
    assert caught.value.message == (f"workflow 'orders': step 'each': steps[0].config.steps[0].type: "
                                    f"'approval' {PARKING_WHY}")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


NIGHTLY_REPORT = """\
name: nightly_report
trigger: {{type: email, host: 127.0.0.1, port: {port}, user: reports, security: ssl, ca_file: ca.pem}}
steps:
  - {{name: say, type: log, config: {{message: "{{{{ trigger_data.subject }}}}"}}}}
"""


def test_a_posted_definitions_failing_trigger_is_named_after_the_workflow(client, runtime, storage, caplog):
    # Every definition's trigger was named 'trigger': its errors read "email trigger 'trigger': ...", naming nothing.
    (storage / "files").mkdir(parents=True, exist_ok=True)
    (storage / "files" / "ca.pem").write_text("not a certificate\n")  # there when bound; unusable when polled
    created = client.post("/api/workflows", data=NIGHTLY_REPORT.format(port=closed_port()),
                          content_type="application/yaml")
    assert created.status_code == 201, created.get_json()
    with caplog.at_level(logging.WARNING, logger="app.core.runtime"):
        assert client.post("/api/workflows/nightly_report/start").status_code == 200
        wait_until(lambda: (runtime.summary("nightly_report")["last_poll"] or {}).get("error"), message="a failed poll")
    error = runtime.summary("nightly_report")["last_poll"]["error"]
    assert error.startswith("email trigger 'nightly_report': cannot read ca_file "), error
    assert re.search(r"polling nightly_report failed \(1 in a row, .*\): email trigger 'nightly_report': cannot read "
                     r"ca_file ", caplog.text), caplog.text
    assert "'trigger'" not in caplog.text
    assert runtime.summary("nightly_report")["trigger"]["name"] == "nightly_report"


def test_a_refused_trigger_setting_of_a_posted_definition_names_the_workflow(client):
    response = client.post("/api/workflows/validate", json={
        "name": "nightly_report", "trigger": {"type": "cron", "schedule": "every night"},
        "steps": [{"name": "say", "type": "log", "config": {"message": "hi"}}]})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "trigger.schedule",
         "message": "trigger 'nightly_report': schedule must be a cron expression of five fields (minute hour "
                    "day-of-month month day-of-week), such as '0 8 * * 1-5', got 'every night'"}]
