"""The dashboard blueprint: shared hooks, template helpers, HTML errors, and registration on the app."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, render_template
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from app.api import auth
from app.core.metrics import StoreCollector
from app.dashboard.csrf import FIELD, check_csrf, csrf_token
from app.dashboard.filters import FILTERS
from app.dashboard.metrics_api import REGISTRY_KEY
from app.dashboard.metrics_api import bp as metrics_bp
from app.errors import PyFlowError

logger = logging.getLogger(__name__)

bp = Blueprint(
    "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/static/dashboard"
)

# Every asset is served by the app; inline style attributes position the timeline bars.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

bp.before_request(check_csrf)
for _name, _function in FILTERS.items():
    bp.add_app_template_filter(_function, _name)


@bp.after_request
def security_headers(response: Response) -> Response:
    """Pages may not be framed or load anything from elsewhere (create_app: no answer is sniffed)."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@bp.app_context_processor
def template_globals() -> dict:
    """What every dashboard template may use."""
    return {"csrf_token": csrf_token, "csrf_field": FIELD, "login_required": bool(auth.api_token()),
            "logged_in": auth.logged_in, "may": auth.may, "principal": auth.principal}


@bp.errorhandler(PyFlowError)
def pyflow_error(error: PyFlowError) -> tuple[str, int]:
    """An error of the runtime (unknown workflow, storage failure) as a page, not JSON."""
    return render_template("error.html", status=error.status, title=error.code.replace("_", " "),
                           message=error.message), error.status


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[str, int]:
    """A 400, 404 or 405 in the dashboard as a page in its style."""
    return render_template("error.html", status=error.code, title=error.name,
                           message=error.description), error.code or 500


def init_app(app: Flask) -> None:
    """Register the dashboard pages, the metrics endpoints and this app's Prometheus registry."""
    app.register_blueprint(bp)
    app.register_blueprint(metrics_bp)
    # One registry per app: several apps in one process (tests) never share metrics.
    registry = CollectorRegistry()
    registry.register(StoreCollector(app.extensions["pyflow"]))
    app.extensions[REGISTRY_KEY] = registry
