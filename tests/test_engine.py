"""The engine: step order, data flow, retries, timeouts, concurrency, templates and resuming runs."""

from __future__ import annotations

import errno
import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions.base import BaseAction
from app.core.binding import BoundWorkflow
from app.core.config import load_settings
from app.core.engine import Engine
from app.runs import new_run, new_step
from app.storage.json.store import JsonStore
from app.storage.memory import MemoryStore
from tests.conftest import TEST_SETTINGS
from tests.disks import tmpfs
from tests.fixtures import (
    ATTEMPT_TIMES,
    BackoffWorkflow,
    BadTemplateWorkflow,
    DataFlowWorkflow,
    EchoAction,
    EchoWorkflow,
    FailingWorkflow,
    FlakyWorkflow,
    HangingWorkflow,
    NativeTypesWorkflow,
    NonJsonWorkflow,
    NoRetryWorkflow,
    ProbeAction,
    ProbeWorkflow,
    ResumableWorkflow,
    SendOnceWorkflow,
    SharedActionWorkflow,
    SkipWorkflow,
    SlowThenEchoWorkflow,
    UnprintableWorkflow,
    side_effect_lines,
)
from tests.waiting import threads_in, wait_until
from workflows.base import Workflow

SETTINGS = {**load_settings({}), **TEST_SETTINGS, "SMTP_PASSWORD": "smtp-secret"}
UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def make_engine(store, **settings) -> Engine:
    return Engine(store, {**SETTINGS, **settings})


def bind(engine: Engine, workflow) -> BoundWorkflow:
    return BoundWorkflow.bind(workflow, engine.settings, engine.renderer)


def finish(engine: Engine, run: dict, timeout: float = 5.0) -> dict:
    """Wait for ``run`` to finish and return it as stored."""
    assert engine.wait(run["id"], timeout), f"run {run['id']} did not finish within {timeout} s"
    return engine.store.get_run(run["id"])


def run_once(engine: Engine, workflow, inputs: dict | None = None, timeout: float = 5.0) -> dict:
    """Submit one run of ``workflow`` and return it as stored once it finished."""
    run, created = engine.submit(bind(engine, workflow), inputs or {})
    assert created
    return finish(engine, run, timeout)


def step(run: dict, name: str) -> dict:
    return next(record for record in run["steps"] if record["name"] == name)


@pytest.fixture(params=["memory", "json"])
def store(request, tmp_path):
    """Both stores: the engine must behave the same over either."""
    if request.param == "memory":
        (tmp_path / "memory").mkdir()
        return MemoryStore(tmp_path / "memory")
    return JsonStore(tmp_path / "data")


@pytest.fixture
def engine(store):
    engine = make_engine(store)
    yield engine
    engine.shutdown(timeout=2)


@pytest.fixture
def json_engine(tmp_path):
    """An engine over the JSON store, for the slower tests that need only one store."""
    engine = make_engine(JsonStore(tmp_path / "data"))
    yield engine
    engine.shutdown(timeout=2)


# -- order and data flow ------------------------------------------------------------------------


def test_steps_run_in_order_and_results_flow(engine):
    run = run_once(engine, DataFlowWorkflow, {"x": "a"})
    assert run["status"] == "succeeded", run
    assert [record["name"] for record in run["steps"]] == ["first", "peek", "combined", "trigger"]
    assert all(record["status"] == "succeeded" for record in run["steps"])
    assert step(run, "first")["result"] == {"value": "a"}
    # The action reads data_store["first"] directly, without templates.
    assert step(run, "peek")["result"] == {"seen": {"value": "a"}}
    assert step(run, "combined")["result"] == {"value": "a-a-a-data_flow"}
    assert step(run, "trigger")["result"] == {"seen": {"x": "a"}}
    started = [record["started_at"] for record in run["steps"]]
    assert started == sorted(started)


def test_run_record_has_utc_timestamps_durations_and_progress(engine):
    before = time.time()
    run = run_once(engine, EchoWorkflow, {"text": "hi"})
    assert run["status"] == "succeeded"
    assert run["progress"] == 100
    assert run["error"] is None
    assert run["workflow"] == "echo"
    assert run["trigger_data"] == {"text": "hi"}
    assert run["id"].startswith("run_")
    stamps = [run["created_at"], run["started_at"], run["finished_at"]]
    stamps += [record[key] for record in run["steps"] for key in ("started_at", "finished_at")]
    for stamp in stamps:
        assert UTC_ISO.match(stamp), stamp
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert moment.tzinfo == UTC
        assert before - 1 <= moment.timestamp() <= time.time() + 1
    assert run["created_at"] <= run["started_at"] <= run["finished_at"]
    for record in run["steps"]:
        assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0
        assert record["attempts"] == 1
        assert record["error"] is None
    assert step(run, "shout")["result"] == {"value": "HI"}


