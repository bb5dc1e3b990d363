"""The scheduler: polls at the time a trigger says it is due, one thread for all, never overlapping."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from app import create_app, start_app
from app.core.scheduler import Scheduler
from app.runs import parse_time
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS, DueLaterTrigger, EchoAction, QueueTrigger, wait_until
from tests.waiting import threads_in
from triggers.base import BaseTrigger
from triggers.interval import IntervalTrigger
from workflows.base import Workflow


class Recorder:
    """A poll function that records when it ran and answers when it wants to run next."""

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[str, float, float | None]] = []  # (name, at, the time it asked for before)
        self.asked: dict[str, float | None] = {}
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, name: str) -> float | None:
        now = time.time()
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls.append((name, now, self.asked.get(name)))
        try:
            at = self.answer(name, now)
        finally:
            with self.lock:
                self.active -= 1
                self.asked[name] = at
        return at

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for called, _, _ in self.calls if called == name)


@pytest.fixture
def make_scheduler():
    schedulers = []

    def make(answer) -> tuple[Scheduler, Recorder]:
        recorder = Recorder(answer)
        scheduler = Scheduler(recorder, maintenance=lambda: None)
        scheduler.start()
        schedulers.append(scheduler)
        return scheduler, recorder

    yield make
    for scheduler in schedulers:
        scheduler.shutdown()


def test_a_poll_runs_at_the_time_the_previous_one_asked_for(make_scheduler):
    scheduler, recorder = make_scheduler(lambda name, now: now + 0.07)
    scheduler.add("wf", interval=30.0)  # the fallback interval never comes into play
    wait_until(lambda: recorder.count("wf") >= 6, message="6 polls")
    scheduler.remove("wf")
    # Six polls within wait_until's 3 s, with a 30 s interval: the answers decided. How late a poll
    # comes on a loaded machine is no test's business: bench/scheduler.py measures it.
    lateness = [at - asked for _, at, asked in recorder.calls[1:6]]
    assert all(late >= -0.002 for late in lateness), lateness  # never early


def test_without_an_answer_the_interval_decides(make_scheduler):
    scheduler, recorder = make_scheduler(lambda name, now: None)
    scheduler.add("wf", interval=0.05)
    wait_until(lambda: recorder.count("wf") >= 4, message="4 polls")
    scheduler.remove("wf")
    times = [at for _, at, _ in recorder.calls[:4]]
    assert times == sorted(times) and len(set(times)) == 4, times  # one poll after another, none answered


def test_a_far_answer_is_kept_and_a_past_one_means_now(make_scheduler):
    scheduler, recorder = make_scheduler(lambda name, now: now + 3600 if name == "far" else 0.0)
    scheduler.add("far", interval=0.05)
    scheduler.add("past", interval=30.0)
    wait_until(lambda: recorder.count("past") >= 5, message="polls answering a time in the past")
    assert recorder.count("far") == 1
    assert scheduler.next_poll("far") == pytest.approx(time.time() + 3600, abs=5)
    assert scheduler.scheduled() == {"far", "past"}
    scheduler.remove("far")
    scheduler.remove("past")
    assert scheduler.scheduled() == set() and scheduler.next_poll("far") is None


def test_a_slow_poll_that_is_due_again_at_once_never_overlaps_itself(make_scheduler):
    def slow(name, now):
        time.sleep(0.05)  # the behaviour under test: a poll slower than its interval
        return now  # due again before this poll has even finished

    scheduler, recorder = make_scheduler(slow)
    scheduler.add("wf", interval=0.01)
    wait_until(lambda: recorder.count("wf") >= 5, message="5 slow polls")
    scheduler.remove("wf")
    assert recorder.peak == 1


def test_a_workflow_removed_during_its_poll_is_not_polled_again(make_scheduler):
    polled = threading.Event()
    release = threading.Event()

    def blocking(name, now):
        polled.set()
        release.wait(2)
        return time.time()  # "poll me again at once": must not bring the job back

    scheduler, recorder = make_scheduler(blocking)
    scheduler.add("wf", interval=0.05)
    assert polled.wait(2)
    scheduler.remove("wf")
    release.set()
    # Another workflow polled three times since: the scheduler went on, and left "wf" out.
    scheduler.add("other", interval=0.05)
    wait_until(lambda: recorder.count("other") >= 3, message="three polls of another workflow")
    assert recorder.count("wf") == 1
    scheduler.remove("other")
    assert scheduler.scheduled() == set()


@pytest.mark.parametrize("replace", ["stop and start", "put"])
def test_a_poll_under_way_when_its_job_is_replaced_does_not_move_the_new_jobs_polls(make_scheduler, replace):
    # The old poll's answer ("next due in an hour") was taken for the new job's, so a workflow stopped and
    # started (or PUT) during a poll was next polled up to a minute later instead of at once.
    entered = threading.Event()
    release = threading.Event()

    def answer(name, now):
        if not entered.is_set():
            entered.set()
            release.wait(30)  # the first poll: under way until the test lets it return
        return now + 3600

    scheduler, recorder = make_scheduler(answer)
    scheduler.add("wf", interval=3600.0)
    assert entered.wait(5), "the first poll under way"
    if replace == "stop and start":
        scheduler.remove("wf")
    scheduler.add("wf", interval=3600.0)
    release.set()
    wait_until(lambda: recorder.count("wf") == 2, message="the new job's first poll, once the old poll returned")
    _, second_at, _ = recorder.calls[1]
    # The new job's own answer decides its next poll from now on.
    wait_until(lambda: (scheduler.next_poll("wf") or 0) > second_at + 3599, message="the new job's answer")
    assert recorder.count("wf") == 2


@pytest.mark.parametrize("replace", ["stop and start", "put"])
def test_a_job_replaced_during_its_poll_polls_once_that_poll_ended_without_a_refused_turn(make_scheduler, replace,
                                                                                         caplog):
    # The new job had the workflow's name for its id, as the old one still running had: APScheduler refused its
    # first turn ("maximum number of running instances reached") and put it an interval later.
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def answer(name, now):
        number = len(order) // 2 + 1
        order.append(f"start {number}")
        if number == 1:
            entered.set()
            release.wait(30)  # the first poll: under way until the test lets it return
        order.append(f"end {number}")
        return now + 3600

    scheduler, recorder = make_scheduler(answer)
    scheduler.add("wf", interval=3600.0)
    assert entered.wait(5), "the first poll under way"
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        if replace == "stop and start":
            scheduler.remove("wf")
        scheduler.add("wf", interval=3600.0)
        # The new job has its place: waiting for the poll under way (no time yet), not a turn an interval later.
        wait_until(lambda: (scheduler.next_poll("wf") or float("inf")) > time.time() + 60,
                   message="the new job to wait for the poll under way")
        release.set()
        wait_until(lambda: recorder.count("wf") == 2, timeout=10,
                   message="the new job's first poll, once the old poll returned")
        wait_until(lambda: (scheduler.next_poll("wf") or 0) > time.time() + 60, message="the new job's answer")
    assert order == ["start 1", "end 1", "start 2", "end 2"]
    assert recorder.peak == 1
    assert not [record for record in caplog.records if "maximum number of running instances" in record.message]


def test_a_job_replaced_during_an_abandoned_poll_polls_as_soon_as_that_poll_returns():
    # The new job's first turn found the abandoned poll still in flight and was skipped; nothing polled it
    # when that poll returned, so its first poll came an interval (here an hour) later.
    release = threading.Event()
    overdue = threading.Event()

    def poll(name: str, now: float) -> float:
        if not release.is_set():
            release.wait(30)  # the first poll hangs past its deadline
        return now + 3600

    recorder = Recorder(poll)
    scheduler = Scheduler(recorder, maintenance=lambda: None, poll_timeout=0.2,
                          on_overdue=lambda name, seconds: overdue.set())
    scheduler.start()
    try:
        scheduler.add("wf", interval=3600.0)
        assert overdue.wait(10), "the first poll abandoned at its deadline"
        wait_until(lambda: not pool_busy(), message="the old job's pool thread to finish with it")
        scheduler.remove("wf")
        scheduler.add("wf", interval=3600.0)
        # The new job has its place: waiting for the poll under way (no time yet), not a turn an interval later.
        wait_until(lambda: (scheduler.next_poll("wf") or float("inf")) > time.time() + 60 and not pool_busy(),
                   message="the new job to wait for the abandoned poll")
        release.set()
        wait_until(lambda: recorder.count("wf") == 2, timeout=10,
                   message="the new job's first poll, once the abandoned poll returned")
        assert recorder.peak == 1
    finally:
        release.set()
        scheduler.shutdown()


def test_a_wall_clock_stepped_back_moves_every_poll_back_with_it():
    # APScheduler waits by the wall clock: a clock stepped back an hour (NTP) held every poll for that hour.
    # The test's clock steps back; APScheduler's cannot be stepped here, so the test sees the polls moved.
    behind = [0.0]
    recorder = Recorder(lambda name, now: now + (0.05 if name == "busy" else 3600))
    scheduler = Scheduler(recorder, maintenance=lambda: None, clock=lambda: time.time() - behind[0])
    scheduler.start()
    try:
        scheduler.add("hourly", interval=3600.0)
        scheduler.add("busy", interval=3600.0)  # wakes the scheduler thread every 0.05 s
        wait_until(lambda: recorder.count("busy") >= 3, message="polls before the step")
        wait_until(lambda: (scheduler.next_poll("hourly") or 0) > time.time() + 3000, message="hourly's answer")
        assert recorder.count("hourly") == 1
        behind[0] = 3600.0  # the clock goes back an hour: hourly's next poll is due now by that clock
        wait_until(lambda: recorder.count("hourly") == 2, timeout=10, message="hourly polled when due in real time")
    finally:
        scheduler.shutdown()


def test_many_workflows_share_one_scheduler_thread_and_a_small_pool(make_scheduler):
    before = threading.active_count()
    scheduler, recorder = make_scheduler(lambda name, now: now + 0.05)
    for number in range(200):
        scheduler.add(f"wf{number}", interval=1.0)
    wait_until(lambda: all(recorder.count(f"wf{number}") >= 3 for number in range(200)), timeout=5,
               message="3 polls of each of 200 workflows")
    # One scheduler thread plus at most 8 pool threads, each waiting for one poll's own thread, however many workflows.
    assert threading.active_count() - before <= 1 + 8 + 8
    for number in range(200):
        scheduler.remove(f"wf{number}")


def test_hung_polls_are_abandoned_at_their_deadline_and_cannot_starve_the_others():
    release = threading.Event()
    overdue: list[str] = []

    def poll(name: str) -> float | None:
        if name.startswith("hung"):
            release.wait(30)  # a mail server that never answers
        return None

    recorder = Recorder(lambda name, now: poll(name))
    scheduler = Scheduler(recorder, maintenance=lambda: None, poll_timeout=0.5,
                          on_overdue=lambda name, seconds: overdue.append(name))
    scheduler.start()
    try:
        for number in range(9):  # more hung workflows than the pool has threads
            scheduler.add(f"hung{number}", interval=0.1)
        scheduler.add("healthy", interval=0.1)
        wait_until(lambda: recorder.count("healthy") >= 10, timeout=15,
                   message="10 polls of the healthy workflow while nine others hang")
        # A hung workflow is polled once: its next turns are skipped while that poll has not returned.
        assert all(recorder.count(f"hung{number}") == 1 for number in range(9))
        assert sorted(set(overdue)) == sorted(f"hung{number}" for number in range(9))
        assert scheduler.polling() >= {f"hung{number}" for number in range(9)}
        release.set()
        wait_until(lambda: all(recorder.count(f"hung{number}") >= 2 for number in range(9)), timeout=10,
                   message="the hung workflows polled again once their polls returned")
    finally:
        release.set()
        scheduler.shutdown()


def test_shutdown_does_not_wait_for_a_hung_poll():
    release = threading.Event()
    scheduler = Scheduler(lambda name: release.wait(30), maintenance=lambda: None, poll_timeout=60)
    scheduler.start()
    try:
        scheduler.add("hung", interval=1.0)
        wait_until(lambda: scheduler.polling() == {"hung"}, timeout=5, message="the poll under way")
        scheduler.shutdown()
        # The pool thread that waited for it is free: the process can exit (pool threads are joined at exit).
        wait_until(lambda: not [thread for thread in threading.enumerate()
                                if thread.name.startswith("ThreadPoolExecutor") and thread.is_alive()
                                and not thread.daemon and _waiting_in_bounded_poll(thread)],
                   timeout=5, message="the pool thread to leave the hung poll")
    finally:
        release.set()


def pool_busy() -> bool:
    """True while a thread of a scheduler's pool runs a job (a poll, or the listeners told of its end)."""
    return bool(threads_in("_WorkItem.run", "ThreadPoolExecutor"))


