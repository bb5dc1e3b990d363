"""GET /api/openapi.json: the OpenAPI 3.1 document of every /api endpoint, kept beside the routes.

To document a new endpoint add one entry to ``paths()`` (its ``endpoint`` is the Flask endpoint, so the
role comes from app/api/roles.py REQUIRED); tests/test_openapi.py fails while a Flask /api route has no
documented path and method, or a documented one has no route. Whatever every operation shares (the
bearer scheme, the role, 401/403/429, 400/413/415 for a body, 503) is added by ``document()``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from flask import Response, jsonify

from app.api.auth import is_open
from app.api.roles import required
from app.api.routes import MAX_PAGE, MAX_WAIT_SECONDS, bp
from app.api.schemas import RUN_ID_PATTERN, TIME, components, ref
from app.api.tokens import NAME as TOKEN_NAME
from app.core.events import MAX_FIELD_LENGTH
from app.core.secrets import NAME as SECRET_NAME
from workflows.base import NAME_PATTERN

logger = logging.getLogger(__name__)

VERSION = "3.1.0"
CONTROLS = ("cancel", "pause", "resume", "retry", "skip")
# The error answers every document names once, under components.responses.
ERRORS = {
    400: ("BadRequest", "malformed body or query (bad_request)"),
    401: ("Unauthorized", "no token, a wrong one, or a wrong webhook signature (unauthorized)"),
    403: ("Forbidden", "the token's role may not make this call (forbidden: the message names the role it needs;"
                       " details.required_role), or a cross-site browser request"),
    404: ("NotFound", "unknown workflow, run, secret or token (not_found)"),
    409: ("Conflict", "not allowed in the current state (conflict)"),
    413: ("TooLarge", "body larger than WORKFLOW_MAX_UPLOAD_MB (a definition: WORKFLOW_MAX_DEFINITION_KB)"),
    415: ("UnsupportedMediaType", "a content type the endpoint does not take"),
    422: ("InvalidInput", "well-formed but invalid; details list each problem as {path, message}"),
    429: ("TooManyFailures", "too many failed authentications from this address; see Retry-After"),
    502: ("BadGateway", "a trigger's server failed (trigger_failed), or a webhook's run failed (run_failed)"),
    503: ("StorageError", "the store cannot write (disk full, read-only)"),
}
LOCATION = {"Location": {"description": "the created resource", "schema": {"type": "string"}}}


def json_content(schema: dict) -> dict:
    """A JSON media type with ``schema``."""
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: dict | None = None, headers: dict | None = None) -> dict:
    """A success response: JSON ``schema``, or no body when None."""
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = json_content(schema)
    if headers:
        response["headers"] = headers
    return response


def operation(endpoint: str, summary: str, responses: dict[int, dict], *, errors: tuple[int, ...] = (),
              parameters: tuple[dict, ...] = (), body: dict | None = None, optional_body: bool = False) -> dict:
    """One operation; ``endpoint`` is the Flask endpoint that serves it, ``errors`` its own error statuses."""
    op: dict[str, Any] = {"operationId": endpoint.split(".", 1)[1], "summary": summary, "x-pyflow-endpoint": endpoint,
                          "responses": {str(status): response for status, response in responses.items()}}
    for status in errors:
        op["responses"][str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = {"required": not optional_body, "content": body}
    return op


def path_param(name: str, description: str, schema: dict | None = None) -> dict:
    """A path parameter (a string unless ``schema`` says otherwise)."""
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def query(name: str, description: str, schema: dict) -> dict:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


WORKFLOW = path_param("name", "the workflow's name", {"type": "string", "pattern": NAME_PATTERN.pattern})
RUN = path_param("run_id", "the run's id", {"type": "string", "pattern": RUN_ID_PATTERN})
SECRET = path_param("name", "the secret's name", {"type": "string", "pattern": f"^{SECRET_NAME.pattern}$"})
TOKEN = path_param("name", "the token's name", {"type": "string", "pattern": TOKEN_NAME.pattern})
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "a repeated request with the same key answers the first run and starts nothing",
                   "schema": {"type": "string", "maxLength": 255}}
LIMIT = query("limit", f"page size (1-{MAX_PAGE}, default 50)", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE})
ETAG = {"ETag": {"description": 'an API-made workflow\'s version, "3": send it back as If-Match',
                 "schema": {"type": "string"}}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False,
            "description": 'the version edited ("3"); 409 with the newest version and a diff when it is not the newest',
            "schema": {"type": "string", "pattern": '^\\s*(W/)?"?[0-9]{1,9}"?\\s*$|^\\*$'}}
REPLAYED = {"Idempotent-Replayed": {"description": "true when an earlier request with the key made the run",
                                    "schema": {"type": "string"}}}


def paths() -> dict[str, dict[str, dict]]:
    """Every /api path and method: what it takes and answers (one entry per Flask route and method)."""
    runs = {"type": "object", "required": ["runs"], "properties": {"runs": {"type": "array", "items": ref("Run")}}}
    definition_body = {**json_content(ref("Definition")),
                       "application/yaml": {"schema": {"type": "string", "description": "the definition as YAML"}}}
    run_body = {
        **json_content({"type": "object", "additionalProperties": False,
                 "properties": {"inputs": {"type": ["object", "null"], "description": "the run's trigger data"}}}),
        "multipart/form-data": {"schema": {
            "type": "object", "description": "file parts are saved and listed in trigger_data.attachments",
            "properties": {"inputs": {"type": "string", "description": "a JSON object of inputs"},
                           "file": {"type": "string", "format": "binary"}}}},
    }
    control_body = json_content({"type": "object", "properties": {"step": {"type": "string",
                                                                    "description": "the step to act on"}}})
    document: dict[str, dict[str, dict]] = {
        "/api/health": {"get": operation("api.health", "liveness", {
            200: answer("alive", {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}})
        })},
        "/api/openapi.json": {"get": operation("api.openapi", "this document", {
            200: answer("the OpenAPI 3.1 document", {"type": "object", "required": ["openapi", "paths"]})})},
        "/api/workflows": {
            "get": operation("api.list_workflows", "registered workflows", {
                200: answer("by name", {"type": "object", "required": ["workflows"],
                                        "properties": {"workflows": {"type": "array", "items": ref("Summary")}}})}),
            "post": operation("api.create_workflow", "create a declarative workflow (JSON or YAML)", {
                201: answer("created", ref("Summary"), {**LOCATION, **ETAG})}, errors=(409, 422), body=definition_body),
        },
        "/api/workflows/validate": {"post": operation(
            "api.validate_workflow", "check a definition as creating it would; nothing stored, the name may be taken",
            {200: answer("it would be accepted", {"type": "object", "required": ["valid"],
                                                  "properties": {"valid": {"const": True}}})},
            errors=(422,), body=definition_body)},
        "/api/workflows/{name}": {
            "parameters": [WORKFLOW],
            "get": operation("api.get_workflow", "one workflow", {200: answer("its Summary", ref("Summary"), ETAG)},
                             errors=(404,)),
            "put": operation("api.update_workflow", "a new version of an API-made workflow", {
                200: answer("replaced", ref("Summary"), ETAG)}, errors=(404, 409, 422), body=definition_body,
                parameters=(IF_MATCH,)),
            "delete": operation("api.delete_workflow", "delete an API-made workflow", {204: answer("deleted")},
                                errors=(404, 409)),
        },
        "/api/workflows/{name}/versions": {"parameters": [WORKFLOW], "get": operation(
            "api.list_versions", "the stored versions of an API-made workflow (none for a file or Python one)", {
                200: answer("newest first", {"type": "object", "required": ["versions"], "properties": {
                    "versions": {"type": "array", "items": {
                        "type": "object", "required": ["version", "saved_at"],
                        "properties": {"version": {"type": "integer", "minimum": 1}, "saved_at": TIME}}}}})},
            errors=(404,))},
        "/api/workflows/{name}/versions/{version}": {
            "parameters": [WORKFLOW, path_param("version", "the version number", {"type": "integer", "minimum": 1})],
            "get": operation("api.get_version", "one stored version, secrets redacted", {
                200: answer("the version", {"type": "object", "required": ["name", "version", "saved_at", "definition"],
                                            "properties": {"name": {"type": "string"},
                                                           "version": {"type": "integer", "minimum": 1},
                                                           "saved_at": TIME, "definition": ref("Definition")}})},
                errors=(404,))},
        "/api/workflows/{name}/runs": {"parameters": [WORKFLOW], "post": operation(
            "api.create_run", "run once with the posted inputs as trigger data", {
                202: answer("queued or running", ref("Run"), {**LOCATION, **REPLAYED}),
                200: answer("finished within ?wait seconds", ref("Run"), {**LOCATION, **REPLAYED})},
            errors=(404, 409, 422), body=run_body, optional_body=True, parameters=(
                query("wait", f"seconds to wait for the run to finish (0-{MAX_WAIT_SECONDS:g})",
                      {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS}),
                IDEMPOTENCY_KEY))},
        "/api/workflows/{name}/poll": {"parameters": [WORKFLOW], "post": operation(
            "api.poll_workflow", "poll the trigger once now; one run per event",
            {200: answer("the runs started (empty when nothing fired)", runs)}, errors=(404, 409, 502))},
        "/api/workflows/{name}/start": {"parameters": [WORKFLOW], "post": operation(
            "api.start_workflow", "poll the trigger every check_interval, also after restarts",
            {200: answer("status running", ref("Summary"))}, errors=(404, 409))},
        "/api/workflows/{name}/stop": {"parameters": [WORKFLOW], "post": operation(
            "api.stop_workflow", "stop polling", {200: answer("status stopped", ref("Summary"))}, errors=(404, 409))},
        "/api/runs": {"get": operation("api.list_runs", "runs, newest first", {200: answer("a page", ref("RunPage"))},
                                       errors=(404,), parameters=(
            query("workflow", "only this workflow's runs", {"type": "string"}),
            query("status", "only runs in this status", {"$ref": "#/components/schemas/Run/properties/status"}),
            LIMIT,
            query("cursor", "the previous page's next", {"type": "string", "pattern": RUN_ID_PATTERN}),
            query("next", "the same as cursor", {"type": "string", "pattern": RUN_ID_PATTERN})))},
        "/api/runs/{run_id}": {"parameters": [RUN], "get": operation(
            "api.get_run", "one run", {200: answer("the run", ref("Run"))}, errors=(404,))},
        "/api/runs/{run_id}/logs": {"parameters": [RUN], "get": operation(
            "api.get_run_logs", "the run's log lines", {
                200: answer("oldest first", {"type": "object", "required": ["logs"],
                                             "properties": {"logs": {"type": "array", "items": ref("LogLine")}}})},
            errors=(404,))},
        "/api/runs/{run_id}/variables": {"parameters": [RUN], "patch": operation(
            "api.patch_variables", "change a paused run's inputs", {200: answer("the run", ref("Run"))},
            errors=(404, 409, 422),
            body=json_content({"type": "object", "properties": {"variables": {"type": "object"}}}))},
        "/api/secrets": {"get": operation("secrets.list_secrets", "every secret's name and times, never a value", {
            200: answer("by name", {"type": "object", "required": ["secrets"],
                                    "properties": {"secrets": {"type": "array", "items": ref("Secret")}}})})},
        "/api/secrets/{name}": {
            "parameters": [SECRET],
            "put": operation("secrets.put_secret", "store a secret, encrypted", {
                201: answer("new", ref("Secret")), 200: answer("replaced", ref("Secret"))}, errors=(422,),
                body=json_content({"type": "object", "required": ["value"],
                            "properties": {"value": {"type": "string", "writeOnly": True}}})),
            "delete": operation("secrets.delete_secret", "forget a secret", {204: answer("deleted")},
                                errors=(404, 422)),
        },
        "/api/tokens": {
            "get": operation("api.list_tokens", "the tokens, by name", {
                200: answer("never a token itself", {"type": "object", "required": ["tokens"],
                                                     "properties": {"tokens": {"type": "array",
                                                                               "items": ref("Token")}}})}),
            "post": operation("api.create_token", "make a token with a role; answered this once", {
                201: answer("the token, this once", ref("NewToken"))}, errors=(409, 422),
                body=json_content({"type": "object", "required": ["name", "role"], "additionalProperties": False,
                            "properties": {"name": {"type": "string"},
                                           "role": {"$ref": "#/components/schemas/Token/properties/role"}}})),
        },
        "/api/tokens/{name}": {"parameters": [TOKEN], "delete": operation(
            "api.delete_token", "delete a token: it opens nothing from now on", {204: answer("deleted")},
            errors=(404,))},
        "/api/audit": {"get": operation("api.list_audit", "the audit log, newest first", {
            200: answer("a page", ref("AuditPage"))}, parameters=(
            query("action", "only this action", {"type": "string"}),
            query("actor", "only this actor", {"type": "string"}),
            query("target", "only this target", {"type": "string"}),
            LIMIT,
            query("cursor", "the previous page's next", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
            query("next", "the same as cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"})))},
        "/api/metrics": {"get": operation("metrics.api_metrics", "runs, success rate, p50/p95 per workflow", {
            200: answer("over the last 24 hours and 7 days", {
                "type": "object", "required": ["generated_at", "windows", "workflows"],
                "properties": {"generated_at": {"type": "string"}, "windows": {"type": "array"},
                               "workflows": {"type": "object"}}})})},
        "/api/hooks/{name}": {"parameters": [WORKFLOW], "post": operation(
            "hooks.receive", "a webhook delivery: starts a run with {body, headers, query} as trigger data", {
                202: answer("the run's receipt (its id and state)", ref("WebhookReceipt"), {**LOCATION, **REPLAYED}),
                200: answer("response: result: the step's result", {}, {**LOCATION, **REPLAYED})},
            errors=(401, 404, 409, 502), body={"application/json": {"schema": {}},
                                               "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                                               "text/plain": {"schema": {"type": "string"}}},
            optional_body=True, parameters=(IDEMPOTENCY_KEY,))},
    }
    catalog_row = {"type": "object", "required": ["type", "description", "config_schema", "origin"],
                   "properties": {"type": {"type": "string"}, "description": {"type": "string"},
                                  "config_schema": {"type": "object"}, "origin": {"type": "string"},
                                  "results": {"type": "array", "items": {"type": "string"},
                                              "description": "an action's result keys ([] when not known)"}}}
    catalog = {"type": "object", "required": ["actions", "triggers", "problems", "step_keys", "limits"],
               "properties": {
                   "actions": {"type": "array", "items": catalog_row},
                   "triggers": {"type": "array", "items": catalog_row},
                   "problems": {"type": "array", "items": {"type": "object", "properties": {
                       "plugin": {"type": "string"}, "error": {"type": "string"}}}},
                   "step_keys": {"type": "object", "description": "the JSON Schema of the keys any step may carry"},
                   "limits": {"type": "object", "required": ["max_definition_bytes", "max_steps"], "properties": {
                       "max_definition_bytes": {"type": "integer"}, "max_steps": {"type": "integer"}}}}}
    document["/api/catalog"] = {"get": operation(
        "api.get_catalog", "every action and trigger type with its config's JSON Schema, the keys every step may "
        "carry, the caps on a definition", {200: answer("built in and from plugins", catalog)})}
    document["/api/events"] = {"post": operation(
        "api.publish_event", "publish an event: start matching started workflows, wake runs waiting for it", {
            202: answer("what it started and woke", {
                "type": "object", "required": ["event", "duplicate", "started", "runs", "resumed"],
                "properties": {"event": {"type": "object"}, "duplicate": {"type": "boolean"},
                               "started": {"type": "array", "items": {"type": "string"}},
                               "runs": {"type": "array", "items": {"type": "string"}},
                               "resumed": {"type": "array", "items": {"type": "string"}}}})},
        errors=(422,), body=json_content({
            "type": "object", "required": ["type"], "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "minLength": 1, "maxLength": MAX_FIELD_LENGTH, "description": (
                    "the event's type, such as 'ticket.created'; run.* types are PyFlow's own (published when runs "
                    "end) and refused (422), whatever the role; no control or format characters")},
                "data": {},
                "key": {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_FIELD_LENGTH,
                        "description": "correlation key for wait_for_event steps; no control or format characters"},
                "id": {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_FIELD_LENGTH,
                       "description": "for deduplication; '<run id>:<status>:<time>' is refused (run-end ids)"}}}))}
    approval_body = json_content({"type": "object", "properties": {
        "step": {"type": "string", "description": "the approval step (default: the one waiting)"},
        "comment": {"type": "string"}}})
    for decision in ("approve", "reject"):
        document[f"/api/runs/{{run_id}}/{decision}"] = {"parameters": [RUN], "post": operation(
            "api.answer_approval", f"{decision} the run's waiting approval step", {
                200: answer("the run as it now stands", ref("Run"))},
            errors=(404, 409, 422), body=approval_body, optional_body=True)}
        document[f"/api/runs/{{run_id}}/{decision}"]["post"]["operationId"] = f"{decision}_run"
    for name in CONTROLS:
        document[f"/api/runs/{{run_id}}/{name}"] = {"parameters": [RUN], "post": operation(
            "api.control_run", f"{name} a run", {200: answer("the run as it now stands", ref("Run"))},
            errors=(404, 409, 422), body=control_body, optional_body=True)}
        document[f"/api/runs/{{run_id}}/{name}"]["post"]["operationId"] = f"{name}_run"
    return document


@functools.cache
def document() -> dict[str, Any]:
    """The whole document: ``paths()`` with security, roles and the shared error answers added."""
    paths_ = paths()
    for path, item in paths_.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            responses = op["responses"]
            if is_open(path.replace("{", "").replace("}", "")):
                op["security"] = []
                op["x-pyflow-role"] = "open"
            else:
                role = required(op["x-pyflow-endpoint"]).label
                op["x-pyflow-role"] = role
                op["description"] = f"Needs the {role} role once WORKFLOW_API_TOKEN is set."
                for status in (401, 403, 429):
                    responses.setdefault(str(status), {"$ref": f"#/components/responses/{ERRORS[status][0]}"})
            if any(parameter["in"] == "query" for parameter in op.get("parameters", ())):
                responses.setdefault("400", {"$ref": "#/components/responses/BadRequest"})
            if "requestBody" in op:
                for status in (400, 413, 415):
                    responses.setdefault(str(status), {"$ref": f"#/components/responses/{ERRORS[status][0]}"})
            if method != "get":
                responses.setdefault("503", {"$ref": "#/components/responses/StorageError"})
    return {
        "openapi": VERSION,
        "info": {"title": "PyFlow", "version": "1",
                 "description": "Workflows, runs, secrets, tokens and the audit log (docs/api.md). Errors are "
                                "always {\"error\": {\"code\", \"message\", \"details\"?}}."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths_,
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "WORKFLOW_API_TOKEN (admin) or one made with POST "
                                                          "/api/tokens; not needed while it is unset"}},
            "responses": {name: {"description": description, "content": json_content(ref("Error"))}
                          for name, description in ERRORS.values()},
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
