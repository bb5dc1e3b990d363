"""The designer's server side (issue 18): validate, layout, versions, If-Match conflicts, the catalog's additions."""

from __future__ import annotations

import threading

import jsonschema
import pytest

from app import create_app, start_app
from app.api.openapi import document
from app.storage.json.store import JsonStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS

SECRET = "s3cr3t-Value-9f1c"

HELLO = {
    "name": "hello",
    "description": "Says hello.",
    "steps": [{"name": "say", "type": "log", "config": {"message": "hello"}},
              {"name": "then", "type": "log", "depends_on": ["say"], "config": {"message": "then"}}],
    "layout": {"say": [10, 20], "then": [10.5, 140], "@trigger": [0, -80]},
}


def with_message(message: str, **extra) -> dict:
    """HELLO with the first step's message changed."""
    steps = [{**HELLO["steps"][0], "config": {"message": message}}, HELLO["steps"][1]]
    return {**HELLO, "steps": steps, **extra}


def error_of(response) -> dict:
    return response.get_json()["error"]


def create(client, definition: dict) -> dict:
    response = client.post("/api/workflows", json=definition)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# -- POST /api/workflows/validate ---------------------------------------------------------------------
def test_validate_accepts_a_valid_definition_and_stores_nothing(client):
    response = client.post("/api/workflows/validate", json=HELLO)
    assert (response.status_code, response.get_json()) == (200, {"valid": True})
    assert client.get("/api/workflows/hello").status_code == 404
    assert "hello" not in [summary["name"] for summary in client.get("/api/workflows").get_json()["workflows"]]


def test_validate_lists_each_problem_with_its_path_and_stores_nothing(client):
    response = client.post("/api/workflows/validate", json={"name": "broken", "steps": [
        {"name": "get", "type": "http_request", "config": {"uri": "http://a.example"}},
        {"name": "after", "type": "log", "depends_on": ["nope"], "config": {"message": "{{ inputs.x | }}"}}]})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    paths = [problem["path"] for problem in error["details"]]
    assert "steps[1].depends_on" in paths and "steps[1].config.message" in paths
    assert any(path.startswith("steps[0].config") for path in paths)
    assert client.get("/api/workflows/broken").status_code == 404


def test_validate_does_not_check_that_the_name_is_free(client):
    create(client, HELLO)
    assert client.post("/api/workflows/validate", json=with_message("changed")).get_json() == {"valid": True}
    # A file workflow's name too: the designer opens a copy of it.
    file_copy = {"name": "notification_flow", "steps": [{"name": "s", "type": "log", "config": {"message": "x"}}]}
    assert client.post("/api/workflows/validate", json=file_copy).status_code == 200
    assert client.get("/api/workflows/hello").get_json()["version"] == 1


def test_validate_refuses_a_python_function_outside_the_allow_list_at_its_field(client):
    definition = {"name": "sneaky", "steps": [
        {"name": "ok", "type": "python", "config": {"function": "workflows.library.analysis:analyse_text"}},
        {"name": "run", "type": "loop", "config": {"items": [1], "steps": [
            {"name": "inner", "type": "python", "config": {"function": "os:system", "kwargs": {"command": "id"}}}]}},
        {"name": "later", "type": "python", "config": {"function": "{{ inputs.f }}"}},  # checked when it runs
    ]}
    response = client.post("/api/workflows/validate", json=definition)
    assert response.status_code == 422
    details = error_of(response)["details"]
    assert [problem["path"] for problem in details] == ["steps[1].config.steps[0].config.function"]
    assert "module 'os' is not allowed" in details[0]["message"]
    assert "WORKFLOW_PYTHON_MODULES" in details[0]["message"]
    assert client.post("/api/workflows", json=definition).status_code == 422
    assert client.get("/api/workflows/sneaky").status_code == 404


def test_validate_names_the_field_of_a_badly_shaped_python_function_once(client):
    definition = {"name": "shapes", "steps": [
        {"name": "top", "type": "python", "config": {"function": "os.system"}},
        {"name": "each", "type": "loop", "config": {"items": [1], "steps": [
            {"name": "inner", "type": "python", "config": {"function": "a:b.c"}}]}},
        {"name": "undo", "type": "log", "config": {"message": "hi"},
         "compensate": {"type": "python", "config": {"function": "os:_exit"}}},
    ]}
    response = client.post("/api/workflows/validate", json=definition)
    assert response.status_code == 422
    details = error_of(response)["details"]
    assert [problem["path"] for problem in details] == [
        "steps[0].config.function", "steps[1].config.steps[0].config.function", "steps[2].compensate.config.function"]
    assert all("function must look like 'package.module:function'" in problem["message"] for problem in details)