def _waiting_in_bounded_poll(thread: threading.Thread) -> bool:
    import sys
    import traceback

    frame = sys._current_frames().get(thread.ident)
    return frame is not None and any(entry.name == "_bounded_poll" for entry in traceback.extract_stack(frame))


# -- through the runtime ----------------------------------------------------------------------------------


class FastIntervalWorkflow(Workflow):
    name = "fast_interval"
    description = "Every 0.2 s, although its check interval says 5 s."
    check_interval = 5.0
    trigger = IntervalTrigger("every", seconds=0.2)
    actions = [EchoAction("echo", value=1)]


class DueLaterWorkflow(Workflow):
    name = "due_later"
    description = "Its trigger is next due in 30 s, and its check interval is 0.05 s."
    trigger = DueLaterTrigger("later", seconds=30.0)
    actions = [EchoAction("echo", value=1)]


@pytest.fixture
def runtime(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                      "WORKFLOW_CLASSES": [*WORKFLOWS, FastIntervalWorkflow, DueLaterWorkflow]}))
    yield app.extensions["pyflow"]
    app.extensions["pyflow"].shutdown(timeout=2)


def test_an_interval_trigger_fires_on_time_whatever_the_check_interval(runtime):
    runtime.start_workflow("fast_interval")
    wait_until(lambda: len(runtime.store.list_runs(workflow="fast_interval", limit=10)[0]) >= 4,
               message="4 runs 0.2 s apart")
    runtime.stop_workflow("fast_interval")
    runs = runtime.store.list_runs(workflow="fast_interval", limit=10)[0]
    late = [parse_time(run["trigger_data"]["fired_at"]) - parse_time(run["trigger_data"]["scheduled_time"])
            for run in runs]
    # Four runs within wait_until's 3 s: the trigger's 0.2 s decided, not the 5 s check interval.
    # How late they fire under load is bench/scheduler.py's business.
    assert all(seconds >= -0.002 for seconds in late), late  # never early


