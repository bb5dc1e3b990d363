"""The /api blueprint: endpoints over the runtime's workflow registry."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from actions.jsontext import JSONLimitError, load_json
from app.api import audit
from app.api.uploads import save_uploads
from app.core.events import parse_event
from app.core.files import share
from app.core.limits import size_problem
from app.core.plugins import type_catalog
from app.core.redaction import redact_definition
from app.core.runtime import Runtime
from app.errors import BadRequest, InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from app.runs import FINISHED_RUN, RunStatus, progress
from workflows.declarative import DefinitionError, parse

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_WAIT_SECONDS = 300.0
MAX_PAGE = 500
_FINISHED = {status.value for status in FINISHED_RUN}
_STATUSES = {status.value for status in RunStatus}
RUN_ID = re.compile(r"^run_[0-9a-f]{1,64}$")
# If-Match: "3", 3 or W/"3" (a version number; quotes optional).
IF_MATCH = re.compile(r'^\s*(?:W/)?"?([0-9]{1,9})"?\s*$')


def runtime() -> Runtime:
    """The runtime of the current app."""
    return current_app.extensions["pyflow"]


def present(run: dict) -> dict:
    """A run as the API shows it: progress derived from the steps while it runs."""
    if run["status"] not in _FINISHED:
        run["progress"] = progress(run["steps"])
    return run


def parse_json(raw: bytes | str, what: str = "JSON body") -> Any:
    """A JSON request body (or form part); BadRequest saying where it is malformed or which bound it crosses."""
    try:
        return load_json(raw, runtime().settings["WORKFLOW_MAX_JSON_DEPTH"])
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"malformed {what}: {error.msg} at line {error.lineno} column {error.colno}") from None
    except JSONLimitError as error:
        raise BadRequest(f"{what} refused: {error}") from None


def _json_body() -> Any:
    """The request's JSON body, None when empty; 415 for a body sent as another content type (DESIGN section 4)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    if not _is_json(request.mimetype):
        raise UnsupportedMediaType(f"content type {request.mimetype!r} is not supported; send application/json")
    return parse_json(raw)


def _is_json(mimetype: str) -> bool:
    """True for application/json, a +json type, or none (a client that names no type sends JSON here)."""
    return mimetype in ("application/json", "") or mimetype.endswith("+json")


def page_cursor() -> str | None:
    """The page to list from: ``?cursor=``, or ``?next=`` (the name the previous page answered it under)."""
    # Ignoring ?next= would answer the first page again, and a client looping until next is null would never end.
    cursor, alias = request.args.get("cursor") or None, request.args.get("next") or None
    if cursor is not None and alias is not None and cursor != alias:
        raise BadRequest(f"query parameters cursor and next name the same page; got {cursor!r} and {alias!r}")
    return cursor or alias


def _object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        got = "an empty body or null" if value is None and field == "body" else f"a JSON {_json_kind(value)}"
        raise InvalidInput(f"{field} must be a JSON object, got {got}",
                           details=[{"path": field, "message": "must be a JSON object"}])
    return value


def _json_kind(value: Any) -> str:
    """What ``value`` is in JSON's words (a client sent JSON, not Python): null, boolean, number, string, array."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "array" if isinstance(value, list) else type(value).__name__


def _run_inputs() -> tuple[dict, list[str]]:
    """The posted inputs (a JSON body, a multipart form with files, or nothing) and the folder of its files."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        raw = request.form.get("inputs", "")
        inputs: dict = {}
        if raw.strip():
            inputs = _object(parse_json(raw, "form part 'inputs'"), "inputs")
        uploads = [upload for _, upload in request.files.items(multi=True)]
        attachments, folders = save_uploads(uploads, runtime().store.files_path("attachments"))
        if attachments:
            inputs["attachments"] = attachments
            share(runtime().store, inputs)  # keys, so a worker on another host gets the files
        return inputs, folders
    return _json_inputs(mimetype), []  # paths in JSON are not the server's: they read no attachment