def test_validate_takes_yaml_and_names_line_and_column_of_a_syntax_error(client):
    good = "name: hello\nsteps:\n  - {name: say, type: log, config: {message: hi}}\n"
    response = client.post("/api/workflows/validate", data=good, content_type="application/yaml")
    assert response.get_json() == {"valid": True}
    bad = "name: hello\nsteps:\n  - {name: say, type: log, config: {message: hi}\n  - oops: [\n"
    response = client.post("/api/workflows/validate", data=bad, content_type="application/yaml")
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert "line 4" in message and "column" in message, message


def test_validate_names_line_and_column_of_malformed_json(client):
    response = client.post("/api/workflows/validate", data='{"name": "x",\n "steps": [}',
                           content_type="application/json")
    assert response.status_code == 400
    assert "line 2 column" in error_of(response)["message"]


def test_validate_keeps_a_redacted_secret_of_the_stored_workflow(client):
    definition = {"name": "caller", "steps": [{"name": "get", "type": "http_request", "config": {
        "url": "http://127.0.0.1:9/x", "headers": {"X-Api-Key": SECRET}}}]}
    create(client, definition)
    read_back = client.get("/api/workflows/caller").get_json()["definition"]
    assert read_back["steps"][0]["config"]["headers"]["X-Api-Key"] == "***"
    assert client.post("/api/workflows/validate", json=read_back).get_json() == {"valid": True}


# -- layout ----------------------------------------------------------------------------------------
def test_layout_is_kept_by_the_api_and_ignored_by_the_engine(client):
    created = create(client, HELLO)
    assert created["definition"]["layout"] == HELLO["layout"]
    assert client.get("/api/workflows/hello").get_json()["definition"]["layout"] == HELLO["layout"]
    run = client.post("/api/workflows/hello/runs?wait=10", json={}).get_json()
    assert run["status"] == "succeeded"
    assert [(step["name"], step["status"]) for step in run["steps"]] == [("say", "succeeded"), ("then", "succeeded")]
    without = client.put("/api/workflows/hello", json={key: value for key, value in HELLO.items() if key != "layout"})
    assert without.status_code == 200 and "layout" not in without.get_json()["definition"]


@pytest.mark.parametrize(("layout", "path", "words"), [
    ({"nope": [0, 0]}, "layout.nope", "not a step of this definition"),
    ({"say": [0]}, "layout.say", "two finite numbers"),
    ({"say": ["1", 2]}, "layout.say", "two finite numbers"),
    ({"say": [True, 2]}, "layout.say", "two finite numbers"),
    ({"say": [0, 2e6]}, "layout.say", "within ±1e+06"),
    ({"@trigger": {"x": 1}}, "layout.@trigger", "two finite numbers"),
    ([[0, 0]], "layout", "must be a mapping"),
])
def test_a_bad_layout_is_refused_with_its_path(client, layout, path, words):
    response = client.post("/api/workflows", json={**HELLO, "layout": layout})
    assert response.status_code == 422
    details = error_of(response)["details"]
    assert [problem["path"] for problem in details] == [path]
    assert words in details[0]["message"]
    assert client.post("/api/workflows/validate", json={**HELLO, "layout": layout}).status_code == 422


def test_infinite_layout_numbers_are_refused(client):
    # JSON has no Infinity, YAML has .inf.
    text = "name: hello\nsteps:\n  - {name: say, type: log, config: {message: hi}}\nlayout: {say: [.inf, 0]}\n"
    response = client.post("/api/workflows/validate", data=text, content_type="application/yaml")
    assert response.status_code == 422
    assert error_of(response)["details"][0]["path"] == "layout.say"


# -- size and step caps --------------------------------------------------------------------------------
def test_a_definition_over_the_size_limit_is_refused_naming_the_limit(client):
    big = {"name": "big", "steps": [{"name": "say", "type": "log", "config": {"message": "x" * 600_000}}]}
    response = client.post("/api/workflows", json=big)
    assert response.status_code == 413
    assert "WORKFLOW_MAX_DEFINITION_KB (512 KB)" in error_of(response)["message"]
    response = client.post("/api/workflows/validate", json=big)
    assert response.status_code == 413
    assert client.get("/api/workflows/big").status_code == 404


