"""Schemathesis against a real run.py: every operation of GET /api/openapi.json, property-based and deterministic.

Each answer must be documented (status, content type, headers, body schema), never a 5xx, and every
error the JSON error body. Examples per operation are bounded and derandomized, so CI never flakes.
"""

from __future__ import annotations

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.api.openapi import document
from tests.server import Servers

pytestmark = pytest.mark.slow

TOKEN = "fuzz-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 50  # per operation and mode: about two minutes for the module on two busy cores
ERROR = jsonschema.Draft202012Validator({**document()["components"]["schemas"]["Error"],
                                         "$schema": "https://json-schema.org/draft/2020-12/schema"})
SERVER: dict[str, object] = {}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# What the fixture makes, so the fuzzer also reaches real workflows, runs, secrets and tokens, not only 404s.
DEFINITION = {"name": "fuzzed", "trigger": {"type": "interval", "seconds": 3600},
              "steps": [{"name": "say", "type": "log", "config": {"message": "{{ inputs }}"}}]}
KNOWN = {"secret": "FUZZ_SECRET", "token": "fuzz-viewer", "hook": "hook", "run_workflow": "echo"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    """The document as a started run.py serves it, with an admin token (destructive calls hit only this server)."""
    with Servers(tmp_path_factory.mktemp("fuzz")) as servers:
        server = servers.start(env={"WORKFLOW_API_TOKEN": TOKEN})
        SERVER["server"] = server
        for method, path, body in (("POST", "/api/workflows", DEFINITION), ("POST", "/api/workflows/hook/start", None),
                                   ("PUT", f"/api/secrets/{KNOWN['secret']}", {"value": "fuzz-value"}),
                                   ("POST", "/api/tokens", {"name": KNOWN["token"], "role": "viewer"})):
            answer = requests.request(method, server.url + path, json=body, headers=AUTH, timeout=10)
            assert answer.status_code in (200, 201), answer.text
        run = server.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"x": 1}}, headers=AUTH).json()
        SERVER["run_id"] = run["id"]
        schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json", headers=AUTH, timeout=10)
        schema.config.update(base_url=server.url, headers=AUTH, request_timeout=20)
        schema.config.generation.update(max_examples=EXAMPLES, deterministic=True, database="none")
        yield schema
        server.stop()


def error_body(ctx, response, case) -> None:
    """Every answer of 400 or more is {"error": {"code", "message", "details"?}} as JSON."""
    if response.status_code < 400:
        return None
    content_type = next((values[0] for name, values in response.headers.items() if name.lower() == "content-type"), "")
    assert content_type.startswith("application/json"), (
        f"{case.method} {case.formatted_path} answered {response.status_code} as {content_type!r}: "
        f"{response.text[:200]!r}")
    problems = [error.message for error in ERROR.iter_errors(response.json())]
    assert not problems, f"{case.method} {case.formatted_path}: {response.status_code} body {response.text[:300]!r}"
    return None


def server_log() -> str:
    server = SERVER.get("server")
    return server.stderr[-4000:] if server is not None else ""




def known(path: str) -> dict[str, str] | None:
    """Path parameters naming what the fixture made (None for a path without any)."""
    if "{run_id}" in path:
        return {"run_id": SERVER["run_id"]}
    if "{name}" not in path:
        return None
    if path.startswith("/api/secrets/"):
        return {"name": KNOWN["secret"]}
    if path.startswith("/api/tokens/"):
        return {"name": KNOWN["token"]}
    if path.startswith("/api/hooks/"):
        return {"name": KNOWN["hook"]}
    if "{version}" in path:
        return {"name": DEFINITION["name"], "version": 1}  # the fixture made version 1
    return {"name": KNOWN["run_workflow"] if path.endswith("/runs") else DEFINITION["name"]}


def cases() -> list:
    """(method, path, mode, target) of every operation; DELETEs last, so the others still find what they delete.

    Modes: positive, and negative where something can be made invalid. Targets: "any" generates the path
    parameters too (mostly 404s), "known" fixes them to what the fixture made and fuzzes the rest.
    """
    found = []
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            parameters = [*item.get("parameters", ()), *op.get("parameters", ())]
            targets = ["any", "known"] if any(parameter["in"] == "path" for parameter in parameters) else ["any"]
            for target in targets:
                negatable = "requestBody" in op or any(
                    parameter["in"] != "path" or target == "any" for parameter in parameters)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negatable else (
                        GenerationMode.POSITIVE,):
                    found.append(pytest.param(method.upper(), path, mode, target,
                                              id=f"{method.upper()} {path} {mode.value} {target}"))
    return sorted(found, key=lambda case: case.values[0] == "DELETE")


# Plain parametrize and @given rather than schemathesis.pytest: its plugin reads pytest internals that
# pytest 9.2 no longer has. One test per operation and mode, so a failure names both.
@pytest.mark.parametrize(("method", "path", "mode", "target"), cases())
def test_every_operation_answers_as_documented(api_schema, method, path, mode, target):
    operation = api_schema[path][method]
    fixed = known(path) if target == "known" else None

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_documented(case):
        try:
            case.call_and_validate(checks=CHECKS, additional_checks=[error_body])
        except AssertionError:
            print(f"server log (tail):\n{server_log()}")
            raise

    answers_as_documented()


@pytest.mark.parametrize(("method", "path"), sorted({case.values[:2] for case in cases()},
                                                     key=lambda key: (key[0] == "DELETE", key)),
                         ids=lambda value: value)
def test_every_operation_answers_its_boundary_cases_as_documented(api_schema, method, path):
    """Schemathesis' coverage phase: a fixed list of boundary and invalid values for each parameter and body."""
    operation = api_schema[path][method]
    generated = api_schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                               generation_config=api_schema.config.generation)
    fixed = known(path)
    for case in generated:
        targets = [case.path_parameters] + ([fixed] if fixed and case.method.upper() == method else [])
        for parameters in targets:
            case.path_parameters = parameters
            # The coverage phase puts an empty bearer in: ten of those lock this address out (429) for a minute.
            case.headers = {**(case.headers or {}), **AUTH}
            case.call_and_validate(checks=CHECKS, additional_checks=[error_body])
