"""The store contract for event ids and the wake index of parked runs, on every backend."""

from __future__ import annotations

import time

import pytest

from app.errors import NotFound
from tests import test_store_contract as contract

# The contract suite's fixtures: every backend (PostgreSQL with the services), a store, run records.
backend, store, runs, at_once = contract.backend, contract.store, contract.runs, contract.at_once


def test_an_event_id_is_new_once(store):
    assert store.record_event("evt-1", "ticket.created") is True
    assert store.record_event("evt-1", "ticket.created") is False
    assert store.record_event("evt-2", "ticket.created") is True


def test_one_event_id_recorded_at_once_is_new_for_one_caller(store):
    assert sorted(at_once(lambda _: store.record_event("same", "t"), list(range(8)))) == [False] * 7 + [True]


def test_event_ids_survive_a_restart_and_are_pruned_by_age(backend):
    store = backend.open()
    store.record_event("kept", "t")
    if backend.durable:
        store = backend.reopen(store)
        assert store.record_event("kept", "t") is False
    assert store.prune_events(time.time() - 3600) == 0
    assert store.prune_events(time.time() + 3600) >= 1
    assert store.record_event("kept", "t") is True


def test_park_and_unpark(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0", due=123.5, event="ticket.closed", key="T-1")
    expected = {"run_id": run["id"], "step": "s0", "due": 123.5, "event": "ticket.closed", "key": "T-1"}
    assert store.parked(run["id"]) == expected
    assert store.unpark(run["id"]) == expected
    assert store.unpark(run["id"]) is None
    assert store.parked(run["id"]) is None


def test_parking_an_unknown_run_raises_not_found(store):
    with pytest.raises(NotFound):
        store.park("run_00000000000000000000ff", "s0", due=1.0)


def test_a_parked_run_is_unparked_by_one_caller(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0")
    taken = at_once(lambda _: store.unpark(run["id"]), list(range(8)))
    assert sum(entry is not None for entry in taken) == 1


def test_due_parked_runs_soonest_first(store, runs):
    made = [runs.make(status="waiting") for _ in range(4)]
    for run in made:
        store.create_run(run)
    now = time.time()
    store.park(made[0]["id"], "s0", due=now - 10)
    store.park(made[1]["id"], "s0", due=now - 20)
    store.park(made[2]["id"], "s0", due=now + 3600)
    store.park(made[3]["id"], "s0", event="x")  # no time: never due
    assert store.due_parked(now) == [made[1]["id"], made[0]["id"]]
    assert store.due_parked(now, limit=1) == [made[1]["id"]]
    assert store.due_parked() == [made[1]["id"], made[0]["id"]]  # the store's own now
    store.unpark(made[1]["id"])
    assert store.due_parked(now) == [made[0]["id"]]


def test_parked_for_an_event_type_and_key(store, runs):
    made = [runs.make(status="waiting") for _ in range(4)]
    for run in made:
        store.create_run(run)
    store.park(made[0]["id"], "s0", event="order.paid", key="A")
    store.park(made[1]["id"], "s0", event="order.paid", key="B")
    store.park(made[2]["id"], "s0", event="order.paid")  # any key
    store.park(made[3]["id"], "s0", event="order.shipped", key="A")
    assert store.parked_for("order.paid", "A") == sorted([made[0]["id"], made[2]["id"]])
    assert store.parked_for("order.paid", None) == [made[2]["id"]]
    assert store.parked_for("order.cancelled", "A") == []


def test_parking_again_replaces_the_entry(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0", event="a")
    store.park(run["id"], "s1", due=5.0)
    assert store.parked(run["id"])["step"] == "s1"
    assert store.parked_for("a", None) == []
    assert store.due_parked(10.0) == [run["id"]]


def test_the_wake_index_survives_a_restart(backend, runs):
    if not backend.durable:
        pytest.skip("the memory store keeps nothing across a restart by design")
    store = backend.open()
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0", due=50.0, event="e", key="k")
    store = backend.reopen(store)
    assert store.due_parked(100.0) == [run["id"]]
    assert store.parked_for("e", "k") == [run["id"]]
