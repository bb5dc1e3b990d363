"""Test-only actions, triggers and workflows."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from actions.base import ActionError, BaseAction
from triggers.base import BaseTrigger
from triggers.file import FileTrigger
from triggers.interval import IntervalTrigger
from triggers.webhook import WebhookTrigger
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


# -- Added for the schedule and event triggers (cron, webhook, file) ------------------------------


class ReadTextAction(BaseAction):
    """Reads the text file at ``path``: proves a file trigger's path is there while the run works."""

    def __init__(self, name: str, path: str, **options):
        super().__init__(name, **options)
        self.path = path

    def execute(self, data_store: dict) -> dict:
        return {"text": Path(self.path).read_text(encoding="utf-8")}


class HookWorkflow(Workflow):
    name = "hook"
    description = "An unsigned webhook; echoes the request."
    trigger = WebhookTrigger("hook")
    actions = [EchoAction("echo", value="{{ trigger_data.body }}")]


class SignedHookWorkflow(Workflow):
    name = "signed_hook"
    description = "A webhook signed with the HOOK_SECRET setting, GitHub style."
    trigger = WebhookTrigger("hook", secret="{{ settings.HOOK_SECRET }}")
    actions = [EchoAction("echo", value="{{ trigger_data.body }}")]


class CustomHeaderHookWorkflow(Workflow):
    name = "custom_header_hook"
    description = "A webhook with a literal secret and its own signature header."
    trigger = WebhookTrigger("hook", secret="s3cret", signature_header="X-Signature")
    actions = [EchoAction("echo", value="{{ trigger_data.body }}")]


class UploadHookWorkflow(Workflow):
    name = "upload_hook"
    description = "An unsigned webhook that accepts file uploads because its definition says so."
    trigger = WebhookTrigger("hook", allow_uploads=True)
    actions = [EchoAction("echo", value="{{ trigger_data.body }}")]


class StripeHookWorkflow(Workflow):
    name = "stripe_hook"
    description = "A webhook signed Stripe style (t=...,v1=...) with a literal secret."
    trigger = WebhookTrigger("hook", secret="s3cret", signature_style="stripe")
    actions = [EchoAction("echo", value="{{ trigger_data.body }}")]


class SlackHookWorkflow(Workflow):
    name = "slack_hook"
    description = "A webhook signed Slack style (v0=...) with a literal secret."
    trigger = WebhookTrigger("hook", secret="s3cret", signature_style="slack")
    actions = [EchoAction("echo", value="{{ trigger_data.body }}")]


class ResultHookWorkflow(Workflow):
    name = "result_hook"
    description = "Answers the webhook with its last step's result."
    trigger = WebhookTrigger("hook", response="result")
    actions = [
        EchoAction("first", value="{{ trigger_data.body.n }}"),
        EchoAction("double", value="{{ steps.first.value * 2 }}"),
    ]


class StepResultHookWorkflow(Workflow):
    name = "step_result_hook"
    description = "Answers the webhook with its first step's result."
    trigger = WebhookTrigger("hook", response="result", response_step="first")
    actions = [
        EchoAction("first", value="{{ trigger_data.query.q }}"),
        EchoAction("second", value="ignored"),
    ]


class FailingHookWorkflow(Workflow):
    name = "failing_hook"
    description = "A result-mode webhook whose run fails."
    max_retries = 0
    trigger = WebhookTrigger("hook", response="result")
    actions = [FailAction("boom")]


class SlowHookWorkflow(Workflow):
    name = "slow_hook"
    description = "A result-mode webhook whose run takes 0.3 s."
    trigger = WebhookTrigger("hook", response="result")
    actions = [SleepAction("sleep", seconds=0.3)]


class FileDropWorkflow(Workflow):
    name = "file_drop"
    description = "Reads each .txt file dropped into <WORKFLOW_FILES_ROOT>/inbox."
    trigger = FileTrigger("drop", folder="inbox", pattern="*.txt",
                          settle_seconds=0.1, poll_interval=0.05)
    actions = [ReadTextAction("read", path="{{ trigger_data.path }}")]