def test_a_definition_over_the_size_limit_as_json_is_refused_with_422(tmp_path, storage, key_file):
    # A YAML body under the limit whose definition, as compact JSON, is over it: the same measure for every form.
    (tmp_path / "no_files").mkdir()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_KEY_FILE":
                                str(key_file), "WORKFLOW_CLASSES": WORKFLOWS, "WORKFLOW_MAX_DEFINITION_KB": 1,
                                "WORKFLOW_DEFINITIONS_PATH": str(tmp_path / "no_files")}))
    try:
        text = "name: big\nsteps:\n" + "".join(f"- {{name: s{i}, type: log, config: {{message: m}}}}\n"
                                               for i in range(20))
        assert len(text.encode()) < 1024
        response = app.test_client().post("/api/workflows", data=text, content_type="application/yaml")
        assert response.status_code == 422, response.get_json()
        assert "more than WORKFLOW_MAX_DEFINITION_KB (1 KB)" in error_of(response)["details"][0]["message"]
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_more_steps_than_the_cap_are_refused(client):
    steps = [{"name": f"s{i}", "type": "log", "config": {"message": "m"}} for i in range(501)]
    response = client.post("/api/workflows/validate", json={"name": "many", "steps": steps})
    assert response.status_code == 422
    expected = {"path": "steps", "message": "501 steps, more than WORKFLOW_MAX_STEPS (500)"}
    assert expected in error_of(response)["details"]


# -- versions ----------------------------------------------------------------------------------------
def test_versions_are_listed_newest_first_and_each_can_be_read(client):
    create(client, HELLO)
    assert client.put("/api/workflows/hello", json=with_message("two")).status_code == 200
    assert client.put("/api/workflows/hello", json=with_message("three")).status_code == 200
    listed = client.get("/api/workflows/hello/versions").get_json()["versions"]
    assert [entry["version"] for entry in listed] == [3, 2, 1]
    assert all(set(entry) == {"version", "saved_at"} and entry["saved_at"].endswith("Z") for entry in listed)
    second = client.get("/api/workflows/hello/versions/2").get_json()
    assert {key: second[key] for key in ("name", "version")} == {"name": "hello", "version": 2}
    assert second["saved_at"] == listed[1]["saved_at"]
    assert second["definition"]["steps"][0]["config"]["message"] == "two"
    assert second["definition"]["layout"] == HELLO["layout"]


def test_restoring_a_version_is_a_put_of_its_definition(client):
    create(client, HELLO)
    client.put("/api/workflows/hello", json=with_message("two"))
    first = client.get("/api/workflows/hello/versions/1").get_json()["definition"]
    restored = client.put("/api/workflows/hello", json=first, headers={"If-Match": '"2"'})
    assert restored.status_code == 200
    assert restored.get_json()["version"] == 3
    assert restored.get_json()["definition"]["steps"][0]["config"]["message"] == "hello"