def test_a_trigger_due_later_is_not_polled_every_check_interval(runtime):
    DueLaterTrigger.polls = 0
    runtime.start_workflow("due_later")
    wait_until(lambda: DueLaterTrigger.polls >= 1, message="the first poll")
    # Its next poll is the time the trigger named, not the next check interval (0.05 s).
    wait_until(lambda: (runtime.scheduler.next_poll("due_later") or 0) > time.time() + 20,
               message="the next poll moved to the trigger's time")
    assert runtime.scheduler.next_poll("due_later") == pytest.approx(time.time() + 30, abs=2)
    assert DueLaterTrigger.polls == 1
    runtime.stop_workflow("due_later")


def test_a_failing_trigger_is_polled_again_after_its_backoff(runtime):
    before = time.time()
    first = runtime.poll_scheduled("broken_trigger")
    after = time.time()
    second = runtime.poll_scheduled("broken_trigger")  # still backing off: not polled, same wish
    assert runtime.bound["broken_trigger"].failures == 1
    assert before + 0.05 - 0.005 <= first <= after + 0.05 + 0.005  # its check interval after the failure
    assert second == pytest.approx(first, abs=0.005)
    wait_until(lambda: time.time() > second, message="the backoff to pass")
    runtime.poll_scheduled("broken_trigger")
    assert runtime.bound["broken_trigger"].failures == 2
    assert runtime.poll_scheduled("unknown") is None


