"""Test-only actions, triggers and workflows."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from actions.base import ActionError, BaseAction
from triggers.base import BaseTrigger
from triggers.interval import IntervalTrigger
from workflows.base import Workflow


class EchoAction(BaseAction):
    """Returns its rendered ``value``: the best action in the world."""

    def __init__(self, name: str, value=None, **options):
        super().__init__(name, **options)
        self.value = value

    def execute(self, data_store: dict) -> dict:
        return {"value": self.value}


class FlakyAction(BaseAction):
    """Fails its first ``failures`` attempts per run, then succeeds."""

    def __init__(self, name: str, failures: int = 1, **options):
        super().__init__(name, **options)
        self.failures = failures

    def execute(self, data_store: dict) -> dict:
        if self.context.attempt <= self.failures:
            raise ConnectionError(f"attempt {self.context.attempt} refused")
        return {"attempt": self.context.attempt}


class FailAction(BaseAction):
    """Always fails with a message that says so."""

    def execute(self, data_store: dict) -> dict:
        raise ActionError("this step always fails", retryable=False)


class SleepAction(BaseAction):
    """Sleeps ``seconds`` (a hanging action when the number is large)."""

    def __init__(self, name: str, seconds: float = 0.1, **options):
        super().__init__(name, **options)
        self.seconds = seconds

    def execute(self, data_store: dict) -> dict:
        time.sleep(float(self.seconds))
        return {"slept": float(self.seconds)}


class AppendLineAction(BaseAction):
    """Appends ``line`` to ``path`` (relative to the storage folder): a side effect tests can count."""

    def __init__(self, name: str, path: str, line: str, **options):
        super().__init__(name, **options)
        self.path = path
        self.line = line

    def execute(self, data_store: dict) -> dict:
        with open(Path(self.context.storage_path) / self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{self.line}\n")
        return {"written": self.line}


class SecretAction(BaseAction):
    """Returns a result with a secret-named key."""

    def execute(self, data_store: dict) -> dict:
        return {"user": "bob", "password": "hunter2", "nested": {"api_key": "k-123"}}


class QueueTrigger(BaseTrigger):
    """Fires once per item put into the class-level queue ``items``."""

    type = "queue"
    items: list[dict] = []
    lock = threading.Lock()

    def poll(self) -> list[dict]:
        with self.lock:
            events, QueueTrigger.items[:] = list(QueueTrigger.items), []
        seen = self.state.setdefault("seen", 0)
        self.state["seen"] = seen + len(events)
        return events

    def is_triggered(self) -> bool:
        return bool(QueueTrigger.items)


class BrokenTrigger(BaseTrigger):
    """Raises on every poll, like a mail server that is down."""

    type = "broken"
    default_check_interval = 0.05

    def is_triggered(self) -> bool:
        raise ConnectionRefusedError("server 127.0.0.1:9 refused connection")


class EchoWorkflow(Workflow):
    name = "echo"
    description = "Echoes the posted text."
    actions = [
        EchoAction("echo", value="{{ inputs.text }}"),
        EchoAction("shout", value="{{ steps.echo.value | upper }}"),
    ]


class FlakyWorkflow(Workflow):
    name = "flaky"
    description = "Fails twice, then succeeds."
    retry_delay = 0.01
    max_retries = 2
    actions = [FlakyAction("flaky", failures=2)]


class FailingWorkflow(Workflow):
    name = "failing"
    description = "Its second step always fails."
    actions = [EchoAction("first", value=1), FailAction("boom"), EchoAction("never", value=2)]


class SlowWorkflow(Workflow):
    name = "slow"
    description = "Sleeps the posted number of seconds."
    actions = [SleepAction("sleep", seconds="{{ inputs.seconds or 0.2 }}")]


class HangingWorkflow(Workflow):
    name = "hanging"
    description = "A step that hangs past its timeout."
    max_retries = 0
    step_timeout = 0.3
    actions = [SleepAction("hang", seconds=30)]


class SecretWorkflow(Workflow):
    name = "secretive"
    description = "Returns secrets that must be redacted."
    actions = [SecretAction("leak")]


class QueueWorkflow(Workflow):
    name = "queued_events"
    description = "One run per queued event."
    trigger = QueueTrigger("queue")
    check_interval = 0.05
    actions = [EchoAction("echo", value="{{ trigger_data.n }}")]


class BrokenTriggerWorkflow(Workflow):
    name = "broken_trigger"
    description = "Its trigger raises on every poll."
    trigger = BrokenTrigger("broken")
    actions = [EchoAction("echo", value=1)]


class TickWorkflow(Workflow):
    name = "tick"
    description = "Appends a line to ticks.txt in the storage folder every 0.2 s."
    trigger = IntervalTrigger("tick", seconds=0.2)
    actions = [AppendLineAction("append", path="ticks.txt", line="{{ run.id }}")]


class InputsWorkflow(Workflow):
    name = "typed_inputs"
    description = "Requires an integer count."
    inputs_schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    actions = [EchoAction("echo", value="{{ inputs.count * 2 }}")]


WORKFLOWS = [
    EchoWorkflow, FlakyWorkflow, FailingWorkflow, SlowWorkflow, HangingWorkflow, SecretWorkflow,
    QueueWorkflow, BrokenTriggerWorkflow, TickWorkflow, InputsWorkflow,
]


def side_effect_lines(path: Path) -> list[str]:
    """Lines an AppendLineAction wrote."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
