"""The login page (when WORKFLOW_API_TOKEN is set) and logout."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.api import audit, auth
from app.dashboard.blueprint import bp

logger = logging.getLogger(__name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int] | tuple[str, int, dict]:
    """Ask for a token (WORKFLOW_API_TOKEN or a stored one); a right one sets a signed session cookie."""
    target = auth.safe_next(request.values.get("next"))
    if not auth.api_token():
        return redirect(target)  # access is open: nothing to log in to
    if request.method != "POST":  # HEAD too: it is a GET without the body, never a login
        return render_template("login.html", next=target, error="")
    wait = auth.locked_out()
    if wait is not None:
        # Checked before the token, so guessing on stops even for a right guess until the minute has passed.
        message = f"Too many failed logins from your address. Try again in {wait} seconds."
        return render_template("login.html", next=target, error=message), 429, {"Retry-After": str(wait)}
    who = auth.authenticate(request.form.get("token", ""))
    if who is not None:
        auth.log_in(who)
        logger.info("dashboard login of %s from %s", who.name, request.remote_addr)
        audit.record("login.success", "dashboard", {"address": request.remote_addr or "", "role": who.role.label},
                     actor=who.name)
        return redirect(target)
    auth.authentication_failed("dashboard login", "dashboard")
    return render_template("login.html", next=target, error="That token is not right."), 401


@bp.post("/logout")
def logout() -> Response:
    """End the session."""
    auth.log_out()
    flash("You are logged out.", "success")
    return redirect(url_for("dashboard.login"))