class DownOnceTrigger(BaseTrigger):
    """Polled every 60 s; its first poll fails (a mail server down), the later ones find nothing."""

    type = "down_once"
    default_check_interval = 60.0
    polls = 0

    def is_triggered(self) -> bool:
        DownOnceTrigger.polls += 1
        if DownOnceTrigger.polls == 1:
            raise ConnectionRefusedError("server 127.0.0.1:9 refused connection")
        return False


class DownOnceWorkflow(Workflow):
    name = "down_once"
    trigger = DownOnceTrigger("down")
    actions = [EchoAction("echo", value=1)]


def test_a_workflow_stopped_during_its_backoff_polls_at_once_when_started_again(storage):
    # The backoff of the failure before the stop (a check interval: 60 s) skipped the first poll after the start.
    DownOnceTrigger.polls = 0
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [DownOnceWorkflow]}))
    runtime = app.extensions["pyflow"]
    try:
        runtime.start_workflow("down_once")
        wait_until(lambda: (runtime.summary("down_once")["last_poll"] or {}).get("error"), message="a failed poll")
        runtime.stop_workflow("down_once")
        runtime.start_workflow("down_once")
        wait_until(lambda: DownOnceTrigger.polls == 2, timeout=10, message="the first poll after the start")
        wait_until(lambda: (runtime.summary("down_once")["last_poll"] or {}).get("error", "") is None,
                   message="the poll's success in the Summary")
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