TRIGGER_WORKFLOWS = [
    HookWorkflow,
    SignedHookWorkflow,
    CustomHeaderHookWorkflow,
    UploadHookWorkflow,
    StripeHookWorkflow,
    SlackHookWorkflow,
    ResultHookWorkflow,
    StepResultHookWorkflow,
    FailingHookWorkflow,
    SlowHookWorkflow,
    FileDropWorkflow,
]


class DueLaterTrigger(BaseTrigger):
    """Never fires, says it is next due ``seconds`` from now, and counts its polls in ``polls``."""

    type = "due_later"
    default_check_interval = 0.05
    polls = 0

    def __init__(self, name: str, seconds: float = 30.0):
        super().__init__(name)
        self.seconds = seconds

    def poll(self) -> list[dict]:
        DueLaterTrigger.polls += 1
        return []

    def is_triggered(self) -> bool:
        return False

    def next_fire_time(self) -> float:
        return time.time() + self.seconds


# -- Added for durable execution: run control, crash recovery and limits --------------------------
# (tests/test_control.py, tests/test_recovery.py, tests/test_limits.py)

from actions.shell import ShellAction  # noqa: E402  (kept with the block that uses it)
from actions.workflow import SubWorkflowAction  # noqa: E402

# Gate name -> the event a GateAction waits for; a test opens it when the step may go on.
GATES: dict[str, threading.Event] = {}
GATE_ARRIVALS: dict[str, int] = {}
_GATE_LOCK = threading.Lock()
# Set by release_gates(): every gate is open, also one a late step asks for first.
_ALL_GATES_OPEN = threading.Event()


def gate(name: str) -> threading.Event:
    """The gate called ``name`` (closed until ``.set()``, unless release_gates() opened them all)."""
    with _GATE_LOCK:
        event = GATES.setdefault(name, threading.Event())
        if _ALL_GATES_OPEN.is_set():
            event.set()
        return event


def arrivals(name: str) -> int:
    """How many GateAction attempts reached the gate called ``name``."""
    with _GATE_LOCK:
        return GATE_ARRIVALS.get(name, 0)


def release_gates() -> None:
    """Open every gate, now and until reset_gates(): no step waits at one any more."""
    with _GATE_LOCK:
        _ALL_GATES_OPEN.set()
        for event in GATES.values():
            event.set()


def reset_gates() -> None:
    """Start a test with closed gates and no arrivals."""
    with _GATE_LOCK:
        _ALL_GATES_OPEN.clear()
        GATES.clear()
        GATE_ARRIVALS.clear()


class GateAction(BaseAction):
    """Waits until the test opens its gate, ignoring cancellation: a step that hangs, on cue."""

    def __init__(self, name: str, gate: str, hold: float = 30.0, **options):
        super().__init__(name, **options)
        self.gate = gate
        self.hold = hold

    def execute(self, data_store: dict) -> dict:
        event = gate(self.gate)
        with _GATE_LOCK:
            GATE_ARRIVALS[self.gate] = GATE_ARRIVALS.get(self.gate, 0) + 1
        if not event.wait(float(self.hold)):
            raise ActionError(f"gate {self.gate!r} stayed closed for {self.hold} s", retryable=False)
        return {"gate": self.gate}


class NeedsFileAction(BaseAction):
    """Fails (without retrying) until ``path`` exists in the storage folder: a failure a person can fix."""

    def __init__(self, name: str, path: str, **options):
        super().__init__(name, **options)
        self.path = path

    def execute(self, data_store: dict) -> dict:
        if not (Path(self.context.storage_path) / self.path).exists():
            raise ActionError(f"{self.path} is missing", retryable=False)
        return {"found": self.path}


