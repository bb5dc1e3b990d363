"""Leases within one process: two threads taking one run at the same instant (PostgreSQL)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from app.core.leases import Leases
from app.runs import new_run, new_step
from app.storage.postgres import PostgresStore
from tests.waiting import wait_until

pytestmark = pytest.mark.services


def _waiting_on_locks(url: str) -> int:
    """Sessions of ``url``'s database waiting for a row lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND wait_event_type = 'Lock'").fetchone()[0]


def test_two_jobs_taking_one_run_at_the_same_instant_start_it_once(postgres_url, tmp_path):
    store = PostgresStore(postgres_url, tmp_path, max_connections=4)
    leases = Leases(store, 30, on_lost=lambda run_id: None, on_control=lambda *control: None)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {}, "api")
        store.create_run(run)
        taken: list[bool] = []
        with psycopg.connect(postgres_url) as blocker:
            # The run's row locked elsewhere: both claims would wait in the database, side by side.
            blocker.execute("SELECT FROM pyflow_runs WHERE id = %s FOR UPDATE", (run["id"],))
            jobs = [threading.Thread(target=lambda: taken.append(leases.take(run["id"])), daemon=True)
                    for _ in range(2)]
            for job in jobs:
                job.start()
            # Either the second job was turned away at once, or both wait on the row (the race).
            wait_until(lambda: len(taken) == 1 and _waiting_on_locks(postgres_url) == 1
                       or _waiting_on_locks(postgres_url) == 2, timeout=10, message="both jobs at the claim")
            blocker.commit()
        for job in jobs:
            job.join(10)
        assert sorted(taken) == [False, True]
        assert leases.holds(run["id"])
        assert leases.take(run["id"]) is False  # a later duplicate too
        leases.release(run["id"])
        assert leases.take(run["id"]) is True  # released: a new job may take it again
    finally:
        leases.stop()
        store.close()