def _json_inputs(mimetype: str) -> dict:
    """The inputs of a JSON body, or of none."""
    if request.content_length in (None, 0) and not request.get_data(cache=True):
        return {}
    if not _is_json(mimetype):
        raise UnsupportedMediaType(
            f"content type {mimetype!r} is not supported; send application/json or multipart/form-data"
        )
    body = _json_body()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object like {{\"inputs\": {{...}}}}, got {type(body).__name__}")
    unknown = sorted(set(body) - {"inputs"})
    if unknown:
        raise InvalidInput(f"unknown field(s) in body: {', '.join(unknown)}; put run inputs under \"inputs\"",
                           details=[{"path": key, "message": "unknown field"} for key in unknown])
    return _object(body.get("inputs", {}), "inputs") if body.get("inputs") is not None else {}


def _number_arg(name: str, default: float | None, low: float, high: float) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


@bp.get("/health")
def health() -> Response:
    return jsonify(status="ok")


@bp.get("/catalog")
def get_catalog() -> Response:
    return jsonify(type_catalog(runtime().plugins, runtime().settings))


@bp.get("/workflows")
def list_workflows() -> Response:
    return jsonify(workflows=runtime().summaries())


@bp.post("/workflows")
def create_workflow() -> tuple[Response, int, dict]:
    summary = runtime().create_definition(_definition_body())
    audit.record("definition.create", summary["name"], {"version": summary.get("version")})
    return _tagged(summary), 201, {"Location": url_for("api.get_workflow", name=summary["name"])}


@bp.post("/workflows/validate")
def validate_workflow() -> Response:
    """Check a definition as POST /api/workflows would; nothing is stored (a taken name is no problem)."""
    runtime().catalog.check(_definition_body())
    return jsonify(valid=True)


@bp.get("/workflows/<name>")
def get_workflow(name: str) -> Response:
    try:
        return _tagged(runtime().summary(name))
    except NotFound:
        # A stored definition that no longer loads (a plugin's type is gone): shown, so a PUT can fix it.
        summary = runtime().catalog.unloaded_summary(name)
        if summary is None:
            raise
        response = jsonify(summary)
        response.headers["ETag"] = f'"{summary["version"]}"'
        return response


@bp.put("/workflows/<name>")
def update_workflow(name: str) -> Response:
    base = _if_match()
    summary = runtime().update_definition(name, _definition_body(), base)
    audit.record("definition.update", name, {"version": summary.get("version")})
    return _tagged(summary)


@bp.get("/workflows/<name>/versions")
def list_versions(name: str) -> Response:
    return jsonify(versions=runtime().catalog.versions(name))


@bp.get("/workflows/<name>/versions/<int:version>")
def get_version(name: str, version: int) -> Response:
    return jsonify(runtime().catalog.stored_version(name, version))


def _tagged(summary: dict) -> Response:
    """The Summary with its definition; ``ETag: "<version>"`` for an API-made one (PUT sends it back as If-Match)."""
    response = jsonify(_with_definition(summary))
    version = summary.get("version")
    if isinstance(version, int):
        response.headers["ETag"] = f'"{version}"'
    return response


def _if_match() -> int | None:
    """The version an If-Match header names; None without one (or with ``*``: any version)."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() in ("", "*"):
        return None
    found = IF_MATCH.match(raw)
    if found is None:
        raise BadRequest(f'If-Match must be the version you edited, as its ETag says ("3"), got {raw[:40]!r}')
    return int(found.group(1))


@bp.delete("/workflows/<name>")
def delete_workflow(name: str) -> tuple[str, int]:
    runtime().delete_definition(name)
    audit.record("definition.delete", name)
    return "", 204


def _definition_body() -> dict:
    """A definition posted as JSON, or as YAML (application/yaml, text/yaml); 413 past WORKFLOW_MAX_DEFINITION_KB."""
    too_large = size_problem(request.content_length or 0, runtime().settings, "the request body")
    if too_large:
        raise PayloadTooLarge(too_large)
    if request.mimetype in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            text = request.get_data(as_text=True)
            return _object(parse(text, "request.yaml", runtime().settings["WORKFLOW_MAX_JSON_DEPTH"]), "body")
        except DefinitionError as error:
            raise BadRequest(str(error)) from None
    if not _is_json(request.mimetype):
        raise UnsupportedMediaType(f"content type {request.mimetype!r} is not supported; send JSON or YAML")
    body = _json_body()
    if body is None:
        raise BadRequest("send a workflow definition: {\"name\", \"trigger\", \"steps\": [...]}")
    if not isinstance(body, dict):
        raise BadRequest(f"a workflow definition is a JSON object, got {type(body).__name__}")
    return body


def _with_definition(summary: dict) -> dict:
    workflow = runtime().get(summary["name"]).workflow
    # Secrets (and credentials in URLs) show as "***"; a PUT that sends them back keeps the stored value.
    summary["definition"] = redact_definition(workflow.definition)
    return summary


@bp.post("/workflows/<name>/runs")
def create_run(name: str) -> tuple[Response, int, dict]:
    rt = runtime()
    rt.get(name)  # 404 before reading a body that may be large
    wait = _number_arg("wait", None, 0, MAX_WAIT_SECONDS)
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise BadRequest("Idempotency-Key must be at most 255 characters")
    inputs, folders = _run_inputs()
    run, created = rt.submit(name, inputs, source="api", idempotency_key=key, awaited=wait is not None,
                             attachment_folders=folders)
    if wait is not None:
        run = rt.outcome(run, wait)
    headers = {"Location": url_for("api.get_run", run_id=run["id"])}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    status = 200 if wait is not None and run["status"] in _FINISHED else 202
    return jsonify(present(run)), status, headers


@bp.post("/workflows/<name>/poll")
def poll_workflow(name: str) -> Response:
    return jsonify(runs=[present(run) for run in runtime().poll(name)])


@bp.post("/workflows/<name>/start")
def start_workflow(name: str) -> Response:
    summary = runtime().start_workflow(name)
    audit.record("workflow.start", name)
    return jsonify(summary)


@bp.post("/workflows/<name>/stop")
def stop_workflow(name: str) -> Response:
    summary = runtime().stop_workflow(name)
    audit.record("workflow.stop", name)
    return jsonify(summary)


@bp.get("/runs")
def list_runs() -> Response:
    rt = runtime()
    workflow = request.args.get("workflow") or None
    status = request.args.get("status") or None
    if workflow is not None:
        rt.get(workflow)
    if status is not None and status not in _STATUSES:
        raise BadRequest(f"query parameter status must be one of {', '.join(sorted(_STATUSES))}, got {status!r}")
    limit = int(_number_arg("limit", 50, 1, MAX_PAGE) or 50)
    cursor = page_cursor()
    if cursor is not None and not RUN_ID.match(cursor):
        raise BadRequest(f"query parameter cursor (or next) must be a run id from a previous page's next, "
                         f"got {cursor!r}")
    runs, next_cursor = rt.store.list_runs(workflow=workflow, status=status, limit=limit, before=cursor)
    return jsonify(runs=[present(run) for run in runs], next=next_cursor)


def _stored_run(run_id: str) -> dict:
    run = runtime().store.get_run(run_id) if RUN_ID.match(run_id) else None
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    return jsonify(present(_stored_run(run_id)))


@bp.post("/runs/<run_id>/<any(cancel, pause, resume, retry, skip):operation>")
def control_run(run_id: str, operation: str) -> Response:
    _stored_run(run_id)
    body = _json_body() if request.get_data(cache=True).strip() else {}
    body = _object(body, "body") if body is not None else {}
    step = body.get("step")
    if step is not None and not isinstance(step, str):
        raise InvalidInput("step must be a step name", details=[{"path": "step", "message": "must be a string"}])
    run = runtime().control(run_id, operation, by="api", step=step)
    audit.record(f"run.{operation}", run_id, {"step": step} if step else None)
    return jsonify(present(run))


@bp.patch("/runs/<run_id>/variables")
def patch_variables(run_id: str) -> Response:
    _stored_run(run_id)
    body = _object(_json_body(), "body")
    variables = _object(body.get("variables", body), "variables")
    run = runtime().set_variables(run_id, variables)
    # The names only: a variable's value may be anything, a credential included.
    audit.record("run.variables", run_id, {"names": sorted(variables)})
    return jsonify(present(run))


@bp.post("/runs/<run_id>/<any(approve, reject):decision>")
def answer_approval(run_id: str, decision: str) -> Response:
    """Answer the run's waiting approval step: ``{"step"?, "comment"?}`` (docs/approvals.md)."""
    _stored_run(run_id)
    body = _json_body() if request.get_data(cache=True).strip() else {}
    body = _object(body, "body") if body is not None else {}
    step = body.get("step")
    if step is not None and not isinstance(step, str):
        raise InvalidInput("step must be a step name", details=[{"path": "step", "message": "must be a string"}])
    who = audit.actor()
    run = runtime().approvals.answer(run_id, decision == "approve", who, step=step, comment=body.get("comment"))
    audit.record(f"approval.{decision}", run_id, {"step": step, "comment": body.get("comment")})
    return jsonify(present(run))


@bp.post("/events")
def publish_event() -> tuple[Response, int]:
    """Publish an event: start the matching started workflows, wake the runs waiting for it (docs/events.md)."""
    body = _json_body()
    answer = runtime().publish(parse_event(body if body is not None else {}))
    return jsonify(event=answer["event"], duplicate=answer["duplicate"], started=answer["started"],
                   runs=answer["started"], resumed=answer["resumed"]), 202


@bp.get("/runs/<run_id>/logs")
def get_run_logs(run_id: str) -> Response:
    _stored_run(run_id)
    return jsonify(logs=runtime().store.get_logs(run_id))