class CountingAction(BaseAction):
    """Sleeps ``seconds`` and records the most attempts of its ``group`` that ever ran at once."""

    lock = threading.Lock()
    active: dict[str, int] = {}
    peak: dict[str, int] = {}

    def __init__(self, name: str, group: str, seconds: float = 0.2, **options):
        super().__init__(name, **options)
        self.group = group
        self.seconds = seconds

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.active.clear()
            cls.peak.clear()

    def execute(self, data_store: dict) -> dict:
        with CountingAction.lock:
            now = CountingAction.active[self.group] = CountingAction.active.get(self.group, 0) + 1
            CountingAction.peak[self.group] = max(CountingAction.peak.get(self.group, 0), now)
        try:
            time.sleep(float(self.seconds))
        finally:
            with CountingAction.lock:
                CountingAction.active[self.group] -= 1
        return {"slept": float(self.seconds)}


class SlowOnceAction(AppendLineAction):
    """Appends its line, then blocks ``seconds``: a non-idempotent step a crash can cut short."""

    idempotent = False

    def __init__(self, name: str, path: str, line: str, seconds: float = 30.0, **options):
        super().__init__(name, path, line, **options)
        self.seconds = seconds

    def execute(self, data_store: dict) -> dict:
        result = super().execute(data_store)
        time.sleep(float(self.seconds))
        return result


class FlakySendAction(FlakyAction):
    """A FlakyAction that must not be repeated after a crash (like sending an e-mail)."""

    idempotent = False


class CountingIntervalTrigger(IntervalTrigger):
    """An interval trigger that counts the events it fires in ``fired``."""

    type = "counting_interval"
    fired = 0

    def get_trigger_data(self) -> dict:
        CountingIntervalTrigger.fired += 1
        return super().get_trigger_data()


class BatchTrigger(BaseTrigger):
    """Fires ``count`` events on every poll."""

    type = "batch"

    def __init__(self, name: str, count: int = 3):
        super().__init__(name)
        self.count = count

    def is_triggered(self) -> bool:
        return True

    def poll(self) -> list[dict]:
        return [{"n": n} for n in range(self.count)]


class GatedWorkflow(Workflow):
    name = "gated"
    description = "Appends a line, waits at the gate 'gated', appends another."
    max_retries = 0
    step_timeout = 60
    actions = [
        AppendLineAction("first", path="gated.txt", line="first {{ inputs.text }}"),
        GateAction("hold", gate="gated"),
        AppendLineAction("last", path="gated.txt", line="last {{ inputs.text }} after {{ steps.first.written }}"),
    ]


class NeedsFileWorkflow(Workflow):
    name = "needs_file"
    description = "Fails at its middle step until needed.txt exists in the storage folder."
    max_retries = 0
    actions = [
        AppendLineAction("first", path="needs_file.txt", line="first"),
        NeedsFileAction("check", path="needed.txt"),
        AppendLineAction("last", path="needs_file.txt", line="last after {{ steps.first.written }}"),
    ]


class NeedsTwoFilesWorkflow(Workflow):
    name = "needs_two_files"
    description = "Fails at step a until a.txt exists, and at step b until b.txt exists."
    max_retries = 0
    actions = [
        NeedsFileAction("a", path="a.txt"),
        NeedsFileAction("b", path="b.txt"),
        AppendLineAction("done", path="needs_two_files.txt", line="done"),
    ]


class FlakySendWorkflow(Workflow):
    name = "flaky_send"
    description = "A non-idempotent step that fails once, then waits a 2 s backoff before its retry."
    max_retries = 1
    retry_delay = 2.0
    actions = [FlakySendAction("send", failures=1)]


class CallsGatedWorkflow(Workflow):
    name = "calls_gated"
    description = "Runs the gated workflow as its one step."
    max_retries = 0
    step_timeout = 60
    actions = [SubWorkflowAction("child", workflow="gated", inputs={"text": "child"}, timeout=60)]


