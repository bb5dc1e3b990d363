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
    EchoWorkflow,
    FlakyWorkflow,
    FailingWorkflow,
    SlowWorkflow,
    HangingWorkflow,
    SecretWorkflow,
    QueueWorkflow,
    BrokenTriggerWorkflow,
    TickWorkflow,
    InputsWorkflow,
]


def side_effect_lines(path: Path) -> list[str]:
    """Lines an AppendLineAction wrote."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# -- Added for the core tests (engine, runtime, API) ---------------------------------------------

# Run id -> time.monotonic() of every attempt of a TimedFlakyAction in that run.
ATTEMPT_TIMES: dict[str, list[float]] = {}


class TimedFlakyAction(FlakyAction):
    """A FlakyAction that records when each attempt started, to measure the backoff."""

    def execute(self, data_store: dict) -> dict:
        ATTEMPT_TIMES.setdefault(self.context.run_id, []).append(time.monotonic())
        return super().execute(data_store)


class PeekAction(BaseAction):
    """Returns what the data store holds under ``key``: how an action reads earlier results without templates."""

    def __init__(self, name: str, key: str, **options):
        super().__init__(name, **options)
        self.key = key

    def execute(self, data_store: dict) -> dict:
        return {"seen": data_store.get(self.key)}


class ProbeAction(BaseAction):
    """Sleeps ``seconds`` and counts how many probes execute at once (``ProbeAction.peak``)."""

    lock = threading.Lock()
    active = 0
    peak = 0

    def __init__(self, name: str, seconds: float = 0.2, **options):
        super().__init__(name, **options)
        self.seconds = seconds

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.active = cls.peak = 0

    def execute(self, data_store: dict) -> dict:
        with ProbeAction.lock:
            ProbeAction.active += 1
            ProbeAction.peak = max(ProbeAction.peak, ProbeAction.active)
        try:
            time.sleep(float(self.seconds))
        finally:
            with ProbeAction.lock:
                ProbeAction.active -= 1
        return {"slept": float(self.seconds)}


class SlowEchoAction(BaseAction):
    """Reads its rendered ``value`` before and after a pause, so concurrent runs would see each other's."""

    def __init__(self, name: str, value=None, seconds: float = 0.2, **options):
        super().__init__(name, **options)
        self.value = value
        self.seconds = seconds

    def execute(self, data_store: dict) -> dict:
        before = self.value
        time.sleep(float(self.seconds))
        return {"before": before, "after": self.value}


class NonJsonAction(BaseAction):
    """Returns a set, which JSON cannot hold."""

    def execute(self, data_store: dict) -> dict:
        return {"items": {1, 2, 3}}


class OnceAction(AppendLineAction):
    """An AppendLineAction that must not be repeated after a crash (like sending an e-mail)."""

    idempotent = False


