"""No-op workflows the benchmarks run (loaded by run.py through WORKFLOW_MODULES=bench.noop_workflows)."""

from actions.base import BaseAction
from workflows.base import Workflow


class NoopAction(BaseAction):
    """Does nothing: what remains of a step's cost is the engine's."""

    type = "noop"

    def execute(self, data_store: dict) -> dict:
        return {}


class SyncedNoopAction(NoopAction):
    """A no-op that must not run twice: the engine fsyncs its step's end at once (the durable benchmark)."""

    idempotent = False


class ThreeNoops(Workflow):
    name = "three_noops"
    description = "Three steps that do nothing (benchmarks)."
    actions = [NoopAction("first"), NoopAction("second"), NoopAction("third")]


def chain(steps: int, action: type[NoopAction] = NoopAction) -> type[Workflow]:
    """A workflow of ``steps`` no-op steps of ``action``, each after the one before."""
    return type("Chain", (Workflow,), {"name": "chain", "actions": [action(f"s{i}") for i in range(steps)]})