def test_submit_answers_a_queued_run_before_it_executes(engine):
    run, created = engine.submit(bind(engine, EchoWorkflow), {"text": "x"})
    assert created
    assert run["status"] == "queued"
    assert [record["status"] for record in run["steps"]] == ["pending", "pending"]
    assert finish(engine, run)["status"] == "succeeded"


def test_the_outcome_of_an_awaited_run_is_the_run_as_stored(engine):
    run, _ = engine.submit(bind(engine, DataFlowWorkflow), {"x": "a"}, awaited=True)
    outcome = engine.outcome(run["id"], 5)
    assert outcome["status"] == "succeeded"
    assert outcome == engine.store.get_run(run["id"])
    assert engine.outcome(run["id"], 5) is None  # read once: a second waiter reads the store


def test_no_outcome_is_kept_for_a_waiter_that_gave_up(engine):
    run, _ = engine.submit(bind(engine, SlowThenEchoWorkflow), {}, awaited=True)
    assert engine.outcome(run["id"], 0.01) is None  # still running
    assert engine.wait(run["id"], 5)
    assert engine.outcome(run["id"], 5) is None


def test_when_false_skips_the_step_and_later_steps_see_none(engine):
    skipped = run_once(engine, SkipWorkflow, {"go": False})
    assert skipped["status"] == "succeeded"
    assert [record["status"] for record in skipped["steps"]] == ["succeeded", "skipped", "succeeded"]
    assert step(skipped, "act")["result"] is None
    assert step(skipped, "act")["attempts"] == 0
    assert step(skipped, "after")["result"] == {"value": "nothing"}
    assert skipped["progress"] == 100

    done = run_once(engine, SkipWorkflow, {"go": True})
    assert [record["status"] for record in done["steps"]] == ["succeeded"] * 3
    assert step(done, "after")["result"] == {"value": "acted"}


def test_the_server_log_names_the_step_a_line_is_about(engine, caplog):
    # The run's log has a step column; the server's log has one line of text, which must say it.
    with caplog.at_level(logging.INFO, logger="app.core.engine"):
        run = run_once(engine, SkipWorkflow, {"go": False})
    lines = [record.getMessage() for record in caplog.records if run["id"] in record.getMessage()]
    assert f"run {run['id']} of maybe, step act: skipped: its condition (when) is false" in lines, lines
    assert f"run {run['id']} of maybe: run succeeded" in lines, lines


# -- retries and failures -----------------------------------------------------------------------


def test_a_failing_step_is_retried_until_it_succeeds(engine):
    run = run_once(engine, FlakyWorkflow)
    assert run["status"] == "succeeded"
    flaky = step(run, "flaky")
    assert flaky["attempts"] == 3
    assert flaky["result"] == {"attempt": 3}
    assert flaky["error"] is None


def test_retries_wait_an_exponential_backoff(json_engine):
    """retry_delay 0.2: the 2nd attempt waits 0.1-0.2 s, the 3rd 0.2-0.4 s (equal jitter: at least half).

    Read from the waits the run's log announces, not from a clock: the delays the engine chose, to 0.1 s.
    """
    run = run_once(json_engine, BackoffWorkflow)
    assert run["status"] == "succeeded"
    assert step(run, "flaky")["attempts"] == 3
    assert len(ATTEMPT_TIMES[run["id"]]) == 3
    waits = [float(found.group(1)) for line in json_engine.store.get_logs(run["id"])
             if (found := re.search(r"; retrying in ([0-9.]+) s$", line["message"]))]
    assert len(waits) == 2, waits
    assert 0.1 <= waits[0] <= 0.2 and 0.2 <= waits[1] <= 0.4, waits


def test_max_retries_zero_fails_after_one_attempt(engine):
    run = run_once(engine, NoRetryWorkflow)
    assert run["status"] == "failed"
    flaky = step(run, "flaky")
    assert flaky["status"] == "failed"
    assert flaky["attempts"] == 1
    assert flaky["error"] == "ConnectionError: attempt 1 refused"
    assert run["error"] == "step 'flaky' failed: ConnectionError: attempt 1 refused"


