"""The workflow action: run another workflow as one step and wait for it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from actions.base import ActionError, BaseAction, SettingError, seconds
from actions.limits import capped

logger = logging.getLogger(__name__)


class SubWorkflowAction(BaseAction):
    """Runs workflow ``workflow`` with ``inputs`` and waits up to ``timeout`` seconds for it.

    Returns ``{"run_id", "status", "steps": {step name: result}, "error"}``. A
    sub-run that fails, is cancelled or does not finish in time fails this
    step (not retried: that would start the sub-workflow again). A workflow
    that would end up calling itself is refused.
    """

    type = "workflow"
    result_keys = ("run_id", "status", "steps", "error")
    # Repeating the step starts another sub-run.
    idempotent = False

    def __init__(self, name: str, *, workflow: str, inputs: Mapping[str, Any] | None = None,
                 timeout: float | str = 300, **options: Any):
        super().__init__(name, **options)
        if not isinstance(workflow, str) or not workflow.strip():
            raise SettingError("workflow", f"action {name!r}: workflow must be a workflow name, got {workflow!r}")
        self.workflow = workflow
        self.inputs = inputs
        # How long to wait for the sub-run; the engine's step timeout is BaseAction.step_timeout.
        self.timeout = timeout

    def execute(self, data_store: dict) -> dict:
        """Refuse cycles, run the sub-workflow, and turn its run into this step's result."""
        name = str(self.workflow).strip()
        chain = [*self.context.call_stack, *([self.context.workflow] if self.context.workflow else [])]
        if name in chain:
            # Start the cycle at the first appearance of the name: "a -> b -> a".
            cycle = chain[chain.index(name):] + [name]
            raise ActionError(f"workflow cycle: {' -> '.join(cycle)}", retryable=False)
        if self.context.run_workflow is None:
            raise ActionError("workflow step needs the PyFlow engine to start a sub-run (no run_workflow service)",
                              retryable=False)
        inputs = {} if self.inputs is None else self.inputs
        if not isinstance(inputs, Mapping):
            raise ActionError(f"workflow: inputs must be a mapping, got {inputs!r}", retryable=False)
        timeout = capped(seconds(self.timeout, "timeout", "workflow"), "WORKFLOW_MAX_STEP_TIMEOUT",
                         self.context.settings, "workflow: timeout")

        run = self.context.run_workflow(name, dict(inputs), timeout)
        run_id, status, error = run.get("id"), run.get("status"), run.get("error")
        logger.info("workflow %s: sub-run %s of %s is %s", self.name, run_id, name, status)
        if status in ("failed", "cancelled"):
            raise ActionError(f"sub-workflow {name} run {run_id} {status}: {error or 'no error recorded'}",
                              retryable=False)
        if status != "succeeded":
            raise ActionError(f"sub-workflow {name} run {run_id} did not finish within {timeout:g} s "
                              f"(status {status})", retryable=False)
        steps = run.get("steps") or []
        if isinstance(steps, Mapping):
            results = dict(steps)
        else:
            results = {step["name"]: step.get("result") for step in steps}
        return {"run_id": run_id, "status": status, "steps": results, "error": error}
