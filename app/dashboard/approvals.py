"""Approvals on the dashboard: the waiting-runs view (waiting and paused runs) with Approve and Reject, and the
page a signed link opens.

A link (``/approvals/<token>``, from the approval e-mail) needs no login: its signature is the credential.
Opening it shows what is asked and one button; the answer is the button's POST, so a mail scanner that
fetches links never answers for anyone.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.api import audit
from app.api.routes import RUN_ID, present, runtime
from app.core.approvals import LinkRefused, link_decision
from app.dashboard.blueprint import bp
from app.errors import NotFound, PyFlowError
from app.runs import RunStatus, StepStatus
from app.storage.base import Store

logger = logging.getLogger(__name__)


# Runs of each status (waiting, paused) the page reads: the store's status listing, newest first.
LISTED_PER_STATUS = 100


@bp.get("/waiting")
def approvals() -> str:
    """Runs with a step waiting (waiting or paused): for an approval (Approve, Reject), an event or a time."""
    return render_template("waiting.html", rows=waiting_rows(runtime().store))


def waiting_rows(store: Store) -> list[dict]:
    """One row per waiting step of the waiting and paused runs, newest run first; a paused run's rows carry what
    was kept for the step (``kept``: applied on resume, a second answer is refused) from its wake index entries."""
    waiting, _ = store.list_runs(status=RunStatus.WAITING.value, limit=LISTED_PER_STATUS)
    paused, _ = store.list_runs(status=RunStatus.PAUSED.value, limit=LISTED_PER_STATUS)
    paused = [run for run in paused if any(step["status"] == StepStatus.WAITING for step in run["steps"])]
    runs = sorted(waiting + paused, key=lambda run: run["id"], reverse=True)
    rows = []
    for run in runs:
        kept = {}
        if run["status"] == RunStatus.PAUSED:  # an answer kept for it waits in the index until the resume
            kept = {entry["step"]: entry["outcome"] for entry in store.parked(run["id"]) if entry.get("outcome")}
        shown = present(run)
        steps = [step for step in run["steps"] if step["status"] == StepStatus.WAITING]
        for index, step in enumerate(steps):
            rows.append({"run": shown, "step": step, "wait": step.get("wait") or {}, "first": index == 0,
                         "paused": run["status"] == RunStatus.PAUSED, "kept": kept.get(step["name"])})
    return rows


@bp.post("/runs/<run_id>/<any(approve, reject):decision>")
def answer_approval(run_id: str, decision: str) -> Response:
    """Approve or reject from the waiting-runs view (operator), then back to it."""
    if not RUN_ID.match(run_id):
        raise NotFound(f"no run with id {run_id!r}")
    step = request.form.get("step") or None
    comment = (request.form.get("comment") or "").strip() or None
    who = audit.actor()
    try:
        runtime().approvals.answer(run_id, decision == "approve", who, step=step, comment=comment)
    except PyFlowError as error:
        if error.status == 404:
            raise
        flash(error.message, "error")
    else:
        audit.record(f"approval.{decision}", run_id, {"step": step, "comment": comment, "via": "dashboard"})
        flash(f"{'Approved' if decision == 'approve' else 'Rejected'} step {step} of run {run_id}.", "success")
    return redirect(url_for("dashboard.approvals"))


@bp.route("/approvals/<token>", methods=["GET", "POST"])
def approval_link(token: str) -> tuple[str, int] | str:
    """A signed link: GET shows the question and one button, POST answers; 400 expired, 403 tampered, 409 answered."""
    approvals = runtime().approvals
    try:
        claim = approvals.read(token)
    except LinkRefused as refused:
        return render_template("approval_link.html", outcome="refused", title=refused.title,
                               message=refused.message), refused.status
    approved = link_decision(claim)
    run = runtime().store.get_run(claim["run"]) or {}
    step = next((step for step in run.get("steps", []) if step["name"] == claim["step"]), {})
    if request.method == "GET":
        return render_template("approval_link.html", outcome="ask", approved=approved, claim=claim,
                               wait=step.get("wait") or {}, run=run)
    who = f"{', '.join((step.get('wait') or {}).get('to') or []) or 'someone'} (e-mail link)"
    comment = (request.form.get("comment") or "").strip() or None
    try:
        approvals.answer(claim["run"], approved, who, step=claim["step"], comment=comment)
    except PyFlowError as error:
        return render_template("approval_link.html", outcome="refused", title="Already answered",
                               message=error.message), 409
    audit.record(f"approval.{claim['decision']}", claim["run"], {"step": claim["step"], "comment": comment,
                                                                 "via": "link"}, actor=who)
    return render_template("approval_link.html", outcome="approved" if approved else "rejected", claim=claim,
                           run=run)