def test_non_retryable_action_error_fails_at_once_and_names_the_step(engine):
    """FailingWorkflow may retry 3 times (the setting), but its ActionError says retrying cannot help."""
    run = run_once(engine, FailingWorkflow)
    assert run["status"] == "failed"
    assert [record["status"] for record in run["steps"]] == ["succeeded", "failed", "pending"]
    boom = step(run, "boom")
    assert boom["attempts"] == 1
    assert boom["error"] == "this step always fails"
    assert run["error"] == "step 'boom' failed: this step always fails"
    assert step(run, "never")["attempts"] == 0
    assert run["finished_at"] is not None


def test_non_json_result_fails_with_a_clear_message_and_no_retry(engine):
    run = run_once(engine, NonJsonWorkflow)
    assert run["status"] == "failed"
    bad = step(run, "bad")
    assert bad["attempts"] == 1
    assert bad["error"].startswith("returned a result that is not JSON")
    assert "set" in bad["error"]
    assert run["error"].startswith("step 'bad' failed: returned a result that is not JSON")


def test_an_exception_that_cannot_be_printed_still_fails_the_run(engine):
    """A broken __str__ must not leave the run 'running' forever."""
    run = run_once(engine, UnprintableWorkflow)
    assert run["status"] == "failed"
    weird = step(run, "weird")
    assert weird["attempts"] == 2
    assert weird["error"] == "UnprintableError"
    assert run["error"] == "step 'weird' failed: UnprintableError"


# -- timeouts and concurrency ---------------------------------------------------------------------


def test_a_hanging_step_times_out_while_other_runs_complete(engine):
    hanging, _ = engine.submit(bind(engine, HangingWorkflow), {})
    echoes = [engine.submit(bind(engine, EchoWorkflow), {"text": str(n)})[0] for n in range(3)]
    for echo in echoes:
        assert finish(engine, echo, timeout=2)["status"] == "succeeded"
    # The others finished while the hanging step was still within its 0.3 s.
    assert engine.store.get_run(hanging["id"])["status"] in ("queued", "running")

    run = finish(engine, hanging, timeout=3)
    assert run["status"] == "failed"
    hang = step(run, "hang")
    assert hang["error"] == "timed out after 0.3 s"
    assert hang["attempts"] == 1
    assert hang["duration_ms"] >= 250  # it ran until its timeout
    assert run["error"] == "step 'hang' failed: timed out after 0.3 s"


def test_a_hanging_step_gives_its_slot_back_after_the_timeout(tmp_path):
    """With one slot, a run queued behind a hanging step runs once the step timed out."""
    engine = make_engine(JsonStore(tmp_path / "data"), WORKFLOW_MAX_CONCURRENT=1)
    try:
        hanging, _ = engine.submit(bind(engine, HangingWorkflow), {})
        echo, _ = engine.submit(bind(engine, EchoWorkflow), {"text": "after"})
        assert finish(engine, echo, timeout=3)["status"] == "succeeded"
        assert finish(engine, hanging, timeout=1)["status"] == "failed"
    finally:
        engine.shutdown(timeout=1)


def test_at_most_max_concurrent_runs_execute_and_the_rest_wait_queued(tmp_path):
    store = JsonStore(tmp_path / "data")
    engine = make_engine(store, WORKFLOW_MAX_CONCURRENT=2)
    ProbeAction.reset()
    ProbeAction.gate = threading.Event()  # the probes hold until the test has seen who runs and who waits
    try:
        bound = bind(engine, ProbeWorkflow)
        runs = [engine.submit(bound, {})[0] for _ in range(5)]
        wait_until(lambda: ProbeAction.active == 2, message="two runs executing their probe")
        # The other three wait queued (a started run's own "running" may still be deferred: not counted on).
        queued = [run for run in runs if store.get_run(run["id"])["status"] == "queued"]
        assert len(queued) >= 3
        peak_running = 0

        def all_succeeded() -> bool:
            nonlocal peak_running
            statuses = [store.get_run(run["id"])["status"] for run in runs]
            peak_running = max(peak_running, statuses.count("running"))
            return all(status == "succeeded" for status in statuses)

        ProbeAction.gate.set()
        wait_until(all_succeeded, timeout=10, interval=0.01, message="five runs, two at a time")
        assert peak_running <= 2
        assert ProbeAction.peak == 2
    finally:
        engine.shutdown(timeout=2)


def test_one_action_instance_serves_concurrent_runs_with_their_own_values(engine):
    action = SharedActionWorkflow.actions[0]
    bound = bind(engine, SharedActionWorkflow)
    runs = [engine.submit(bound, {"n": n})[0] for n in range(5)]
    for n, run in enumerate(runs):
        done = finish(engine, run)
        assert done["status"] == "succeeded"
        assert step(done, "slow_echo")["result"] == {"before": n, "after": n}
    # The class-level instance still holds its template, not some run's value.
    assert action.value == "{{ inputs.n }}"


