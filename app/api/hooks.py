"""The /api/hooks blueprint: HTTP requests that start runs of webhook-triggered workflows."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from werkzeug.datastructures import MultiDict

from app.api.routes import parse_json, runtime
from app.api.uploads import save_uploads
from app.core.files import share
from app.errors import BadRequest, ConfigError, Conflict, PyFlowError, Unauthorized, UnsupportedMediaType
from app.runs import FINISHED_RUN, RunStatus
from triggers.signatures import Delivery, ReplayedDelivery, SignatureError
from triggers.webhook import WebhookTrigger

logger = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__, url_prefix="/api/hooks")

# How long a hook in "result" mode waits for its run before answering 202 instead.
RESULT_WAIT_SECONDS = 30.0
_FINISHED = {status.value for status in FINISHED_RUN}
RECEIPT_KEYS = ("id", "workflow", "status", "source", "created_at")


class RunFailed(PyFlowError):
    """A webhook in "result" mode started a run that did not succeed."""

    status = 502
    code = "run_failed"


class Replayed(PyFlowError):
    """A signed delivery that was accepted before."""

    status = 409
    code = "replayed_delivery"


class UploadsNotAllowed(PyFlowError):
    """Files posted to an unsigned webhook that does not allow uploads."""

    status = 415
    code = "uploads_not_allowed"


def _plain(values: MultiDict) -> dict[str, Any]:
    """A query or form as a dict: one value as a string, a repeated key as a list."""
    return {key: items[0] if len(items) == 1 else items for key, items in values.lists()}


def _body(raw: bytes) -> Any:
    """The request body: parsed JSON, a form dict, or text; None when empty."""
    mimetype = request.mimetype
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return _plain(request.form)
    if not raw:
        return None
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return parse_json(raw)
    charset = request.mimetype_params.get("charset") or "utf-8"
    try:
        return raw.decode(charset, errors="replace")
    except (LookupError, UnicodeError):  # not an encoding Python knows, or not a text one (rot13, base64)
        raise UnsupportedMediaType(f"the Content-Type's charset {charset[:40]!r} is not a text encoding this "
                                   f"server knows; send the body as UTF-8") from None


def _event(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    """The trigger data of one request and the folder its files were saved in (none without files)."""
    event = {
        "body": _body(raw),
        # Lower-case names, so templates need not guess the sender's spelling.
        "headers": {name.lower(): value for name, value in request.headers.items()},
        "query": _plain(request.args),
    }
    uploads = [upload for _, upload in request.files.items(multi=True)]
    folders: list[str] = []
    if uploads:
        event["attachments"], folders = save_uploads(uploads, runtime().store.files_path("attachments"))
        share(runtime().store, event)  # keys, so a worker on another host gets the files
    return event, folders


def _webhook(name: str) -> WebhookTrigger:
    """The started webhook trigger of ``name``; NotFound or Conflict otherwise."""
    rt = runtime()
    bound = rt.get(name)
    trigger = bound.trigger
    if not isinstance(trigger, WebhookTrigger):
        raise Conflict(f"workflow {name!r} has a {trigger.type} trigger, not a webhook; "
                       f"start runs with POST /api/workflows/{name}/runs")
    if bound.error:
        raise Conflict(f"workflow {name!r} cannot take webhooks: {bound.error}")
    if not rt.is_started(name):
        raise Conflict(f"workflow {name!r} is not started; start it with POST /api/workflows/{name}/start")
    steps = [action.name for action in bound.actions]
    if trigger.response_step is not None and trigger.response_step not in steps:
        raise ConfigError(f"workflow {name!r}: the webhook's response_step {trigger.response_step!r} "
                          f"is not one of its steps ({', '.join(steps)})")
    return trigger


def _step_result(run: dict, step_name: str | None) -> Any:
    """The result of ``step_name``, or of the last step that succeeded."""
    if step_name is not None:
        return next(step["result"] for step in run["steps"] if step["name"] == step_name)
    done = [step for step in run["steps"] if step["status"] == "succeeded"]
    return done[-1]["result"] if done else None


def _check_delivery(name: str, trigger: WebhookTrigger, raw: bytes) -> Delivery | None:
    """Verify the signature and refuse a replay; the delivery is remembered durably before the run starts."""
    headers = {header.lower(): value for header, value in request.headers.items()}
    try:
        delivery = trigger.check(raw, headers)
    except SignatureError as error:
        raise Unauthorized(str(error)) from None
    if delivery is None:
        return None
    store = runtime().store
    with trigger.replay_lock:
        # Read from the store each time: what a restart or a rebound trigger must still know.
        trigger.state = store.load_trigger_state(name)
        try:
            trigger.remember(delivery)
        except ReplayedDelivery as error:
            logger.warning("refused a replayed delivery to webhook %s from %s", name, request.remote_addr)
            raise Replayed(f"webhook {name!r}: {error}") from None
        store.save_trigger_state(name, trigger.state)
    return delivery


def _forget_delivery(name: str, trigger: WebhookTrigger, delivery: Delivery) -> None:
    """Undo ``_check_delivery`` for a delivery that started no run (bad inputs, storage failure)."""
    store = runtime().store
    try:
        with trigger.replay_lock:
            trigger.state = store.load_trigger_state(name)
            trigger.forget(delivery)
            store.save_trigger_state(name, trigger.state)
    except PyFlowError as error:
        # The sender's retry of this very delivery will be refused as a replay; nothing worse.
        logger.warning("webhook %s: could not forget a delivery that started no run: %s", name, error.message)


@bp.post("/<name>")
def receive(name: str) -> tuple[Response, int, dict]:
    """Start a run with the request as trigger data; answer as the trigger's ``response`` says."""
    trigger = _webhook(name)  # 404 and 409 before reading a body that may be large
    raw = request.get_data(cache=True)  # the raw bytes are what was signed
    if not trigger.accepts_uploads and request.files:
        # Anyone can post to an unsigned hook: it must not become a way to put files on the server.
        raise UploadsNotAllowed(f"workflow {name!r} has an unsigned webhook, which does not accept file uploads; "
                                f"give its trigger a secret, or set allow_uploads: true on it")
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise BadRequest("Idempotency-Key must be at most 255 characters")
    delivery = _check_delivery(name, trigger, raw)
    rt = runtime()
    awaited = trigger.response == "result"
    try:
        event, folders = _event(raw)
        run, created = rt.submit(name, event, source="webhook", idempotency_key=key, awaited=awaited,
                                 attachment_folders=folders)
    except Exception:
        if delivery is not None:
            _forget_delivery(name, trigger, delivery)
        raise
    headers = {"Location": url_for("api.get_run", run_id=run["id"])}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    if awaited:
        run = rt.outcome(run, RESULT_WAIT_SECONDS)
        if run["status"] == RunStatus.SUCCEEDED.value:
            return jsonify(_step_result(run, trigger.response_step)), 200, headers
        if run["status"] in _FINISHED:
            # The workflow behind the hook failed: the caller gets the run's error, as a gateway would.
            error = RunFailed(f"run {run['id']} {run['status']}: {run.get('error') or 'no error recorded'}",
                              details={"run_id": run["id"], "status": run["status"]})
            return jsonify(error.to_dict()), error.status, headers
    return jsonify(receipt(run)), 202, headers


def receipt(run: dict) -> dict:
    """What a webhook's sender is answered in "accepted" mode: the run's id and state, none of its data.

    Anyone may post to an unsigned hook, and answers are scrubbed of secret values: echoing the posted body
    would tell a guesser which of its words is a secret (the admin token, a stored secret) by showing "***",
    with no lockout. Whoever may read the run gets it at Location.
    """
    return {key: run.get(key) for key in RECEIPT_KEYS}

