"""The Flask application factory."""

from __future__ import annotations

import logging
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
        scrubbed = KNOWN_SECRETS.text(scrubber.text(text))
        if scrubbed is not text:
            response.set_data(scrubbed)
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
    from app.api import audit_log, auth, tokens  # noqa: F401  (audit_log's and tokens' views attach to the API)
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
