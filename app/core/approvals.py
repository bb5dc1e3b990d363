"""Approvals (DESIGN section 12): signed one-click links, and answering a waiting approval step.

A link carries ``{"run", "step", "nonce", "decision", "until"}`` signed with itsdangerous: the key is
WORKFLOW_SECRET_KEY, else a random key kept as the PyFlow secret APPROVAL_SIGNING_KEY (encrypted in the
store, so every server and worker sharing the store signs and checks alike). A link is valid until the
step's timeout and for the step's own park (its nonce); it works once, since answering takes the step
out of the wake index (``unpark`` is atomic) and a second answer finds nothing waiting (409). An answer
that comes while the step is still executing (its mail just sent) waits for it to be recorded waiting,
and one that comes while the run is busy with another branch is kept for it (app/core/parking.py).
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from app.core.parking import EVENT_PATIENCE, RETRY_SECONDS, Outcome
from app.errors import Conflict, InvalidInput, NotFound
from app.runs import FINISHED_RUN, RunStatus, StepStatus, utcnow

if TYPE_CHECKING:
    from app.core.runtime import Runtime

SIGNING_SECRET = "APPROVAL_SIGNING_KEY"
_SALT = "pyflow-approval-link"
DECISIONS = ("approve", "reject")
MAX_COMMENT = 2000
_ANOTHER_PARK = ("run {run}: step {step!r} was answered before; it waits again (retried) for an answer "
                 "through its newer links, the dashboard or the API")


class LinkRefused(Exception):
    """A link that cannot answer: ``status`` 400 (expired), 403 (tampered) or 409 (answered, no longer waiting)."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class Approvals:
    """Signs and reads approval links, and answers waiting approval steps, for one runtime."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._serializer: Any = None
        self._lock = threading.Lock()

    # -- links ----------------------------------------------------------------------
    def _signer(self) -> Any:
        from itsdangerous import URLSafeSerializer  # imported when a link is made or read, not at start-up

        with self._lock:
            if self._serializer is None:
                key = str(self.runtime.settings.get("WORKFLOW_SECRET_KEY") or "") or self._stored_key()
                self._serializer = URLSafeSerializer(key, salt=_SALT)
            return self._serializer

    def _stored_key(self) -> str:
        """The shared signing key kept as a secret, made on first use."""
        vault = self.runtime.secrets
        if self.runtime.store.get_secret(SIGNING_SECRET) is None:
            vault.set(SIGNING_SECRET, secrets.token_urlsafe(32))
        return vault.get(SIGNING_SECRET)

    def base_url(self) -> str:
        """Where links point: WORKFLOW_PUBLIC_URL, else this server's HOST:PORT."""
        settings = self.runtime.settings
        public = str(settings.get("WORKFLOW_PUBLIC_URL") or "").rstrip("/")
        if public:
            return public
        host = str(settings.get("HOST") or "127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{settings.get('PORT')}"

    def links(self, run_id: str, step: str, until: float, nonce: str) -> dict:
        """The approve and reject links of a waiting step."""
        signer = self._signer()
        base = self.base_url()
        return {decision: f"{base}/approvals/" + signer.dumps(
                    {"run": run_id, "step": step, "nonce": nonce, "decision": decision, "until": until})
                for decision in DECISIONS}

    def read(self, token: str) -> dict:
        """A link's contents once it holds: signed by us (else 403), not expired (400), still waiting (409)."""
        from itsdangerous import BadSignature

        try:
            claim = self._signer().loads(token)
        except BadSignature:
            raise LinkRefused(403, "This link is not valid",
                              "The link was changed or was not made by this PyFlow. Use the link from the "
                              "e-mail exactly as it came, or answer on the dashboard.") from None
        if not isinstance(claim, dict) or claim.get("decision") not in DECISIONS:
            raise LinkRefused(403, "This link is not valid", "The link does not name an approval.")
        if time.time() > float(claim.get("until") or 0):
            raise LinkRefused(400, "This link has expired",
                              f"The approval of step {claim.get('step')!r} in run {claim.get('run')} timed out "
                              f"at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(float(claim['until'])))}; "
                              "its on_timeout decided.")
        step = self._waiting_step(claim["run"], claim["step"], patience=EVENT_PATIENCE)
        if step is None or (step.get("wait") or {}).get("nonce") != claim.get("nonce"):
            raise LinkRefused(409, "Already answered",
                              f"Step {claim['step']!r} of run {claim['run']} no longer waits for an answer: "
                              "it was answered (or cancelled) before.")
        return claim

    def _waiting_step(self, run_id: str, name: str | None, patience: float = 0.0) -> dict | None:
        """The run's approval step ``name`` (or its first) waiting for an answer, else None.

        ``patience``: seconds to wait for an approval step still executing (its mail may be out already, the
        step not yet recorded waiting), rather than answering that nothing waits.
        """
        deadline = time.monotonic() + patience
        while True:
            run = self.runtime.store.get_run(run_id)
            if run is None or run["status"] in FINISHED_RUN:
                return None
            steps = [step for step in run["steps"] if (step["type"] == "approval" or (step.get("wait") or {}).get(
                "for") == "approval") and (name is None or step["name"] == name)]
            waiting = next((step for step in steps if step["status"] == StepStatus.WAITING), None)
            if waiting is not None:
                return waiting
            if not any(step["status"] == StepStatus.RUNNING for step in steps) or time.monotonic() >= deadline:
                return None
            time.sleep(RETRY_SECONDS)

    # -- answers -------------------------------------------------------------------
    def answer(self, run_id: str, approved: bool, by: str, *, step: str | None = None,
               comment: str | None = None, nonce: str | None = None) -> dict:
        """Approve or reject the run's waiting approval step (``step``, or its only one); the run.

        ``nonce``: a link's, which answers only the park it was made for (checked again as the step is taken
        out of the wake index). NotFound for an unknown run; InvalidInput for a comment that is not text;
        Conflict (409) when no approval waits (answered before, timed out, cancelled, not an approval, or
        parked again since the link was made).
        """
        rt = self.runtime
        run = rt.get_run(run_id)
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
            raise InvalidInput(f"comment must be text of at most {MAX_COMMENT} characters",
                               details=[{"path": "comment", "message": "must be a string"}])
        waiting = self._waiting_step(run_id, step, patience=EVENT_PATIENCE)
        if waiting is None:
            what = f"step {step!r}" if step else "an approval step"
            raise Conflict(f"run {run_id} is {run['status']}; {what} is not waiting for an answer "
                           "(answered before, timed out, cancelled, or not an approval)")
        if nonce is not None and (waiting.get("wait") or {}).get("nonce") != nonce:
            raise Conflict(_ANOTHER_PARK.format(run=run_id, step=waiting["name"]))
        woken = rt.parking.wake(run_id, waiting["name"], answered(approved, by, comment),
                                f"{'approved' if approved else 'rejected'} by {by}", patience=EVENT_PATIENCE,
                                nonce=nonce)
        if woken is None and nonce is not None:
            fresh = rt.store.get_run(run_id) or run
            record = next((entry for entry in fresh["steps"] if entry["name"] == waiting["name"]), {})
            if (record.get("wait") or {}).get("nonce") != nonce:
                raise Conflict(_ANOTHER_PARK.format(run=run_id, step=waiting["name"]))
        if woken is None:
            fresh = rt.store.get_run(run_id) or run
            if fresh["status"] == RunStatus.PAUSED:  # an answer already kept for it, applied when it is resumed
                raise Conflict(f"run {run_id} is paused; step {waiting['name']!r} was answered before: that answer "
                               "is kept and applied when the run is resumed")
            raise Conflict(f"run {run_id}: step {waiting['name']!r} was answered before, or at the same moment "
                           "by someone else")
        return rt.store.get_run(run_id) or woken

def answered(approved: bool, by: str, comment: str | None) -> Outcome:
    """The outcome of an approval step answered by ``by``: approved, or failed "rejected by <who>: <comment>"."""
    def outcome(wait: dict) -> dict:
        result = {"approved": approved, "by": by, "comment": comment, "at": utcnow()}
        if approved:
            return {"result": result}
        return {"result": result, "error": f"rejected by {by}" + (f": {comment}" if comment else "")}
    return outcome


def link_decision(claim: dict) -> bool:
    """True for an approve link, False for a reject link."""
    if claim.get("decision") not in DECISIONS:
        raise NotFound("not an approval link")
    return claim["decision"] == "approve"