class ShellSleepWorkflow(Workflow):
    name = "shell_sleep"
    description = "A shell command that writes its pid to the input pidfile, then sleeps 30 s."
    max_retries = 0
    step_timeout = 60
    actions = [ShellAction("sleep", command="echo $$ > '{{ inputs.pidfile }}'; exec sleep 30")]


class CrashStepsWorkflow(Workflow):
    name = "crash_steps"
    description = "Four steps that append to crash.txt, with a 0.5 s nap between each two."
    actions = [
        AppendLineAction("one", path="crash.txt", line="one"),
        SleepAction("nap_1", seconds=0.5),
        AppendLineAction("two", path="crash.txt", line="two"),
        SleepAction("nap_2", seconds=0.5),
        AppendLineAction("three", path="crash.txt", line="three"),
        SleepAction("nap_3", seconds=0.5),
        AppendLineAction("four", path="crash.txt", line="four"),
    ]


class SendSlowlyWorkflow(Workflow):
    name = "send_slowly"
    description = "Its non-idempotent middle step writes sent.txt, then blocks 30 s."
    actions = [
        EchoAction("prepare", value="ready"),
        SlowOnceAction("send", path="sent.txt", line="sent", seconds=30),
        EchoAction("after", value="done"),
    ]


class QueuedWorkWorkflow(Workflow):
    name = "queued_work"
    description = "Works 0.3 s, then appends its run id to queued.txt."
    actions = [
        SleepAction("work", seconds=0.3),
        AppendLineAction("record", path="queued.txt", line="{{ run.id }}"),
    ]


class LimitApiWorkflow(Workflow):
    name = "limit_api"
    description = "A counted 0.15 s step, started through the API."
    actions = [CountingAction("count", group="limits", seconds=0.15)]


class LimitTickWorkflow(Workflow):
    name = "limit_tick"
    description = "A counted 0.15 s step, every 0.1 s while started."
    trigger = IntervalTrigger("every", seconds=0.1)
    actions = [CountingAction("count", group="limits", seconds=0.15)]


class LimitPollWorkflow(Workflow):
    name = "limit_poll"
    description = "A counted 0.15 s step per event; every poll brings four events."
    trigger = BatchTrigger("batch", count=4)
    actions = [CountingAction("count", group="limits", seconds=0.15)]


class OneAtATimeWorkflow(Workflow):
    name = "one_at_a_time"
    description = "At most one run at once; the others wait queued. Waits at the gate 'one_at_a_time'."
    max_concurrent_runs = 1
    overlap = "queue"
    step_timeout = 60
    actions = [GateAction("hold", gate="one_at_a_time")]


class NoOverlapWorkflow(Workflow):
    name = "no_overlap"
    description = "Fires every 0.05 s, works 0.3 s; events that come while a run works are skipped."
    max_concurrent_runs = 1
    overlap = "skip"
    trigger = CountingIntervalTrigger("fast", seconds=0.05)
    actions = [CountingAction("work", group="no_overlap", seconds=0.3)]


DURABLE_WORKFLOWS = [
    EchoWorkflow,
    FailingWorkflow,
    GatedWorkflow,
    CallsGatedWorkflow,
    NeedsFileWorkflow,
    NeedsTwoFilesWorkflow,
    FlakySendWorkflow,
    ShellSleepWorkflow,
    LimitApiWorkflow,
    LimitTickWorkflow,
    LimitPollWorkflow,
    OneAtATimeWorkflow,
    NoOverlapWorkflow,
]


def careless_call(token: str) -> dict:
    """A careless module: fails quoting the token it was given (the traceback goes to the console)."""
    raise RuntimeError(f"remote refused token {token}")


def careless_login() -> dict:
    """A careless module: logs the SMTP password and fails with it in the message (tests/security replays it)."""
    password = os.environ.get("SMTP_PASSWORD", "")
    logging.getLogger("tests.fixtures").warning("logging in with password %s", password)
    raise RuntimeError(f"login refused for password {password}")