class UnprintableError(Exception):
    """An exception whose message cannot even be turned into a string."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class UnprintableAction(BaseAction):
    """Raises an UnprintableError."""

    def execute(self, data_store: dict) -> dict:
        raise UnprintableError()


class SecretTrigger(BaseTrigger):
    """A trigger configured with credentials, which a Summary must never show."""

    type = "vault"
    pollable = False

    def __init__(self, name: str, password: str, api_key: str, token: str, host: str = "vault.example"):
        super().__init__(name)
        self.password = password
        self.api_key = api_key
        self.token = token
        self.host = host

    def is_triggered(self) -> bool:
        return False


class DataFlowWorkflow(Workflow):
    name = "data_flow"
    description = "Passes results from step to step."
    actions = [
        EchoAction("first", value="{{ trigger_data.x }}"),
        PeekAction("peek", key="first"),
        EchoAction(
            "combined", value="{{ steps.first.value }}-{{ inputs.x }}-{{ steps.peek.seen.value }}-{{ run.workflow }}"
        ),
        PeekAction("trigger", key="trigger_data"),
    ]


class NativeTypesWorkflow(Workflow):
    name = "native_types"
    description = "Single expressions keep their types."
    actions = [
        EchoAction("whole", value="{{ inputs.payload }}"),
        EchoAction("count", value="{{ inputs.n + 1 }}"),
        EchoAction("text", value="n={{ inputs.n }}"),
        EchoAction("nested", value={"list": ["{{ inputs.n }}", "{{ steps.whole.value.a }}"], "plain": 7}),
        EchoAction("secret_setting", value="{{ settings.SMTP_PASSWORD }}"),
    ]


class BackoffWorkflow(Workflow):
    name = "backoff"
    description = "Fails twice with a 0.2 s backoff base, then succeeds."
    retry_delay = 0.2
    max_retries = 2
    actions = [TimedFlakyAction("flaky", failures=2)]


class NoRetryWorkflow(Workflow):
    name = "no_retry"
    description = "Fails once and may not retry."
    max_retries = 0
    actions = [FlakyAction("flaky", failures=1)]


class ProbeWorkflow(Workflow):
    name = "probe"
    description = "Sleeps 0.3 s and counts concurrent executions."
    actions = [ProbeAction("probe", seconds=0.3)]


class SkipWorkflow(Workflow):
    name = "maybe"
    description = "Its middle step runs only when the input go is true."
    actions = [
        EchoAction("check", value="{{ inputs.go }}"),
        EchoAction("act", value="acted", when="{{ steps.check.value }}"),
        EchoAction("after", value="{{ steps.act.value or 'nothing' }}"),
    ]


class NonJsonWorkflow(Workflow):
    name = "non_json"
    description = "Its step returns a set."
    max_retries = 3
    retry_delay = 0.01
    actions = [NonJsonAction("bad")]


class BadTemplateWorkflow(Workflow):
    name = "bad_template"
    description = "A template deep in a field uses an unknown filter."
    max_retries = 3
    actions = [
        EchoAction("ok", value=1),
        EchoAction("render", value={"deep": ["fine", "{{ inputs.n | no_such_filter }}"]}),
    ]


class SharedActionWorkflow(Workflow):
    name = "shared"
    description = "One action instance serves every run."
    actions = [SlowEchoAction("slow_echo", value="{{ inputs.n }}", seconds=0.2)]


class ResumableWorkflow(Workflow):
    name = "resumable"
    description = "Three idempotent steps that append to resume.txt."
    actions = [
        AppendLineAction("first", path="resume.txt", line="first"),
        AppendLineAction("second", path="resume.txt", line="second after {{ steps.first.written }}"),
        AppendLineAction("third", path="resume.txt", line="third"),
    ]


class SendOnceWorkflow(Workflow):
    name = "send_once"
    description = "Its second step must never run twice."
    actions = [
        EchoAction("prepare", value="ready"),
        OnceAction("send", path="sent.txt", line="sent"),
        EchoAction("after", value="done"),
    ]


class UnprintableWorkflow(Workflow):
    name = "unprintable"
    description = "Its action raises an exception that cannot be printed."
    max_retries = 1
    retry_delay = 0.01
    actions = [UnprintableAction("weird")]


class SecretTriggerWorkflow(Workflow):
    name = "secret_trigger"
    description = "Its trigger holds credentials."
    trigger = SecretTrigger("vault", password="hunter2", api_key="k-123", token="t-456")
    actions = [EchoAction("echo", value="{{ inputs.user }}")]


CORE_WORKFLOWS = [
    DataFlowWorkflow,
    NativeTypesWorkflow,
    BackoffWorkflow,
    NoRetryWorkflow,
    ProbeWorkflow,
    SkipWorkflow,
    NonJsonWorkflow,
    BadTemplateWorkflow,
    SharedActionWorkflow,
    ResumableWorkflow,
    SendOnceWorkflow,
    UnprintableWorkflow,
    SecretTriggerWorkflow,
]


class SlowThenEchoWorkflow(Workflow):
    name = "slow_then_echo"
    description = "A 0.3 s step, then a quick one: a run a shutdown can stop between steps."
    actions = [SleepAction("sleep", seconds=0.3), EchoAction("echo", value="{{ steps.sleep.slept }}")]


CORE_WORKFLOWS.append(SlowThenEchoWorkflow)


def wait_until(condition, timeout: float = 3.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition()`` until it returns something truthy, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout} s (last value: {value!r})")
        time.sleep(interval)
