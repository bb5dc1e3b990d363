"""A trigger that fires on a five-field cron schedule in a time zone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from actions.base import SettingError
from triggers.base import BaseTrigger
from triggers.interval import _iso

logger = logging.getLogger(__name__)

MISFIRE_POLICIES = ("skip", "run_once")
_TICK = timedelta(microseconds=1)


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class CronTrigger(BaseTrigger):
    """Fires at the times a cron expression such as ``"0 8 * * 1-5"`` names, read in ``timezone``.

    Daylight saving time works as in Vixie cron. When clocks go forward, a time
    in the skipped hour fires once, at the first minute after the jump (02:30
    fires at 03:00). When clocks go back, a schedule with a fixed minute and
    hour (``30 2 * * *``) fires in the first pass of the repeated hour only; a
    schedule whose minute or hour starts with ``*`` (``*/15 * * * *``) keeps
    firing in real time through both passes.

    ``misfire`` says what happens to fires missed while the server was down
    (more than ``misfire_grace_seconds`` late): ``"skip"`` drops them, and the
    next future time fires as usual; ``"run_once"`` starts one run for all of
    them, with ``scheduled_time`` the latest missed one. The first start never
    fires for times before it.

    ``state``: ``cursor`` (every scheduled time up to it is handled, fired or
    skipped) and ``last_scheduled`` (the last scheduled time fired), ISO UTC.
    """

    type = "cron"
    config_choices = {"misfire": MISFIRE_POLICIES}
    # A fire at most this late still counts as on time, so a restart of a few seconds loses nothing.
    misfire_grace_seconds: float = 60.0

    def __init__(
        self,
        name: str,
        schedule: str,
        timezone: str = "UTC",
        misfire: str = "skip",
        clock: Callable[[], datetime | float] | None = None,
    ):
        super().__init__(name)
        self.schedule = schedule
        self.timezone = timezone
        self.misfire = misfire
        # Tests pass a fake clock; it returns an aware datetime or epoch seconds.
        self._clock = clock or time.time
        self._zone: ZoneInfo | None = None
        self._cron: croniter | None = None
        self._cron_lock = threading.Lock()
        self._fixed = False
        # Templates such as "{{ settings.REPORT_CRON }}" are checked in setup(), once rendered.
        if not any(isinstance(value, str) and "{" in value for value in (schedule, timezone, misfire)):
            self._check()

    def setup(self, settings: Mapping[str, Any]) -> None:
        self._check()

    def _check(self) -> None:
        where = f"trigger {self.name!r}"
        if not isinstance(self.timezone, str) or not self.timezone:
            raise SettingError("timezone", f"{where}: timezone must be an IANA time zone name such as "
                                           f"'Europe/Berlin', got {self.timezone!r}")
        try:
            self._zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingError("timezone", f"{where}: timezone must be an IANA time zone name such as "
                                           f"'Europe/Berlin', got {self.timezone!r}") from None
        fields = self.schedule.split() if isinstance(self.schedule, str) else []
        if len(fields) != 5 or not croniter.is_valid(self.schedule):
            raise SettingError("schedule", f"{where}: schedule must be a cron expression of five fields (minute "
                                           f"hour day-of-month month day-of-week), such as '0 8 * * 1-5', "
                                           f"got {self.schedule!r}")
        # One parsed expression per trigger: parsing costs more than finding a time.
        self._cron = croniter(self.schedule, datetime.now(self._zone))
        try:
            self._cron.get_next(datetime)
        except CroniterBadDateError:
            raise SettingError("schedule", f"{where}: schedule {self.schedule!r} never matches a date") from None
        if self.misfire not in MISFIRE_POLICIES:
            raise SettingError("misfire", f"{where}: misfire must be one of {', '.join(MISFIRE_POLICIES)}, "
                                          f"got {self.misfire!r}")
        # Vixie cron's rule: only a schedule with a fixed minute and hour skips the repeated hour.
        self._fixed = not (fields[0].startswith("*") or fields[1].startswith("*"))

    # -- the schedule --------------------------------------------------------------------------------
    def _now(self) -> datetime:
        value = self._clock()
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"trigger {self.name!r}: clock must return an aware datetime, got {value!r}")
            return value.astimezone(UTC)
        return datetime.fromtimestamp(float(value), UTC)

    def _repeated(self, fire: datetime) -> bool:
        """True for the second pass of a wall time that happens twice (clocks going back)."""
        wall = fire.astimezone(self._zone).replace(tzinfo=None)
        first = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
        return first != second and fire == second

    def _step(self, start: datetime, forward: bool) -> datetime | None:
        """The scheduled time after (or before) ``start``, in UTC; None when there is none."""
        # A manual poll (the API) and the scheduler's next_fire_time() may share the parsed expression.
        with self._cron_lock:
            self._cron.set_current(start.astimezone(self._zone), force=True)
            try:
                while True:
                    fire = (self._cron.get_next if forward else self._cron.get_prev)(datetime).astimezone(UTC)
                    if not (self._fixed and self._repeated(fire)):
                        return fire
            except CroniterBadDateError:  # e.g. "0 0 29 2 1" far enough out; searching gave up
                return None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first scheduled time strictly after ``moment``."""
        return self._step(moment, forward=True)

    def latest_until(self, moment: datetime) -> datetime | None:
        """The last scheduled time at or before ``moment``."""
        return self._step(moment + _TICK, forward=False)

    def _cursor(self) -> datetime | None:
        text = self.state.get("cursor") or self.state.get("last_scheduled")
        return _parse_iso(text) if text else None

    # -- the trigger interface --------------------------------------------------------------------------
    def next_fire_time(self) -> float | None:
        """The next scheduled time after the cursor; now on the first start (to set the cursor)."""
        cursor = self._cursor()
        if cursor is None:
            return self._now().timestamp()
        fire = self.next_after(cursor)
        return None if fire is None else fire.timestamp()

    def _latest_due(self, now: datetime) -> datetime | None:
        """The latest scheduled time after the cursor and at or before ``now``."""
        cursor = self._cursor()
        latest = self.latest_until(now)
        return latest if cursor is not None and latest is not None and latest > cursor else None

    def _missed(self, scheduled: datetime, now: datetime) -> bool:
        return (now - scheduled).total_seconds() > self.misfire_grace_seconds

    def is_triggered(self) -> bool:
        """True when a poll now would fire (changes nothing)."""
        now = self._now()
        latest = self._latest_due(now)
        return latest is not None and (self.misfire == "run_once" or not self._missed(latest, now))

    def poll(self) -> list[dict]:
        now = self._now()
        if self._cursor() is None:
            # The first start: times before it are not missed fires, they were never due.
            self.state.update(cursor=_iso(now.timestamp()), last_scheduled=None)
            return []
        latest = self._latest_due(now)
        if latest is None:
            return []
        scheduled = _iso(latest.timestamp())
        if self._missed(latest, now):
            if self.misfire == "skip":
                logger.info("trigger %s: skipped the fires missed up to %s", self.name, scheduled)
                self.state["cursor"] = scheduled
                return []
            logger.info("trigger %s: one run for the fires missed up to %s", self.name, scheduled)
        return [{"scheduled_time": scheduled, "fired_at": _iso(now.timestamp())}]

    def event_key(self, event: dict) -> str:
        """The scheduled time: a fire polled again after a crash starts no second run."""
        return f"cron:{event['scheduled_time']}"

    def acknowledge(self, event: dict, run_id: str) -> None:
        self.state.update(cursor=event["scheduled_time"], last_scheduled=event["scheduled_time"])