def test_versions_of_unknown_and_non_api_workflows(client):
    assert client.get("/api/workflows/nope/versions").status_code == 404
    assert client.get("/api/workflows/echo/versions").get_json() == {"versions": []}  # a Python class
    assert client.get("/api/workflows/notification_flow/versions").get_json() == {"versions": []}  # a file
    create(client, HELLO)
    for path in ("/api/workflows/hello/versions/2", "/api/workflows/hello/versions/0",
                 "/api/workflows/nope/versions/1", "/api/workflows/hello/versions/x"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"


def test_a_version_never_shows_a_secret(client):
    definition = {"name": "caller", "steps": [{"name": "get", "type": "http_request", "config": {
        "url": "http://127.0.0.1:9/x", "headers": {"X-Api-Key": SECRET}}}]}
    create(client, definition)
    response = client.get("/api/workflows/caller/versions/1")
    assert response.status_code == 200
    assert SECRET not in response.get_data(as_text=True)
    assert response.get_json()["definition"]["steps"][0]["config"]["headers"]["X-Api-Key"] == "***"


# -- ETag and If-Match ------------------------------------------------------------------------------------
def test_get_answers_the_version_as_etag(client):
    created = client.post("/api/workflows", json=HELLO)
    assert created.headers["ETag"] == '"1"'
    assert client.get("/api/workflows/hello").headers["ETag"] == '"1"'
    assert "ETag" not in client.get("/api/workflows/echo").headers  # a Python workflow has no version
    summary = client.get("/api/workflows/hello").get_json()
    assert (summary["version"], summary["origin"]) == (1, "api")
    assert client.get("/api/workflows/notification_flow").get_json()["origin"] == "file"
    assert client.get("/api/workflows/echo").get_json()["origin"] == "python"


@pytest.mark.parametrize("if_match", ['"1"', "1", 'W/"1"', "*"])
def test_a_put_with_the_current_version_is_stored(client, if_match):
    create(client, HELLO)
    response = client.put("/api/workflows/hello", json=with_message("two"), headers={"If-Match": if_match})
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'


def test_a_put_of_an_older_version_is_a_conflict_with_the_diff_and_stores_nothing(client):
    definition = {**HELLO, "steps": [*HELLO["steps"], {"name": "get", "type": "http_request", "depends_on": [],
                                                       "config": {"url": "http://127.0.0.1:9/x",
                                                                  "headers": {"X-Api-Key": SECRET}}}]}
    create(client, definition)
    edited = client.get("/api/workflows/hello").get_json()["definition"]  # what one user opened (v1)
    other = {**edited, "description": "Changed by someone else."}
    assert client.put("/api/workflows/hello", json=other, headers={"If-Match": '"1"'}).status_code == 200

    mine = {**edited, "description": "My change."}
    response = client.put("/api/workflows/hello", json=mine, headers={"If-Match": '"1"'})
    assert response.status_code == 409
    assert SECRET not in response.get_data(as_text=True)
    error = error_of(response)
    assert error["code"] == "conflict"
    assert error["message"] == "workflow 'hello' is at version 2; you edited version 1"
    details = error["details"]
    assert (details["version"], details["base"]) == (2, 1)
    assert details["definition"]["description"] == "Changed by someone else."
    assert details["definition"]["steps"][2]["config"]["headers"]["X-Api-Key"] == "***"
    assert "--- hello v1" in details["diff"] and "+++ hello v2" in details["diff"]
    assert "-description: Says hello." in details["diff"]
    assert "+description: Changed by someone else." in details["diff"]
    assert [entry["version"] for entry in client.get("/api/workflows/hello/versions").get_json()["versions"]] == [2, 1]
    assert client.get("/api/workflows/hello").get_json()["description"] == "Changed by someone else."


def test_a_malformed_if_match_is_a_bad_request(client):
    create(client, HELLO)
    response = client.put("/api/workflows/hello", json=HELLO, headers={"If-Match": '"abc"'})
    assert response.status_code == 400
    assert "If-Match" in error_of(response)["message"]
    assert client.get("/api/workflows/hello").get_json()["version"] == 1


def test_a_put_without_if_match_still_wins(client):
    create(client, HELLO)
    client.put("/api/workflows/hello", json=with_message("two"))
    assert client.put("/api/workflows/hello", json=with_message("three")).get_json()["version"] == 3


def test_two_concurrent_puts_of_the_same_version_one_wins(app, client):
    create(client, HELLO)
    barrier = threading.Barrier(4)
    answers: list[tuple[int, dict]] = []

    def put(n: int) -> None:
        own = app.test_client()
        barrier.wait()
        response = own.put("/api/workflows/hello", json=with_message(f"writer {n}"), headers={"If-Match": '"1"'})
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in answers) == [200, 409, 409, 409]
    winner = next(body for status, body in answers if status == 200)
    assert winner["version"] == 2
    assert client.get("/api/workflows/hello/versions").get_json()["versions"][0]["version"] == 2
    assert client.get("/api/workflows/hello").get_json()["definition"] == winner["definition"]


# -- GET /api/catalog's additions ----------------------------------------------------------------------
def enum_of(schema: dict) -> list:
    """The fixed choices of a config property (beside the template its anyOf allows)."""
    return schema.get("enum") or next((part["enum"] for part in schema.get("anyOf", []) if "enum" in part), [])


def test_catalog_lists_the_keys_every_step_may_carry(client):
    step_keys = client.get("/api/catalog").get_json()["step_keys"]
    properties = step_keys["properties"]
    assert set(properties) == {"depends_on", "when", "retries", "timeout", "on_failure", "compensate", "cache",
                               "limits"}
    assert all(properties[key]["description"] for key in properties)
    assert properties["retries"] == {**properties["retries"], "type": "integer", "minimum": 0}
    assert properties["on_failure"]["anyOf"][0] == {"enum": ["fail", "continue"]}
    assert set(properties["cache"]["properties"]) == {"ttl", "key"}
    assert set(properties["limits"]["properties"]) == {"cpu_seconds", "memory_mb", "output_kb", "processes"}
    assert "shell" in properties["limits"]["description"]