class DownWhileStartedTrigger(BaseTrigger):
    """Polled every 60 s; its first poll waits until the test releases it, then fails; the later ones find nothing."""

    type = "down_while_started"
    default_check_interval = 60.0
    polls = 0
    entered = threading.Event()
    release = threading.Event()

    def is_triggered(self) -> bool:
        DownWhileStartedTrigger.polls += 1
        if DownWhileStartedTrigger.polls == 1:
            self.entered.set()
            self.release.wait(30)
            raise ConnectionRefusedError("server 127.0.0.1:9 refused connection")
        return False


class DownWhileStartedWorkflow(Workflow):
    name = "down_while_started"
    trigger = DownWhileStartedTrigger("down")
    actions = [EchoAction("echo", value=1)]


@pytest.mark.parametrize("restart", ["start", "stop and start"])
def test_a_poll_failing_after_the_workflow_was_started_again_does_not_put_off_the_new_jobs_poll(storage, restart,
                                                                                              caplog):
    # The old job's poll, still under way at the start, failed after it: its backoff (a check interval: 60 s)
    # undid the start's reset, and the new job's poll, due the moment that poll returned, was skipped for it.
    DownWhileStartedTrigger.polls = 0
    DownWhileStartedTrigger.entered.clear()
    DownWhileStartedTrigger.release.clear()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [DownWhileStartedWorkflow]}))
    runtime = app.extensions["pyflow"]
    try:
        runtime.start_workflow("down_while_started")
        assert DownWhileStartedTrigger.entered.wait(5), "the first poll under way"
        if restart == "stop and start":
            runtime.stop_workflow("down_while_started")
        runtime.start_workflow("down_while_started")
        with caplog.at_level(logging.WARNING, logger="app.core.runtime"):
            DownWhileStartedTrigger.release.set()  # the old job's poll fails now
            wait_until(lambda: DownWhileStartedTrigger.polls == 2, timeout=10,
                       message="the new job's poll, as soon as the old job's poll returned")
            wait_until(lambda: (runtime.summary("down_while_started")["last_poll"] or {}).get("error", "") is None,
                       message="the new job's poll's success in the Summary")
        assert "polling down_while_started failed (a poll begun before its latest start" in caplog.text  # still told
        assert runtime.bound["down_while_started"].failures == 0
    finally:
        DownWhileStartedTrigger.release.set()
        app.extensions["pyflow"].shutdown(timeout=2)


