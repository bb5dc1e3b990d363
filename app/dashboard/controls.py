"""The dashboard's forms: start/stop a workflow, run it now with inputs and files, control a run.

Each goes through the same runtime calls as the REST API, so the rules
(input schemas, which control applies when) are the API's.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.api import audit
from app.api.routes import RUN_ID, runtime
from app.api.uploads import save_uploads
from app.core.files import share
from app.dashboard.approvals import back_to_waiting
from app.dashboard.blueprint import bp
from app.dashboard.forms import attach_errors, build_form, read_form
from app.errors import Conflict, InvalidInput, NotFound, PyFlowError

logger = logging.getLogger(__name__)

FILE_FIELD = "files"


@bp.post("/workflows/<name>/<any(start, stop):operation>")
def start_stop(name: str, operation: str) -> Response:
    """Start or stop watching a workflow's trigger, then back to the list."""
    rt = runtime()
    rt.get(name)  # an unknown name is a 404 page, not a flash
    try:
        summary = rt.start_workflow(name) if operation == "start" else rt.stop_workflow(name)
    except Conflict as error:
        flash(error.message, "error")
    else:
        audit.record(f"workflow.{operation}", name, {"via": "dashboard"})
        flash(f"{name} is {summary['status']}.", "success")
    return redirect(url_for("dashboard.workflows"))


@bp.route("/workflows/<name>/run", methods=["GET", "POST"])
def run_now(name: str) -> Response | tuple[str, int] | str:
    """The "run now" form built from the inputs schema; a post starts a run and opens its page."""
    rt = runtime()
    summary = rt.summary(name)
    form = build_form(summary)
    if request.method != "POST":  # HEAD too: it carries no CSRF token, so it never starts a run
        return render_template("run_form.html", summary=summary, form=form, file_field=FILE_FIELD)
    inputs = read_form(form, request.form)
    uploads = [upload for upload in request.files.getlist(FILE_FIELD) if upload.filename] if form.takes_files else []
    if not form.errors:
        try:
            rt.check_inputs(rt.get(name), inputs)  # before saving files a bad form would orphan
            folders: list[str] = []
            if uploads:
                inputs["attachments"], folders = save_uploads(uploads, rt.store.files_path("attachments"))
                share(rt.store, inputs)  # keys, so a worker on another host gets the files (as the API's)
            run, _ = rt.submit(name, inputs, source="dashboard", attachment_folders=folders)
        except InvalidInput as error:
            attach_errors(form, error.details)
        except PyFlowError as error:
            if error.status == 404:
                raise
            form.errors.append(error.message)
        else:
            flash(f"Started run {run['id']} of {name}.", "success")
            return redirect(url_for("dashboard.run", run_id=run["id"]))
    return render_template("run_form.html", summary=summary, form=form, file_field=FILE_FIELD), 422


@bp.post("/runs/<run_id>/<any(cancel, pause, resume, retry, skip):operation>")
def control(run_id: str, operation: str) -> Response:
    """Cancel, pause, resume, retry, or skip a failed step ("skip and continue"), then back to the run."""
    rt = runtime()
    if not RUN_ID.match(run_id):
        raise NotFound(f"no run with id {run_id!r}")
    step = request.form.get("step") or None
    try:
        rt.control(run_id, operation, by="dashboard", step=step)
    except PyFlowError as error:
        if error.status == 404:
            raise
        flash(error.message, "error")
    else:
        audit.record(f"run.{operation}", run_id, {"via": "dashboard", **({"step": step} if step else {})})
        done = {"cancel": "Cancelled", "pause": "Paused", "resume": "Resumed", "retry": "Retrying",
                "skip": f"Skipped {step} and continuing"}[operation]
        flash(f"{done} run {run_id}.", "success")
    if request.form.get("back") == "waiting":  # resumed from the Waiting page: back to the page it was on
        return back_to_waiting()
    return redirect(url_for("dashboard.run", run_id=run_id))
