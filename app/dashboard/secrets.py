"""The secrets page: names and times, a form to set one, a button to delete one; values are never shown."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.api import audit
from app.api.routes import runtime
from app.dashboard.blueprint import bp
from app.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)


@bp.get("/secrets")
def secrets() -> str:
    """Every secret's name with its created and updated times."""
    return render_template("secrets.html", secrets=runtime().secrets.names(), name="", errors=[])


@bp.post("/secrets")
def set_secret() -> Response | tuple[str, int]:
    """Store the posted name and value (a new secret, or a new value for one), then back to the list."""
    name = request.form.get("name", "").strip()
    try:
        created = runtime().secrets.set(name, request.form.get("value", ""))
    except InvalidInput as error:
        # The value is never sent back into the page: the user types it again.
        return render_template("secrets.html", secrets=runtime().secrets.names(), name=name,
                               errors=[problem["message"] for problem in error.details or []] or [error.message]), 422
    audit.record("secret.set", name)
    flash(f"Secret {name} {'stored' if created else 'replaced'}.", "success")
    return redirect(url_for("dashboard.secrets"))


@bp.post("/secrets/<name>/delete")
def delete_secret(name: str) -> Response:
    """Forget a secret, then back to the list."""
    try:
        runtime().secrets.delete(name)
    except (NotFound, InvalidInput) as error:
        flash(error.message, "error")
    else:
        audit.record("secret.delete", name)
        flash(f"Secret {name} deleted.", "success")
    return redirect(url_for("dashboard.secrets"))
