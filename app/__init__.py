"""The Flask application factory."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.errors import PyFlowError, error_body

if TYPE_CHECKING:
    from flask import Flask, Response

# Flask, the blueprints and the runtime are imported by the functions that use them: importing any
# module of app/ runs this file, and `run.py list` or `run.py run` should not pay for a web server.

logger = logging.getLogger(__name__)


def _slug(name: str) -> str:
    return "_".join(name.lower().replace("-", " ").split())


def register_error_handlers(app: Flask) -> None:
    """JSON errors under /api: no HTML page and no traceback, ever."""
    from flask import jsonify, request
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(PyFlowError)
    def pyflow_error(error: PyFlowError):
        return jsonify(error.to_dict()), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if not request.path.startswith("/api"):
            return error
        message = error.description or error.name
        if error.code == 413:
            limit = app.config["WORKFLOW_MAX_UPLOAD_MB"]
            message = f"request body is larger than WORKFLOW_MAX_UPLOAD_MB ({limit:g} MB)"
        elif error.code == 405:
            allowed = ", ".join(sorted(error.valid_methods or []))  # type: ignore[attr-defined]
            message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
        elif error.code == 404:
            message = f"no endpoint {request.path}; see GET /api/workflows"
        headers = {"Allow": ", ".join(sorted(error.valid_methods or []))} if error.code == 405 else {}  # type: ignore[attr-defined]
        return jsonify(error_body(error.code or 500, _slug(error.name), message)), error.code or 500, headers

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error_body(500, "internal_error", "internal error; the server log has the details")), 500


def scrub_answers(app: Flask, settings: dict[str, Any]) -> None:
    """No answer (API or dashboard) carries a secret setting's or a stored secret's value, whatever put it there."""
    from app.core.redaction import KNOWN_SECRETS, settings_scrubber

    scrubber = settings_scrubber(settings)

    @app.after_request
    def scrub(response: Response) -> Response:
        if not scrubber and not KNOWN_SECRETS:  # no secret setting, and no stored secret read yet
            return response
        if response.direct_passthrough or response.is_streamed or response.mimetype not in _TEXT_ANSWERS:
            return response  # files (send_file) and streams are the user's own bytes
        text = response.get_data(as_text=True)
        settings_values, stored_values = scrubber, KNOWN_SECRETS
        scrubbed = stored_values.text(settings_values.text(text))
        if scrubbed is not text and _unauthenticated():
            # A "***" where the request's own words come back (an untrusted Host, a webhook name, the login page's
            # next) would tell anyone which word is a secret: no token, no lockout. The caller sent those words,
            # so showing them back tells nothing; an unauthenticated answer holds no stored data of anyone else's.
            echoed = _echoed(settings_values.found(text) | stored_values.found(text))
            if echoed:
                settings_values, stored_values = settings_values.without(echoed), stored_values.without(echoed)
                scrubbed = stored_values.text(settings_values.text(text))
        if scrubbed is not text:
            if response.mimetype.endswith("json"):
                # Replaced in the serialized text, a secret such as "00e9" would cut an escape ("\u00e9") in
                # two and leave invalid JSON: scrub the decoded values and serialize again.
                scrubbed = _scrub_json(text, lambda value: stored_values.text(settings_values.text(value)), scrubbed)
            response.set_data(scrubbed)
        return response


def _unauthenticated() -> bool:
    """True for a request no token or login vouched for while WORKFLOW_API_TOKEN is set (open paths, refusals)."""
    from flask import g

    from app.api.auth import api_token

    return bool(api_token()) and g.get("pyflow_principal") is None


def _echoed(values: set[str]) -> set[str]:
    """Those of ``values`` (secret values found in an answer, in any escaped form) that the request itself holds."""
    import html
    import json
    from urllib.parse import unquote

    from flask import request

    sent = [request.path, unquote(request.query_string.decode("latin-1")), request.query_string.decode("latin-1")]
    sent += [value for _, value in request.headers.items()]
    sent.append(request.get_data(cache=True).decode("utf-8", "replace"))
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent += [value for _, value in request.form.items(multi=True)]
    echoed = set()
    for value in values:
        forms = {value, unquote(value), html.unescape(value)}
        try:
            forms.add(json.loads(f'"{value}"'))
        except ValueError:
            pass
        if any(form and form in text for form in forms for text in sent):
            echoed.add(value)
    return echoed


# Values the server makes itself: run ids, timestamps, sha256 hashes (the audit chain). A stored secret found
# inside one is a coincidence ("1234" in a run id), and scrubbing it would break the answer's contract.
_MADE_HERE = re.compile(r"run_[0-9a-f]{22}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z|[0-9a-f]{64}")


def _scrub_json(text: str, scrub: Callable[[str], str], fallback: str) -> str:
    """The JSON ``text`` with ``scrub`` applied to its strings and keys; ``fallback`` if it is not JSON.

    Left alone: what the server makes (``_MADE_HERE``, run and step statuses, the error body's code). A
    number is replaced only when it is a secret's value, not when it contains one (a duration of 11234 ms).
    """
    import json

    from app.core.redaction import REDACTED
    from app.runs import RunStatus, StepStatus

    vocabulary = {*RunStatus, *StepStatus, "running", "stopped"}

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return value if value in vocabulary or _MADE_HERE.fullmatch(value) else scrub(value)
        if isinstance(value, dict):
            return {walk(key): walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return REDACTED if scrub(json.dumps(value)) == REDACTED else value
        return value

    try:
        document = json.loads(text)
    except ValueError:
        return fallback
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    document = walk(document)
    if isinstance(code, str):  # a slug of ours, such as too_many_failed_authentications
        document["error"]["code"] = code
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")) + "\n"


def _no_sniffing(response: Response) -> Response:
    from flask import request

    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.method == "OPTIONS" and response.status_code == 200 and not response.content_length:
        response.status_code = 204  # Flask's automatic answer (its Allow header) holds nothing: no text/html page
    if response.status_code == 204:  # no content, so no type (Flask gives every answer text/html)
        response.headers.pop("Content-Type", None)
    return response


_TEXT_ANSWERS = frozenset({"application/json", "text/html", "text/plain", "text/csv", "application/problem+json"})


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the app: settings from the environment, then ``test_config`` on top; nothing starts.

    ``test_config`` may also carry ``STORE`` (a Store instance) and
    ``WORKFLOW_CLASSES`` (extra Workflow subclasses to register). The runtime is
    built but not started (no recovery, no polling, no thread), so ``flask routes``
    or a test of one page costs nothing: ``start_app`` starts it.
    """
    from flask import Flask

    from app import dashboard
    from app.api import audit_log, auth, openapi, tokens  # noqa: F401  (their views attach to the API blueprint)
    from app.api.hooks import bp as webhooks
    from app.api.routes import bp as api_blueprint
    from app.api.secrets import bp as secrets_blueprint
    from app.core.config import load_settings
    from app.core.redaction import install_log_filter
    from app.core.runtime import Runtime

    app = Flask(__name__)
    settings = load_settings()
    extras = dict(test_config or {})
    store = extras.pop("STORE", None)
    workflows = extras.pop("WORKFLOW_CLASSES", ())
    settings.update(extras)
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = int(float(settings["WORKFLOW_MAX_UPLOAD_MB"]) * 1024 * 1024)
    app.json.sort_keys = False  # run records read in their natural order
    # Every answer (API, webhooks, files, pages) is read as the type it says: a run's text or an uploaded file
    # is never sniffed into HTML by a browser. The dashboard adds its content security policy.
    app.after_request(_no_sniffing)
    install_log_filter(settings)  # the server log never shows a secret setting's value

    runtime = Runtime(settings, store=store, workflows=workflows)
    app.extensions["pyflow"] = runtime

    app.register_blueprint(api_blueprint)
    app.register_blueprint(secrets_blueprint)
    dashboard.init_app(app)  # pages at /, metrics at /api/metrics and /metrics
    app.register_blueprint(webhooks)
    register_error_handlers(app)
    scrub_answers(app, settings)
    auth.init_app(app)  # WORKFLOW_API_TOKEN: bearer for /api, login for the dashboard
    return app


def start_app(app: Flask) -> Flask:
    """Start what ``create_app`` built: resume interrupted runs, then poll the started workflows; ``app``."""
    app.extensions["pyflow"].start()
    return app
