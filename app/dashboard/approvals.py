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
from app.errors import InvalidInput, NotFound, PyFlowError
from app.runs import RunStatus, StepStatus
from app.storage.base import Store

logger = logging.getLogger(__name__)


# Runs one page of the Waiting page shows (each with all its waiting steps); older ones are a link away, as on /runs.
PAGE_SIZE = 50


@bp.get("/waiting")
def approvals() -> str:
    """Runs with a step waiting (waiting or paused): for an approval (Approve, Reject), an event or a time."""
    store = runtime().store
    cursor = request.args.get("cursor") or None
    problems = []
    if cursor is not None and not RUN_ID.match(cursor):
        problems.append("That page link is not valid; showing the newest waiting runs.")
        cursor = None
    runs, next_cursor = waiting_runs(store, before=cursor)
    listed = waiting_ids(store)
    skipped = sum(1 for run_id in listed if cursor is not None and run_id >= cursor)
    # The count is read apart from the page: a run that went in between must not leave it below the page's numbers.
    shown = {"first": skipped + 1, "last": skipped + len(runs), "total": max(len(listed), skipped + len(runs))}
    return render_template("waiting.html", rows=waiting_rows(store, runs), cursor=cursor, next_cursor=next_cursor,
                           shown=shown, problems=problems)


def waiting_runs(store: Store, *, before: str | None = None, limit: int | None = None) -> tuple[list[dict], str | None]:
    """The waiting runs and the paused runs with a step waiting, newest first, older than the run id ``before``,
    and the cursor of the next page (None on the last), as ``Store.list_runs`` pages one status.

    Found in the store's indexes (``waiting_ids``), then only the page's runs are read: paused runs with no
    step waiting, however many, cost nothing.
    """
    limit = limit or PAGE_SIZE
    ids = [run_id for run_id in waiting_ids(store) if before is None or run_id < before]
    page = []
    for run_id in ids[:limit]:
        run = store.get_run(run_id)
        # It may have gone on since the index was read (answered, resumed, cancelled): then it is left out.
        if run is not None and (run["status"] == RunStatus.WAITING
                                or run["status"] == RunStatus.PAUSED and _has_a_step_waiting(run)):
            page.append(run)
    return page, (ids[limit - 1] if len(ids) > limit else None)


def waiting_ids(store: Store) -> list[str]:
    """Ids of every run the Waiting page lists, newest first (its count), from the store's indexes, no run read:
    the waiting ones, and the paused ones with an entry in the wake index (a paused run's waiting steps stay
    indexed, an answer that came meanwhile kept there)."""
    paused = set(store.find_run_ids({RunStatus.PAUSED.value})) & store.parked_run_ids()
    return sorted(paused.union(store.find_run_ids({RunStatus.WAITING.value})), reverse=True)


def _has_a_step_waiting(run: dict) -> bool:
    return any(step["status"] == StepStatus.WAITING for step in run["steps"])


def waiting_rows(store: Store, runs: list[dict]) -> list[dict]:
    """One row per waiting step of ``runs`` (from ``waiting_runs``), in their order; a paused run's rows carry what
    was kept for the step (``kept``: applied on resume, a second answer is refused) from its wake index entries."""
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
    return back_to_waiting()


def back_to_waiting() -> Response:
    """Back to the page of the Waiting page a form came from (its ``cursor``), after an answer or a resume."""
    cursor = request.form.get("cursor") or None
    return redirect(url_for("dashboard.approvals", cursor=cursor if cursor and RUN_ID.match(cursor) else None))


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
    if request.method != "POST":  # HEAD too: link scanners send it, and only the button answers
        return render_template("approval_link.html", outcome="ask", approved=approved, claim=claim,
                               wait=step.get("wait") or {}, run=run)
    who = f"{', '.join((step.get('wait') or {}).get('to') or []) or 'someone'} (e-mail link)"
    comment = (request.form.get("comment") or "").strip() or None
    try:
        approvals.answer(claim["run"], approved, who, step=claim["step"], comment=comment,
                         nonce=claim.get("nonce"))
    except InvalidInput as error:  # the comment: the step still waits, the page says what to change
        return render_template("approval_link.html", outcome="refused", title="Not answered",
                               message=error.message), 422
    except PyFlowError as error:
        return render_template("approval_link.html", outcome="refused", title="Already answered",
                               message=error.message), 409
    audit.record(f"approval.{claim['decision']}", claim["run"], {"step": claim["step"], "comment": comment,
                                                                 "via": "link"}, actor=who)
    return render_template("approval_link.html", outcome="approved" if approved else "rejected", claim=claim,
                           run=run)
