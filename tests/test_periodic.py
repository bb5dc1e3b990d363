"""A leading server's repeated jobs (the sweeper, the waker of parked runs) keep repeating across a lost lead."""

from __future__ import annotations

import threading

from app.core.periodic import Periodic
from tests.waiting import wait_until


def test_a_job_stopped_during_its_round_and_started_again_keeps_repeating():
    # The lead lost while a sweep waits on the database, and won back before that sweep returns:
    # start() must not take the old thread, on its way out, for a running one.
    entered, release = threading.Event(), threading.Event()
    rounds: list[int] = []

    def work() -> None:
        rounds.append(len(rounds) + 1)
        if len(rounds) == 1:
            entered.set()
            release.wait(10)

    periodic = Periodic("pyflow-test-periodic", 0.01, work, "testing")
    periodic.start()
    try:
        assert entered.wait(5)
        periodic.stop()  # this server stopped leading...
        periodic.start()  # ...and leads again while the first round is still under way
        release.set()
        wait_until(lambda: len(rounds) >= 3, timeout=5, message="rounds after the lead came back")
    finally:
        release.set()
        periodic.stop()