# -- templates ------------------------------------------------------------------------------------


def test_a_single_expression_keeps_its_native_type(engine):
    run = run_once(engine, NativeTypesWorkflow, {"payload": {"a": [1, 2], "b": None}, "n": 41})
    assert run["status"] == "succeeded", run["error"]
    assert step(run, "whole")["result"] == {"value": {"a": [1, 2], "b": None}}
    assert step(run, "count")["result"] == {"value": 42}
    assert step(run, "text")["result"] == {"value": "n=41"}
    assert step(run, "nested")["result"] == {"value": {"list": [41, [1, 2]], "plain": 7}}


def test_templates_never_see_secret_settings(engine):
    run = run_once(engine, NativeTypesWorkflow, {"payload": {}, "n": 1})
    assert step(run, "secret_setting")["result"] == {"value": None}


def test_a_template_error_fails_the_step_and_names_the_field(engine):
    run = run_once(engine, BadTemplateWorkflow, {"n": 1})
    assert run["status"] == "failed"
    render = step(run, "render")
    assert render["status"] == "failed"
    assert render["attempts"] == 0  # nothing was executed, so nothing was retried
    assert "no_such_filter" in render["error"]
    assert "field 'value'.deep[1]" in render["error"]
    assert run["error"].startswith("step 'render' failed: step 'render': field 'value'")


# -- resuming after a restart ---------------------------------------------------------------------


def stored_mid_way(store, workflow, finished: int, running: bool) -> dict:
    """Store a run of ``workflow`` as a crash would leave it: ``finished`` steps done, maybe one running."""
    steps = [new_step(action.name, action.type) for action in workflow.actions]
    for index in range(finished):
        steps[index].update(
            status="succeeded",
            attempts=1,
            started_at="2026-01-01T10:00:00.000Z",
            finished_at="2026-01-01T10:00:01.000Z",
            duration_ms=1000,
            result={"written": workflow.actions[index].name},
        )
    if running:
        steps[finished].update(status="running", attempts=1, started_at="2026-01-01T10:00:02.000Z")
    run = new_run(workflow.name, steps, {}, "api")
    run.update(status="running", started_at="2026-01-01T10:00:00.000Z")
    store.create_run(run)
    return store.get_run(run["id"])


def test_resume_continues_from_the_first_unfinished_step(engine, store):
    """Step 'first' finished before the crash: it is not run again, and its result still flows."""
    (store.root / "resume.txt").write_text("first\n", encoding="utf-8")
    stored = stored_mid_way(store, ResumableWorkflow, finished=1, running=True)

    engine.resume(bind(engine, ResumableWorkflow), stored)
    run = finish(engine, stored)

    assert run["status"] == "succeeded"
    assert side_effect_lines(store.root / "resume.txt") == ["first", "second after first", "third"]
    assert step(run, "first") == stored["steps"][0]
    assert step(run, "second")["attempts"] == 2  # the interrupted attempt counts
    assert step(run, "third")["attempts"] == 1
    assert run["progress"] == 100


def test_resume_of_an_interrupted_non_idempotent_step_fails_instead_of_repeating_it(engine, store):
    stored = stored_mid_way(store, SendOnceWorkflow, finished=1, running=True)

    engine.resume(bind(engine, SendOnceWorkflow), stored)
    run = finish(engine, stored)

    assert run["status"] == "failed"
    assert step(run, "send")["status"] == "failed"
    assert step(run, "send")["error"] == "interrupted by restart"
    assert run["error"] == "step 'send' failed: interrupted by restart"
    assert step(run, "after")["status"] == "pending"
    assert side_effect_lines(store.root / "sent.txt") == []


def test_resume_of_a_non_idempotent_step_that_had_not_started_runs_it(engine, store):
    """Between steps nothing was interrupted, so the next step may run."""
    stored = stored_mid_way(store, SendOnceWorkflow, finished=1, running=False)

    engine.resume(bind(engine, SendOnceWorkflow), stored)
    run = finish(engine, stored)

    assert run["status"] == "succeeded"
    assert side_effect_lines(store.root / "sent.txt") == ["sent"]


