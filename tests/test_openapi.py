"""app/api/openapi.py: the document is valid OpenAPI 3.1 and documents exactly the /api routes, with their roles."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from app.api.openapi import document
from app.api.roles import required
from app.api.tokens import digest

ANY = re.compile(r"<any\(([^)]*)\):\w+>")
VARIABLE = re.compile(r"<(?:\w+:)?(\w+)>")
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def routed(app) -> dict[tuple[str, str], str]:
    """Every (METHOD, OpenAPI path) Flask serves under /api, with its endpoint; any(...) spelled out."""
    found = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        choices = ANY.search(rule.rule)
        options = [part.strip(" '\"") for part in choices.group(1).split(",")] if choices else [None]
        for option in options:
            path = ANY.sub(option, rule.rule) if option else rule.rule
            for method in rule.methods - IGNORED_METHODS:
                found[method, VARIABLE.sub(r"{\1}", path)] = rule.endpoint
    return found


def documented() -> dict[tuple[str, str], dict]:
    """Every (METHOD, path) of the document, with its operation."""
    return {(method.upper(), path): op for path, item in document()["paths"].items()
            for method, op in item.items() if method != "parameters"}


def test_the_document_is_valid_openapi_3_1():
    spec = document()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_api_route_is_documented_and_every_documented_operation_is_routed(app):
    routes, operations = routed(app), documented()
    assert sorted(set(routes) - set(operations)) == [], "routes missing from app/api/openapi.py paths()"
    assert sorted(set(operations) - set(routes)) == [], "documented operations that no route serves"
    wrong = {key: (op["x-pyflow-endpoint"], routes[key]) for key, op in operations.items()
             if op["x-pyflow-endpoint"] != routes[key]}
    assert wrong == {}


def test_each_operation_names_the_role_it_needs_from_the_role_table():
    for (method, path), op in documented().items():
        if path == "/api/health" or path.startswith("/api/hooks/"):
            assert (op["x-pyflow-role"], op["security"]) == ("open", []), path
        else:
            assert op["x-pyflow-role"] == required(op["x-pyflow-endpoint"]).label, (method, path)
            assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
    ops = documented()
    assert ops["POST", "/api/workflows"]["x-pyflow-role"] == "admin"
    assert ops["POST", "/api/runs/{run_id}/cancel"]["x-pyflow-role"] == "operator"
    assert ops["GET", "/api/openapi.json"]["x-pyflow-role"] == "viewer"


def test_operation_ids_are_unique():
    ids = [op["operationId"] for op in documented().values()]
    assert len(ids) == len(set(ids))


def test_every_error_answer_is_the_error_body():
    spec = document()
    for (method, path), op in documented().items():
        for status, response in op["responses"].items():
            if int(status) >= 400:
                name = response["$ref"].rsplit("/", 1)[1]
                assert spec["components"]["responses"][name]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}, (method, path, status)


@pytest.fixture()
def secured(app):
    app.config["WORKFLOW_API_TOKEN"] = "admin-token"
    app.extensions["pyflow"].store.add_token("reader", "viewer", digest("viewer-token"))
    return app


def test_a_viewer_reads_the_document_and_nobody_without_a_token(secured):
    client = secured.test_client()
    assert client.get("/api/openapi.json").status_code == 401
    response = client.get("/api/openapi.json", headers={"Authorization": "Bearer viewer-token"})
    assert response.status_code == 200
    assert response.json == document()


def test_the_dashboard_links_to_the_document(client):
    page = client.get("/")
    assert page.status_code == 200
    assert 'href="/api/openapi.json"' in page.get_data(as_text=True)


def test_every_field_of_a_run_record_is_described_in_the_run_and_step_schemas(client):
    """A sub-run, a cached step and a compensated failure carry fields a client generator must know of."""
    schemas = document()["components"]["schemas"]
    child = {"name": "doc_child", "steps": [{"name": "hi", "type": "log", "config": {"message": "hi"}}]}
    parent = {"name": "doc_parent", "max_retries": 0, "steps": [
        {"name": "call", "type": "workflow", "config": {"workflow": "doc_child"}},
        {"name": "rates", "type": "log", "config": {"message": "rates"}, "cache": {"ttl": 60}},
        {"name": "book", "type": "log", "config": {"message": "booked"},
         "compensate": {"type": "log", "config": {"message": "undo"}}},
        {"name": "boom", "type": "file", "config": {"operation": "read", "path": "missing.txt"}}]}
    for definition in (child, parent):
        assert client.post("/api/workflows", json=definition).status_code == 201
    runs = [client.post("/api/workflows/doc_parent/runs?wait=30", json={}).get_json() for _ in range(2)]
    assert [run["status"] for run in runs] == ["failed", "failed"]
    runs.append(client.get(f"/api/runs/{runs[0]['steps'][0]['result']['run_id']}").get_json())
    keys = {key for run in runs for key in run}
    step_keys = {key for run in runs for step in run["steps"] for key in step}
    assert {"call_stack", "compensations", "version"} <= keys and {"cached_from", "completion_order"} <= step_keys
    assert sorted(keys - set(schemas["Run"]["properties"])) == []
    assert sorted(step_keys - set(schemas["Step"]["properties"])) == []


def test_the_schemas_docs_api_md_refers_to_exist():
    """docs/api.md's "Adding an endpoint" and its list of component schemas name only schemas the document has."""
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    schemas = document()["components"]["schemas"]
    named = set(re.findall(r'ref\("(\w+)"\)', page))
    listed = page.split("status and JSON Schema (", 1)[1].split(")", 1)[0].replace("\n", " ").split(", ")
    assert named and sorted((named | set(listed)) - set(schemas)) == []


def test_every_endpoint_and_status_in_the_api_page_table_is_in_the_document():
    """docs/api.md's endpoint table and the OpenAPI document agree: each row's path, method and statuses."""
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    table = page.split("| method and path | does | answers |", 1)[1].split("\n\n", 1)[0]
    paths = document()["paths"]
    problems = []
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        method, path = re.match(r"(GET|POST|PUT|PATCH|DELETE) (\S+?),?(?: |$)", cells[0]).groups()
        if not path.startswith("/api/"):
            continue  # /metrics, Prometheus text
        path = path.split("?")[0].replace("{id}", "{run_id}")
        siblings = [path.rsplit("/", 1)[0] + extra for extra in re.findall(r", (/\w+)", cells[0])]
        statuses = set(re.findall(r"\b[1-5]\d\d\b", cells[-1].replace("N ≤ 300", "")))
        for each in [path, *siblings]:
            operation = paths.get(each, {}).get(method.lower())
            if operation is None:
                problems.append(f"{method} {each}: not in the document")
            elif missing := statuses - {str(status) for status in operation["responses"]}:
                problems.append(f"{method} {each}: {sorted(missing)} not among its responses")
    assert problems == []