class CursorTrigger(BaseTrigger):
    """One event ever, behind a cursor in its state and no event key; the first poll waits after its event."""

    type = "cursor_once"
    default_check_interval = 60.0
    polls = 0
    entered = threading.Event()
    release = threading.Event()
    second_done = threading.Event()

    def poll(self):
        CursorTrigger.polls += 1
        number = CursorTrigger.polls
        try:
            if not self.state.get("cursor"):
                yield {"n": 1}
            if number == 1:
                self.entered.set()  # its event's run is stored and acknowledged by now
                self.release.wait(30)
        finally:
            if number == 2:
                self.second_done.set()

    def acknowledge(self, event: dict, run_id: str) -> None:
        self.state["cursor"] = event["n"]


class CursorWorkflow(Workflow):
    name = "cursor_once"
    trigger = CursorTrigger("cursor")
    actions = [EchoAction("echo", value=1)]


@pytest.mark.parametrize("restart", ["start", "stop and start"])
def test_a_start_during_a_poll_keeps_the_cursor_that_poll_moved(storage, restart):
    # The start read the trigger's state back from the store while a poll was under way: the cursor the poll
    # had moved, not saved yet, was replaced by the stored one, so the poll saved nothing and the next poll
    # offered its event again (a second run, for a trigger without event keys).
    CursorTrigger.polls = 0
    for event in (CursorTrigger.entered, CursorTrigger.release, CursorTrigger.second_done):
        event.clear()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [CursorWorkflow]}))
    runtime = app.extensions["pyflow"]
    try:
        runtime.start_workflow("cursor_once")
        assert CursorTrigger.entered.wait(5), "the first poll under way, its event's run stored"
        if restart == "stop and start":
            runtime.stop_workflow("cursor_once")
        runtime.start_workflow("cursor_once")
        CursorTrigger.release.set()
        assert CursorTrigger.second_done.wait(10), "the new job's poll"
        runs, _ = runtime.store.list_runs(workflow="cursor_once")
        assert len(runs) == 1, [run["trigger_data"] for run in runs]
        assert runtime.store.load_trigger_state("cursor_once") == {"cursor": 1}
    finally:
        CursorTrigger.release.set()
        app.extensions["pyflow"].shutdown(timeout=2)


class HungTrigger(BaseTrigger):
    """A trigger whose poll waits until the test releases it (a mail server that never answers)."""

    release = threading.Event()
    entered = threading.Event()

    def is_triggered(self) -> bool:
        self.entered.set()
        self.release.wait(30)
        return False


class HungWorkflow(Workflow):
    name = "hung_poll"
    trigger = HungTrigger("hung")
    actions = [EchoAction("echo", value=1)]