def test_catalog_names_each_actions_result_keys_and_the_caps(client):
    catalog = client.get("/api/catalog").get_json()
    results = {row["type"]: row["results"] for row in catalog["actions"]}
    assert results["http_request"] == ["status_code", "headers", "json", "text", "elapsed_ms", "body_base64"]
    assert results["shell"] == ["exit_code", "stdout", "stderr"]
    assert results["condition"] == ["result", "value"]
    assert results["python"] == []  # whatever its function returns
    assert all(isinstance(keys, list) for keys in results.values())
    assert all("results" not in row for row in catalog["triggers"])
    assert catalog["limits"] == {"max_definition_bytes": 512 * 1024, "max_steps": 500}


def test_catalog_result_keys_are_what_the_steps_return(client):
    definition = {"name": "shapes", "steps": [
        {"name": "say", "type": "log", "config": {"message": "hi"}},
        {"name": "check", "type": "condition", "depends_on": [], "config": {"condition": {"type": "exists",
                                                                                          "left": "x"}}},
        {"name": "nap", "type": "wait", "depends_on": [], "config": {"seconds": 0}},
        {"name": "shaped", "type": "transform", "depends_on": [], "config": {"operation": "dedupe", "data": [1, 1]}}]}
    create(client, definition)
    run = client.post("/api/workflows/shapes/runs?wait=10", json={}).get_json()
    assert run["status"] == "succeeded", run
    results = {row["type"]: row["results"] for row in client.get("/api/catalog").get_json()["actions"]}
    for step in run["steps"]:
        assert set(step["result"]) <= set(results[step["type"]]), step


