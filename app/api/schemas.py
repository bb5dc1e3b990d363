"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of what the API takes and answers.

Enums come from the code that owns them (run and step statuses, roles, audit actions, the keys of a
definition), so a new status or role reaches the document without editing it here.
"""

from __future__ import annotations

from typing import Any

from app.api.roles import NAMES
from app.api.routes import RUN_ID
from app.core.audit import ACTIONS
from app.runs import RunStatus, StepStatus
from workflows.declarative import TOP_KEYS

TIME = {"type": "string", "format": "date-time", "description": "UTC ISO 8601 with Z"}
MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
RUN_ID_PATTERN = RUN_ID.pattern


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def page_of(key: str, item: dict, cursor: dict) -> dict:
    """``{key: [item], "next": cursor-or-null}``: one page of a list, newest first."""
    return {"type": "object", "required": [key, "next"],
            "properties": {key: {"type": "array", "items": item}, "next": {"anyOf": [cursor, {"type": "null"}]}}}


def components() -> dict[str, Any]:
    """The ``components.schemas`` of the document."""
    step = {
        "type": "object",
        "required": ["name", "type", "status", "attempts"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string"},
            "depends_on": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": [status.value for status in StepStatus]},
            "attempts": {"type": "integer", "minimum": 0},
            "started_at": MAYBE_TIME,
            "finished_at": MAYBE_TIME,
            "duration_ms": {"type": ["number", "null"]},
            "result": {"description": "what the action returned; redacted"},
            "error": {"type": ["string", "null"], "description": "one line naming the cause"},
            "cached": {"type": "boolean", "description": "served from the step cache (docs/step-cache.md)"},
            "cached_from": {"type": "string", "description": "the run whose result a cached step reused"},
            "completion_order": {"type": "integer", "minimum": 1,
                                 "description": "order of success of a step with a compensate (docs/compensation.md)"},
            "wait": {"type": "object", "description": "what a waiting step waits for: for, since, until, event, key"},
        },
    }
    run = {
        "type": "object",
        "description": "One execution of a workflow (DESIGN section 3; app/runs.py new_run).",
        "required": ["id", "workflow", "status", "trigger_data", "steps", "progress", "created_at"],
        "properties": {
            "id": {"type": "string", "pattern": RUN_ID_PATTERN},
            "workflow": {"type": "string"},
            "status": {"enum": [status.value for status in RunStatus]},
            "source": {"type": "string", "description": "what started it: api, webhook, schedule, ..."},
            "trigger_data": {"type": "object"},
            "steps": {"type": "array", "items": ref("Step")},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "created_at": TIME,
            "started_at": MAYBE_TIME,
            "finished_at": MAYBE_TIME,
            "error": {"type": ["string", "null"]},
            "history": {"type": "array", "items": {
                "type": "object", "required": ["at", "to"],
                "properties": {"at": TIME, "from": {"type": ["string", "null"]}, "to": {"type": "string"},
                               "by": {"type": ["string", "null"]}}}},
            "worker": {"type": ["string", "null"], "description": "host:pid of the worker that executes it"},
            "version": {"type": ["integer", "null"], "description": "the definition version of an API-made workflow"},
            "call_stack": {"type": "array", "items": {"type": "string"},
                           "description": "the workflows whose workflow step started this sub-run, outermost first"},
            "attachment_folders": {"type": "array", "items": {"type": "string"},
                                   "description": "the folders the server saved the run's uploads or e-mail "
                                                  "attachments in, the only ones its steps may read (docs/files.md)"},
            "compensations": {"type": "array", "items": {"type": "object"},
                              "description": "the steps undone after a failure or cancel (docs/compensation.md)"},
            "compensating": {"enum": [RunStatus.FAILED.value, RunStatus.CANCELLED.value],
                             "description": "while compensations run: the status the run ends with"},
            "cancelled_by": {"type": "string", "description": "who cancelled a run that is compensating"},
        },
    }
    summary = {
        "type": "object",
        "description": "A registered workflow (DESIGN section 4); secrets read \"***\".",
        "required": ["name", "description", "trigger", "actions", "status"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "trigger": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
            "actions": {"type": "array", "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}},
            "status": {"enum": ["running", "stopped"]},
            "check_interval": {"type": ["number", "null"]},
            "next_fire_time": MAYBE_TIME,
            "inputs_schema": {"type": ["object", "null"], "description": "a JSON Schema of the run inputs"},
            "error": {"type": ["string", "null"], "description": "why the trigger cannot be polled"},
            "last_poll": {"type": ["object", "null"]},
            "polled_here": {"type": "boolean"},
            "origin": {"type": ["string", "null"], "description": "python, file or api"},
            "source": {"type": ["string", "null"]},
            "version": {"type": ["integer", "null"]},
            "definition": {"anyOf": [ref("Definition"), {"type": "null"}],
                           "description": "the declarative definition (GET, POST, PUT of one workflow)"},
        },
    }
    definition = {
        "type": "object",
        "description": "A declarative workflow (DESIGN section 9; workflows/declarative.py checks it).",
        "required": ["name", "steps"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
            "description": {"type": "string"},
            "inputs": {"type": "object", "description": "a JSON Schema of the run inputs"},
            "trigger": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}},
                        "description": "{type: manual} when absent"},
            "layout": {"type": "object", "description": "the designer's node positions: step name or \"@trigger\" "
                                                        "-> [x, y]; the engine ignores them",
                       "additionalProperties": {"type": "array", "items": {"type": "number"},
                                                "minItems": 2, "maxItems": 2}},
            "steps": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                               "config": {"type": "object"}, "depends_on": {"type": "array"},
                               "when": {"type": "string"}}}},
        },
        "propertyNames": {"enum": sorted(TOP_KEYS)},
    }
    error = {
        "type": "object",
        "description": "Every error under /api (app/errors.py); details list the problems of a 422 with paths.",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": False,
            "properties": {"code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                           "message": {"type": "string", "minLength": 1},
                           "details": {}}}},
    }
    secret = {"type": "object", "required": ["name", "created_at", "updated_at"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "created_at": TIME, "updated_at": TIME}}
    token = {"type": "object", "required": ["name", "role", "created", "last_used"],
             "properties": {"name": {"type": "string"}, "role": {"enum": list(NAMES)}, "created": TIME,
                            "last_used": MAYBE_TIME}}
    audit_entry = {
        "type": "object", "required": ["id", "at", "actor", "action", "target", "details", "prev", "hash"],
        "properties": {"id": {"type": "integer", "minimum": 1}, "at": TIME, "actor": {"type": "string"},
                       "action": {"enum": sorted(ACTIONS)}, "target": {"type": "string"},
                       "details": {"type": "object"}, "prev": {"type": "string"},
                       "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}
    log_line = {"type": "object", "required": ["at", "level", "message"],
                "properties": {"at": TIME, "level": {"type": "string"}, "step": {"type": ["string", "null"]},
                               "message": {"type": "string"}}}
    return {
        "Error": error,
        "Run": run,
        "WebhookReceipt": {
            "type": "object", "required": ["id", "workflow", "status", "source", "created_at"],
            "description": "what a webhook's sender is answered: the run's id and state, none of its data "
                           "(read the run at Location with a token)",
            "properties": {key: run["properties"][key] for key in ("id", "workflow", "status", "source", "created_at")},
        },
        "Step": step,
        "Summary": summary,
        "Definition": definition,
        "Secret": secret,
        "Token": token,
        "NewToken": {**token, "required": [*token["required"], "token"],
                     "properties": {**token["properties"], "token": {"type": "string", "minLength": 32}}},
        "AuditEntry": audit_entry,
        "LogLine": log_line,
        "RunPage": page_of("runs", ref("Run"), {"type": "string", "pattern": RUN_ID_PATTERN}),
        "AuditPage": page_of("entries", ref("AuditEntry"), {"type": "integer", "minimum": 1}),
    }