def test_a_cursor_that_cannot_be_saved_is_a_failed_poll_in_the_summary_and_the_log(runtime, caplog):
    # A full or broken disk: the run is stored, but the trigger's cursor is not. The scheduler's poll
    # swallowed that without a word, so nobody learnt that a restart would poll from an older cursor.
    QueueTrigger.items[:] = []
    saved = runtime.store.root / "triggers" / "queued_events.json"
    runtime.start_workflow("queued_events")
    try:
        wait_until(saved.exists, message="the first poll's state saved")  # {"seen": 0}; later empty polls save nothing
        saved.unlink()
        saved.mkdir()  # from now on the state cannot be written
        QueueTrigger.items[:] = [{"n": 1}]
        wait_until(lambda: (runtime.summary("queued_events")["last_poll"] or {}).get("error"),
                   message="the failed poll")
        last_poll = runtime.summary("queued_events")["last_poll"]
        assert "cannot write " in last_poll["error"] and "queued_events.json: [Errno 21]" in last_poll["error"]
        assert last_poll["failures"] >= 1
        assert "polling queued_events failed (1 in a row" in caplog.text
        wait_until(lambda: len(runtime.store.list_runs(workflow="queued_events")[0]) == 1,
                   message="the event's run, stored all the same")
        saved.rmdir()  # the disk is repaired: the next poll saves the state, though it has no event
        wait_until(lambda: saved.is_file() and runtime.summary("queued_events")["last_poll"]["error"] is None,
                   timeout=60, message="the state saved after the backoff")
        assert runtime.store.load_trigger_state("queued_events") == {"seen": 1}
    finally:
        runtime.stop_workflow("queued_events")


def test_a_poll_request_behind_a_hung_poll_answers_409_after_the_deadline(storage):
    HungTrigger.release.clear()
    HungTrigger.entered.clear()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_POLL_TIMEOUT": 0.5,
                      "WORKFLOW_CLASSES": [*WORKFLOWS, HungWorkflow]}))
    client = app.test_client()
    first = threading.Thread(target=lambda: client.post("/api/workflows/hung_poll/poll"))
    first.start()
    try:
        assert HungTrigger.entered.wait(5)
        response = client.post("/api/workflows/hung_poll/poll")
        assert response.status_code == 409
        assert response.get_json()["error"]["message"] == (
            "workflow 'hung_poll': a poll has been under way for more than 0.5 s (WORKFLOW_POLL_TIMEOUT); "
            "try again later")
    finally:
        HungTrigger.release.set()
        first.join(10)
        app.extensions["pyflow"].shutdown(timeout=2)


class GatedTrigger(HungTrigger):
    """Due at every poll, which waits until the test releases it (a slow mail server with mail waiting)."""

    type = "gated"
    default_check_interval = 0.05
    entered = threading.Event()
    release = threading.Event()

    def is_triggered(self) -> bool:
        super().is_triggered()
        return True


class GatedWorkflow(Workflow):
    name = "gated_poll"
    trigger = GatedTrigger("gated")
    actions = [EchoAction("echo", value=1)]


def test_a_workflow_stopped_during_its_poll_starts_no_run_after_the_stop(storage):
    GatedTrigger.entered.clear()
    GatedTrigger.release.clear()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [GatedWorkflow]}))
    client = app.test_client()
    try:
        assert client.post("/api/workflows/gated_poll/start").status_code == 200
        assert GatedTrigger.entered.wait(10), "the scheduled poll under way"
        assert client.post("/api/workflows/gated_poll/stop").get_json()["status"] == "stopped"
        GatedTrigger.release.set()  # the poll finds its event due only now, after the stop
        wait_until(lambda: client.get("/api/workflows/gated_poll").get_json()["last_poll"] is not None,
                   message="the poll under way at the stop to end")
        assert client.get("/api/workflows/gated_poll").get_json()["last_poll"]["events"] == 0
        assert client.get("/api/runs", query_string={"workflow": "gated_poll"}).get_json()["runs"] == []
    finally:
        GatedTrigger.release.set()
        app.extensions["pyflow"].shutdown(timeout=2)


class HeldDueLaterTrigger(DueLaterTrigger):
    """Says it is due in 30 s; its first poll waits until the test releases it."""

    type = "held_due_later"
    default_check_interval = 30.0
    entered = threading.Event()
    release = threading.Event()

    def poll(self) -> list[dict]:
        if DueLaterTrigger.polls == 0:
            self.entered.set()
            self.release.wait(30)
        return super().poll()