@pytest.mark.parametrize(("action", "field", "choices"), [
    ("approval", "on_timeout", ["reject", "approve"]),
    ("wait_for_event", "on_timeout", ["fail", "continue"]),
    ("http_request", "method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    ("file", "operation", ["read", "write", "append", "copy", "move", "delete", "list", "glob"]),
    ("transform", "operation", ["csv_to_json", "json_to_csv", "filter", "map", "sort", "group", "aggregate",
                                "dedupe"]),
    ("notify", "format", ["text", "markdown", "html"]),
    ("log", "level", ["debug", "info", "warning", "error"]),
    ("pdf_text", "ocr", ["auto", "always", "never"]),
    ("extract_pdf_data", "ocr", ["auto", "always", "never"]),
])
def test_catalog_fixed_choices_are_enums(client, action, field, choices):
    rows = {row["type"]: row for row in client.get("/api/catalog").get_json()["actions"]}
    assert enum_of(rows[action]["config_schema"]["properties"][field]) == choices


def test_catalog_condition_type_is_an_enum(client):
    rows = {row["type"]: row for row in client.get("/api/catalog").get_json()["actions"]}
    condition = rows["condition"]["config_schema"]["properties"]["condition"]
    shape = next(part for part in condition["anyOf"] if part.get("type") == "object")
    assert shape["properties"]["type"]["enum"] == ["eq", "ne", "gt", "ge", "lt", "le", "contains", "matches", "in",
                                                   "exists"]


def test_an_http_method_outside_the_enum_fails_the_step_naming_the_choices(client):
    definition = {"name": "odd", "steps": [{"name": "get", "type": "http_request", "config": {
        "url": "http://127.0.0.1:9/", "method": "FETCH"}}]}
    create(client, definition)
    run = client.post("/api/workflows/odd/runs?wait=10", json={}).get_json()
    assert run["status"] == "failed"
    assert "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, got 'FETCH'" in run["steps"][0]["error"]
    assert run["steps"][0]["attempts"] == 1  # not retried


def test_a_version_number_past_what_a_store_holds_is_404(client):
    create(client, HELLO)
    assert client.get(f"/api/workflows/hello/versions/{2**31}").status_code == 404
    assert client.get(f"/api/workflows/hello/versions/{10**30}").status_code == 404
    response = client.put("/api/workflows/hello", json=HELLO, headers={"If-Match": '"999999999"'})
    assert response.status_code == 409
    assert error_of(response)["details"]["base"] == 999999999


def test_two_servers_on_one_database_store_one_of_two_puts_of_the_same_version(tmp_path, postgres_url):
    # Each server has its own catalog lock; the store's check as it saves lets one of them in.
    apps = []
    try:
        for name in ("one", "two"):
            apps.append(start_app(create_app({
                **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / name), "WORKFLOW_CLASSES": WORKFLOWS,
                "WORKFLOW_KEY_FILE": str(tmp_path / "encryption.key"), "WORKFLOW_DATABASE_URL": postgres_url})))
            if name == "one":
                create(apps[0].test_client(), HELLO)
        barrier = threading.Barrier(2)
        answers: list[tuple[int, dict]] = []

        def put(n: int) -> None:
            client = apps[n].test_client()
            barrier.wait(10)
            response = client.put("/api/workflows/hello", json=with_message(f"server {n}"), headers={"If-Match": "1"})
            answers.append((response.status_code, response.get_json()))

        threads = [threading.Thread(target=put, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(status for status, _ in answers) == [200, 409], answers
        conflict = next(body for status, body in answers if status == 409)["error"]
        assert conflict["details"]["version"] == 2 and conflict["details"]["base"] == 1
        listed = apps[1].test_client().get("/api/workflows/hello/versions").get_json()["versions"]
        assert [entry["version"] for entry in listed] == [2, 1]
    finally:
        for app in apps:
            app.extensions["pyflow"].shutdown(timeout=2)


# -- a stored definition that no longer loads (a plugin's type is gone) -----------------------------------------
GONE = {"name": "loud", "description": "Shouts.", "steps": [
    {"name": "shout", "type": "shout", "depends_on": [], "config": {"text": "hello"}},
    {"name": "after", "type": "log", "depends_on": ["shout"], "config": {"message": "{{ steps.shout.text }}"}}],
    "layout": {"shout": [0, 0], "after": [0, 120]}}


@pytest.fixture
def gone(storage, key_file):
    """An app whose store holds ``GONE``, saved while a plugin gave its ``shout`` type (two versions)."""
    store = JsonStore(storage)
    store.save_definition("loud", {**GONE, "description": "First."})
    store.save_definition("loud", GONE)
    store.close()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_CLASSES": WORKFLOWS}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


def test_a_definition_whose_type_is_gone_is_shown_so_the_designer_can_fix_it(gone):
    client = gone.test_client()
    assert "loud" not in [summary["name"] for summary in client.get("/api/workflows").get_json()["workflows"]]
    response = client.get("/api/workflows/loud")
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    summary = response.get_json()
    assert {key: summary[key] for key in ("name", "origin", "version", "status")} == {
        "name": "loud", "origin": "api", "version": 2, "status": "stopped"}
    assert summary["definition"] == GONE
    assert "shout" in summary["error"] and summary["actions"][0] == {"name": "shout", "type": "shout"}
    documented = {"$ref": "#/components/schemas/Summary", "components": document()["components"]}
    assert list(jsonschema.Draft202012Validator(documented).iter_errors(summary)) == []  # the Summary's shape
    assert [entry["version"] for entry in client.get("/api/workflows/loud/versions").get_json()["versions"]] == [2, 1]
    assert client.get("/api/workflows/loud/versions/1").get_json()["definition"]["description"] == "First."
    assert client.post("/api/workflows/loud/runs", json={}).status_code == 404  # still not served
    page = client.get("/designer/loud")
    assert page.status_code == 200 and 'data-workflow="loud"' in page.text and 'data-version="2"' in page.text


def test_a_put_that_fixes_a_definition_whose_type_is_gone_serves_it_again(gone):
    client = gone.test_client()
    still_broken = client.put("/api/workflows/loud", json=GONE, headers={"If-Match": '"2"'})
    assert still_broken.status_code == 422
    assert error_of(still_broken)["details"][0]["path"] == "steps[0].type"
    fixed = {**GONE, "steps": [{"name": "shout", "type": "log", "depends_on": [], "config": {"message": "HELLO"}},
                               {**GONE["steps"][1], "config": {"message": "{{ steps.shout.message }}"}}]}
    assert client.put("/api/workflows/loud", json=fixed, headers={"If-Match": '"1"'}).status_code == 409
    response = client.put("/api/workflows/loud", json=fixed, headers={"If-Match": '"2"'})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["version"] == 3 and response.get_json()["error"] is None
    run = client.post("/api/workflows/loud/runs?wait=10", json={}).get_json()
    assert run["status"] == "succeeded" and run["steps"][1]["result"] == {"message": "HELLO"}