def test_shutdown_stops_at_a_step_boundary_and_a_new_engine_finishes_the_run(tmp_path):
    engine = make_engine(JsonStore(tmp_path / "data"))
    run, _ = engine.submit(bind(engine, SlowThenEchoWorkflow), {})
    wait_until(lambda: threads_in("SleepAction.execute", f"pyflow-{run['id']}"), message="the 0.3 s step executing")
    engine.shutdown(timeout=2)
    stored = JsonStore(tmp_path / "data").get_run(run["id"])
    assert stored["status"] == "running"
    assert [record["status"] for record in stored["steps"]] == ["succeeded", "pending"]

    fresh = make_engine(JsonStore(tmp_path / "data"))
    try:
        fresh.resume(bind(fresh, SlowThenEchoWorkflow), stored)
        run = finish(fresh, stored)
    finally:
        fresh.shutdown(timeout=2)
    assert run["status"] == "succeeded"
    assert step(run, "sleep")["attempts"] == 1
    assert step(run, "echo")["result"] == {"value": 0.3}


def test_runs_of_many_threads_are_all_recorded(engine):
    """Submitting from several threads at once loses no run."""
    bound = bind(engine, EchoWorkflow)
    ids: list[str] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        run, _ = engine.submit(bound, {"text": f"t{n}"})
        with lock:
            ids.append(run["id"])

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 8
    results = sorted(step(finish(engine, {"id": run_id}), "echo")["result"]["value"] for run_id in ids)
    assert results == sorted(f"t{n}" for n in range(8))


# -- parallel branches ----------------------------------------------------------------------------

class _Gauge:
    """Counts the steps executing at once, and the most it saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.peak = 0


class GaugedAction(BaseAction):
    """Holds a branch for a moment while the gauge counts it."""

    gauge = _Gauge()

    def execute(self, data_store: dict) -> dict:
        with self.gauge.lock:
            self.gauge.now += 1
            self.gauge.peak = max(self.gauge.peak, self.gauge.now)
        time.sleep(0.05)  # the behaviour under test: a branch that takes a moment, so others overlap it
        with self.gauge.lock:
            self.gauge.now -= 1
        return {"ran": self.name}


def test_every_independent_step_runs_with_at_most_max_parallel_steps_at_once(engine):
    class SixWide(Workflow):
        name = "six_wide"
        max_parallel_steps = 2
        actions = [GaugedAction(f"s{i}", depends_on=[]) for i in range(6)]

    GaugedAction.gauge = _Gauge()
    finished = run_once(engine, SixWide)
    assert finished["status"] == "succeeded"
    assert [record["status"] for record in finished["steps"]] == ["succeeded"] * 6
    assert [record["result"] for record in finished["steps"]] == [{"ran": f"s{i}"} for i in range(6)]
    assert GaugedAction.gauge.peak == 2


# -- a full disk ----------------------------------------------------------------------------------

class GateAction(BaseAction):
    """Waits until the test opens ``gate``; the step then ends while the test has filled the disk."""

    gate = threading.Event()
    entered = threading.Event()

    def execute(self, data_store: dict) -> dict:
        GateAction.entered.set()
        assert GateAction.gate.wait(30), "the test never opened the gate"
        return {"passed": True, "page": "x" * 16384}  # bigger than the free end of a journal's page


class GatedWorkflow(Workflow):
    name = "gated"
    actions = [GateAction("gate"), EchoAction("after", value="{{ steps.gate.passed }}")]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: a real disk that fills up."""
    with tmpfs(tmp_path / "small", "2m", "the full-disk tests") as mount:
        yield mount


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; the file, whose removal frees the disk."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_run_stopped_by_a_full_disk_resumes_by_itself_once_the_disk_has_room(small_disk, caplog):
    GateAction.gate.clear()
    GateAction.entered.clear()
    engine = make_engine(JsonStore(small_disk / "data"), WORKFLOW_RETRY_DELAY=0.01)
    try:
        run, _ = engine.submit(bind(engine, GatedWorkflow), {})
        assert GateAction.entered.wait(10)
        filler = fill(small_disk)
        GateAction.gate.set()  # the step ends; recording it fails: the disk is full
        wait_until(lambda: "could not record it" in caplog.text, timeout=10, message="the full disk stopping the run")
        assert engine.store.get_run(run["id"])["status"] == "running"

        filler.unlink()  # the disk has room again: nobody restarts anything

        wait_until(lambda: engine.store.get_run(run["id"])["status"] == "succeeded", timeout=60, interval=0.1,
                   message="the run resuming by itself")
        stored = engine.store.get_run(run["id"])
        assert [record["status"] for record in stored["steps"]] == ["succeeded", "succeeded"]
        assert step(stored, "after")["result"] == {"value": True}
    finally:
        GateAction.gate.set()
        engine.shutdown(timeout=2)