class HeldDueLaterWorkflow(Workflow):
    name = "held_due_later"
    trigger = HeldDueLaterTrigger("held", seconds=30.0)
    actions = [EchoAction("echo", value=1)]


def test_a_workflow_stopped_and_started_during_its_poll_is_polled_at_once_when_that_poll_returns(storage):
    HeldDueLaterTrigger.entered.clear()
    HeldDueLaterTrigger.release.clear()
    DueLaterTrigger.polls = 0
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [HeldDueLaterWorkflow]}))
    client = app.test_client()
    try:
        assert client.post("/api/workflows/held_due_later/start").status_code == 200
        assert HeldDueLaterTrigger.entered.wait(10), "the scheduled poll under way"
        assert client.post("/api/workflows/held_due_later/stop").status_code == 200
        assert client.post("/api/workflows/held_due_later/start").status_code == 200
        HeldDueLaterTrigger.release.set()
        # The restarted workflow's first poll comes once the old poll returned, not 30 s later.
        wait_until(lambda: DueLaterTrigger.polls == 2, timeout=10, message="the restarted workflow's first poll")
    finally:
        HeldDueLaterTrigger.release.set()
        app.extensions["pyflow"].shutdown(timeout=2)


class SessionTrigger(BaseTrigger):
    """Holds a session as the e-mail trigger holds its IMAP connection: a poll opens one if none is open
    (also when close() dropped it under the poll), close() ends it. Its poll waits for the test."""

    type = "session"
    default_check_interval = 0.05
    entered = threading.Event()
    release = threading.Event()

    def __init__(self, name: str):
        super().__init__(name)
        self.session_open = False
        self.polling = False
        self.closed_while_polling = False

    def poll(self) -> list[dict]:
        self.polling = True
        try:
            self.entered.set()
            self.release.wait(30)
            self.session_open = True  # reconnected: the session it had was closed under it
        finally:
            self.polling = False
        return []

    def close(self) -> None:
        self.closed_while_polling = self.closed_while_polling or self.polling
        self.session_open = False


class SessionWorkflow(Workflow):
    name = "session_poll"
    trigger = SessionTrigger("session")
    actions = [EchoAction("echo", value=1)]


def test_a_workflow_stopped_during_its_poll_is_closed_by_that_poll_not_under_it(storage):
    # Closing an IMAP connection under the poll that uses it made the poll reconnect: the stopped
    # workflow then kept a logged-in session (and a socket) until the server shut down.
    SessionTrigger.entered.clear()
    SessionTrigger.release.clear()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [SessionWorkflow]}))
    client = app.test_client()
    trigger = app.extensions["pyflow"].bound["session_poll"].trigger
    try:
        assert client.post("/api/workflows/session_poll/start").status_code == 200
        assert SessionTrigger.entered.wait(10), "the scheduled poll under way"
        assert client.post("/api/workflows/session_poll/stop").get_json()["status"] == "stopped"
        SessionTrigger.release.set()
        wait_until(lambda: client.get("/api/workflows/session_poll").get_json()["last_poll"] is not None,
                   message="the poll under way at the stop to end")
        assert not trigger.closed_while_polling
        wait_until(lambda: not trigger.session_open, message="the stopped workflow's session to be closed")
    finally:
        SessionTrigger.release.set()
        app.extensions["pyflow"].shutdown(timeout=2)


def test_a_poll_asked_for_a_stopped_workflow_leaves_no_session_open(storage):
    SessionTrigger.release.set()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [SessionWorkflow]}))
    client = app.test_client()
    trigger = app.extensions["pyflow"].bound["session_poll"].trigger
    try:
        assert client.post("/api/workflows/session_poll/poll").status_code == 200
        assert not trigger.session_open
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
