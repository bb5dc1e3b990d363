"""The cron trigger on a fake clock: schedules, time zones and DST, misfires, state across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app import create_app, start_app
from app.runs import parse_time
from tests.conftest import TEST_SETTINGS
from tests.fixtures import EchoAction, wait_until
from triggers.cron import CronTrigger
from workflows.base import Workflow


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(schedule: str, clock: FakeClock, **options) -> CronTrigger:
    trigger = CronTrigger("cron", schedule, clock=clock, **options)
    trigger.setup({})
    return trigger


def fire(trigger: CronTrigger) -> list[str]:
    """Poll once and acknowledge every event, as the runtime does; the scheduled times fired."""
    events = trigger.poll()
    for event in events:
        trigger.acknowledge(event, "run_1")
    return [event["scheduled_time"] for event in events]


def drive(trigger: CronTrigger, clock: FakeClock, until: datetime, every: timedelta) -> list[str]:
    """Poll every ``every`` and at each time the trigger says it is due, up to ``until``."""
    fired = fire(trigger)
    while clock.now < until:
        due = datetime.fromtimestamp(trigger.next_fire_time(), UTC)
        clock.now = min(max(due, clock.now), clock.now + every, until)
        fired += fire(trigger)
    return fired


def z(text: str) -> str:
    """A scheduled time as the trigger writes it."""
    return text.replace("Z", ".000Z")


# -- the schedule ---------------------------------------------------------------------------------------


def test_the_first_start_does_not_fire_for_earlier_times_then_fires_on_the_minute():
    clock = FakeClock(utc(2026, 1, 5, 10, 0, 30))
    trigger = cron("* * * * *", clock)
    assert trigger.next_fire_time() == clock.now.timestamp()  # poll at once, to note the start
    assert fire(trigger) == []
    assert trigger.state == {"cursor": z("2026-01-05T10:00:30Z"), "last_scheduled": None}
    assert trigger.next_fire_time() == utc(2026, 1, 5, 10, 1).timestamp()
    clock.now = utc(2026, 1, 5, 10, 0, 59, 999000)
    assert fire(trigger) == []
    clock.now = utc(2026, 1, 5, 10, 1, 0, 40000)
    events = trigger.poll()
    assert events == [{"scheduled_time": z("2026-01-05T10:01:00Z"), "fired_at": "2026-01-05T10:01:00.040Z"}]
    assert trigger.event_key(events[0]) == "cron:2026-01-05T10:01:00.000Z"
    trigger.acknowledge(events[0], "run_1")
    assert trigger.state["last_scheduled"] == z("2026-01-05T10:01:00Z")
    assert fire(trigger) == []  # once per scheduled time, however often it is polled
    assert trigger.next_fire_time() == utc(2026, 1, 5, 10, 2).timestamp()


def test_a_schedule_is_read_in_its_time_zone():
    clock = FakeClock(utc(2026, 1, 5, 0, 0))  # a Monday; Berlin is UTC+1 in winter
    trigger = cron("0 8 * * 1-5", clock, timezone="Europe/Berlin")
    fired = drive(trigger, clock, utc(2026, 1, 12, 0, 0), timedelta(hours=6))
    assert fired == [z(f"2026-01-{day:02d}T07:00:00Z") for day in (5, 6, 7, 8, 9)]


def test_the_clock_may_answer_epoch_seconds():
    now = [utc(2026, 1, 5, 10, 0, 30).timestamp()]
    trigger = CronTrigger("cron", "*/5 * * * *", clock=lambda: now[0])
    fire(trigger)
    now[0] = utc(2026, 1, 5, 10, 5, 1).timestamp()
    assert fire(trigger) == [z("2026-01-05T10:05:00Z")]


# -- daylight saving time (Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) ------------


def test_a_time_in_the_skipped_hour_fires_once_right_after_the_jump():
    clock = FakeClock(utc(2026, 3, 28, 12))
    trigger = cron("30 2 * * *", clock, timezone="Europe/Berlin")
    fired = drive(trigger, clock, utc(2026, 3, 31, 12), timedelta(minutes=7))
    # 02:30 does not exist on the 29th: it fires at 03:00 CEST (01:00Z), once; then 02:30 CEST again.
    assert fired == [z("2026-03-29T01:00:00Z"), z("2026-03-30T00:30:00Z"), z("2026-03-31T00:30:00Z")]


def test_two_times_in_the_skipped_hour_fire_once_between_them():
    clock = FakeClock(utc(2026, 3, 28, 12))
    trigger = cron("0,30 2 * * *", clock, timezone="Europe/Berlin")
    fired = drive(trigger, clock, utc(2026, 3, 29, 12), timedelta(minutes=7))
    assert fired == [z("2026-03-29T01:00:00Z")]


def test_a_frequent_schedule_runs_straight_through_the_skipped_hour():
    clock = FakeClock(utc(2026, 3, 28, 23, 50))
    trigger = cron("*/30 * * * *", clock, timezone="Europe/Berlin")
    fired = drive(trigger, clock, utc(2026, 3, 29, 3, 5), timedelta(minutes=1))
    # 01:30 CET, then 03:00 CEST: half an hour apart in real time, no double fire.
    assert fired == [z(f"2026-03-29T{hour:02d}:{minute:02d}:00Z") for hour in (0, 1, 2) for minute in (0, 30)] + [
        z("2026-03-29T03:00:00Z")]


def test_a_time_in_the_repeated_hour_fires_once():
    clock = FakeClock(utc(2026, 10, 24, 12))
    trigger = cron("30 2 * * *", clock, timezone="Europe/Berlin")
    fired = drive(trigger, clock, utc(2026, 10, 26, 12), timedelta(minutes=7))
    # 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET): only the first fires.
    assert fired == [z("2026-10-25T00:30:00Z"), z("2026-10-26T01:30:00Z")]


def test_a_restart_inside_the_repeated_hour_does_not_fire_it_again():
    clock = FakeClock(utc(2026, 10, 25, 0, 31))
    trigger = cron("30 2 * * *", clock, timezone="Europe/Berlin")
    trigger.state = {"cursor": z("2026-10-25T00:30:00Z"), "last_scheduled": z("2026-10-25T00:30:00Z")}
    assert trigger.next_fire_time() == utc(2026, 10, 26, 1, 30).timestamp()
    clock.now = utc(2026, 10, 25, 1, 30, 5)  # 02:30:05 CET, the second pass
    assert fire(trigger) == []


def test_a_frequent_schedule_keeps_real_time_through_the_repeated_hour():
    clock = FakeClock(utc(2026, 10, 24, 22, 50))
    trigger = cron("*/30 * * * *", clock, timezone="Europe/Berlin")
    fired = drive(trigger, clock, utc(2026, 10, 25, 2, 5), timedelta(minutes=1))
    # Every 30 real minutes through both passes of 02:00-03:00, as Vixie cron does for '*' schedules.
    times = [parse_time(text) for text in fired]
    assert len(fired) == len(set(fired)) == 7
    assert all(later - earlier == 1800 for earlier, later in zip(times, times[1:], strict=False))


# -- misfires -------------------------------------------------------------------------------------------

DAILY_STATE = {"cursor": z("2026-01-05T08:00:00Z"), "last_scheduled": z("2026-01-05T08:00:00Z")}


def test_skip_drops_fires_missed_while_down_and_fires_the_next_on_time():
    clock = FakeClock(utc(2026, 1, 7, 10))  # down since after the 5th's fire: the 6th and 7th were missed
    trigger = cron("0 8 * * *", clock)
    trigger.state = dict(DAILY_STATE)
    assert trigger.next_fire_time() == utc(2026, 1, 6, 8).timestamp()  # in the past: poll now
    assert not trigger.is_triggered()
    assert fire(trigger) == []
    assert trigger.state == {"cursor": z("2026-01-07T08:00:00Z"), "last_scheduled": z("2026-01-05T08:00:00Z")}
    assert trigger.next_fire_time() == utc(2026, 1, 8, 8).timestamp()
    clock.now = utc(2026, 1, 8, 8, 0, 0, 5000)
    assert fire(trigger) == [z("2026-01-08T08:00:00Z")]


def test_skip_still_fires_a_time_missed_by_less_than_the_grace():
    clock = FakeClock(utc(2026, 1, 6, 8, 0, 45))  # a restart that took 45 s
    trigger = cron("0 8 * * *", clock)
    trigger.state = dict(DAILY_STATE)
    assert trigger.is_triggered()
    assert fire(trigger) == [z("2026-01-06T08:00:00Z")]


def test_run_once_starts_one_run_for_all_missed_fires_with_the_latest_time():
    clock = FakeClock(utc(2026, 1, 7, 10))
    trigger = cron("0 8 * * *", clock, misfire="run_once")
    trigger.state = dict(DAILY_STATE)
    events = trigger.poll()
    assert events == [{"scheduled_time": z("2026-01-07T08:00:00Z"), "fired_at": z("2026-01-07T10:00:00Z")}]
    trigger.acknowledge(events[0], "run_1")
    assert fire(trigger) == []
    assert trigger.state["last_scheduled"] == z("2026-01-07T08:00:00Z")


# -- state across restarts --------------------------------------------------------------------------------


def test_a_fire_polled_again_before_it_was_acknowledged_has_the_same_key():
    clock = FakeClock(utc(2026, 1, 6, 8, 0, 1))
    trigger = cron("0 8 * * *", clock)
    trigger.state = dict(DAILY_STATE)
    first = trigger.poll()  # the process dies before the run is stored: no acknowledge

    restarted = cron("0 8 * * *", clock)
    restarted.state = dict(trigger.state)
    again = restarted.poll()
    assert [restarted.event_key(event) for event in again] == [trigger.event_key(event) for event in first]


def test_a_state_with_only_last_scheduled_is_a_cursor_too():
    clock = FakeClock(utc(2026, 1, 6, 8, 0, 1))
    trigger = cron("0 8 * * *", clock)
    trigger.state = {"last_scheduled": z("2026-01-05T08:00:00Z")}
    assert fire(trigger) == [z("2026-01-06T08:00:00Z")]


# -- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["* * * *", "61 * * * *", "* * * * * *", "@daily", "every minute", "", None,
                                      "*/0 * * * *"])
def test_a_bad_schedule_is_refused_naming_the_field(schedule):
    with pytest.raises(ValueError, match=r"^trigger 'cron': schedule must be a cron expression of five fields"):
        CronTrigger("cron", schedule)


def test_a_schedule_that_never_matches_is_refused():
    with pytest.raises(ValueError, match=r"schedule '0 0 31 2 \*' never matches a date"):
        CronTrigger("cron", "0 0 31 2 *")


@pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "", "../../etc/passwd", None, "CEST"])
def test_a_bad_timezone_is_refused_naming_the_field(timezone):
    with pytest.raises(ValueError, match=r"^trigger 'cron': timezone must be an IANA time zone name"):
        CronTrigger("cron", "* * * * *", timezone=timezone)


def test_a_bad_misfire_policy_is_refused():
    with pytest.raises(ValueError, match=r"misfire must be one of skip, run_once, got 'catch_up'"):
        CronTrigger("cron", "* * * * *", misfire="catch_up")


def test_a_templated_schedule_is_checked_at_setup():
    trigger = CronTrigger("cron", "{{ settings.REPORT_CRON }}")
    trigger.schedule = "0 25 * * *"  # what rendering the template would leave
    with pytest.raises(ValueError, match="schedule must be a cron expression"):
        trigger.setup({})


def test_a_naive_datetime_from_the_clock_is_refused():
    trigger = CronTrigger("cron", "* * * * *", clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="clock must return an aware datetime"):
        trigger.poll()


# -- through the runtime ----------------------------------------------------------------------------------

CLOCK = FakeClock(utc(2026, 1, 5, 7, 59, 30))


class MorningWorkflow(Workflow):
    name = "morning"
    description = "Every weekday at 08:00 Berlin time, on a fake clock."
    trigger = CronTrigger("morning", "0 8 * * 1-5", timezone="Europe/Berlin", clock=CLOCK)
    actions = [EchoAction("echo", value="{{ trigger_data.scheduled_time }}")]


def test_a_cron_workflow_runs_once_per_scheduled_time_through_the_api(storage):
    app = start_app(create_app(
        {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": [MorningWorkflow]}
    ))
    try:
        client = app.test_client()
        summary = client.get("/api/workflows/morning").get_json()
        assert summary["trigger"] == {"type": "cron", "name": "morning", "schedule": "0 8 * * 1-5",
                                      "timezone": "Europe/Berlin", "misfire": "skip"}
        CLOCK.now = utc(2026, 1, 5, 6, 59, 30)
        assert client.post("/api/workflows/morning/poll").get_json() == {"runs": []}
        CLOCK.now = utc(2026, 1, 5, 7, 0, 0, 120000)
        runs = client.post("/api/workflows/morning/poll").get_json()["runs"]
        assert [run["trigger_data"] for run in runs] == [
            {"scheduled_time": z("2026-01-05T07:00:00Z"), "fired_at": "2026-01-05T07:00:00.120Z"}]
        assert client.post("/api/workflows/morning/poll").get_json() == {"runs": []}
        state = app.extensions["pyflow"].store.load_trigger_state("morning")
        assert state["last_scheduled"] == z("2026-01-05T07:00:00Z")
        run = wait_until(lambda: client.get(f"/api/runs/{runs[0]['id']}").get_json()["steps"][0]["result"])
        assert run == {"value": z("2026-01-05T07:00:00Z")}
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_the_summary_and_the_dashboard_show_when_a_started_cron_workflow_fires_next(storage):
    clock = FakeClock(utc(2026, 1, 5, 7, 59, 30))  # a Monday, 08:59:30 in Berlin

    class Morning(MorningWorkflow):
        trigger = CronTrigger("morning", "0 8 * * 1-5", timezone="Europe/Berlin", clock=clock)

    app = create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": [Morning]})
    try:
        client = app.test_client()
        assert client.get("/api/workflows/morning").get_json()["next_fire_time"] is None, "stopped: no next fire"

        assert client.post("/api/workflows/morning/start").status_code == 200
        client.post("/api/workflows/morning/poll")  # the first poll sets the cursor: today's 08:00 has passed
        tomorrow = "2026-01-06T07:00:00.000Z"  # 08:00 in Berlin
        assert client.get("/api/workflows/morning").get_json()["next_fire_time"] == tomorrow
        listed = {summary["name"]: summary for summary in client.get("/api/workflows").get_json()["workflows"]}
        assert listed["morning"]["next_fire_time"] == tomorrow
        row = client.get("/").text.split('<tr data-workflow="morning">')[1].split("</tr>")[0]
        assert f'next <time datetime="{tomorrow}"' in row and "2026-01-06 07:00:00" in row

        assert client.post("/api/workflows/morning/stop").status_code == 200
        assert client.get("/api/workflows/morning").get_json()["next_fire_time"] is None
        assert "next <time" not in client.get("/").text
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
