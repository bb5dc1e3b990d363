"""The store contract for event ids and the wake index of parked runs, on every backend."""

from __future__ import annotations

import json
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


# -- runs started by one event chain (app/core/events.py MAX_CHAIN_RUNS) -----------------------------------
def test_a_chain_counts_runs_up_to_its_limit_then_refuses(store):
    assert [store.count_chain_run("chain-a", 3) for _ in range(5)] == [0, 1, 2, 3, 3]
    assert store.count_chain_run("chain-a", 4) == 3  # a higher limit counts on from where the chain stands
    assert store.count_chain_run("chain-a", 4) == 4


def test_chains_are_counted_apart(store):
    assert [store.count_chain_run("chain-a", 2) for _ in range(3)] == [0, 1, 2]
    assert [store.count_chain_run("chain-b", 2) for _ in range(3)] == [0, 1, 2]


def test_threads_racing_for_a_chains_runs_count_each_once(store):
    counted = at_once(lambda _: store.count_chain_run("raced", 5), list(range(12)))
    assert sorted(counted) == [0, 1, 2, 3, 4] + [5] * 7


def test_pruning_forgets_the_chains_counted_before_the_cutoff(store):
    assert store.count_chain_run("old", 1) == 0
    assert store.count_chain_run("old", 1) == 1
    assert store.prune_chains(time.time() - 3600) == 0
    assert store.count_chain_run("old", 1) == 1
    assert store.prune_chains(time.time() + 3600) == 1
    assert store.count_chain_run("old", 1) == 0  # forgotten: counted again from nothing


@pytest.mark.parametrize(("chain", "limit", "named"), [("", 5, "chain"), (None, 5, "chain"), ("c", 0, "limit"),
                                                       ("c", 1.5, "limit"), ("c", True, "limit")])
def test_a_bad_chain_or_limit_raises_value_error_naming_it(store, chain, limit, named):
    with pytest.raises(ValueError, match=named):
        store.count_chain_run(chain, limit)


def test_park_and_unpark(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0", due=123.5, event="ticket.closed", key="T-1")
    expected = {"run_id": run["id"], "step": "s0", "due": 123.5, "event": "ticket.closed", "key": "T-1",
                "outcome": None}
    assert store.parked(run["id"]) == [expected]
    assert store.unpark(run["id"], "s0") == expected
    assert store.unpark(run["id"], "s0") is None
    assert store.parked(run["id"]) == []


def test_parking_an_unknown_run_raises_not_found(store):
    with pytest.raises(NotFound):
        store.park("run_00000000000000000000ff", "s0", due=1.0)


def test_a_parked_step_is_unparked_by_one_caller(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0")
    taken = at_once(lambda _: store.unpark(run["id"], "s0"), list(range(8)))
    assert sum(entry is not None for entry in taken) == 1


def test_due_parked_steps_soonest_first(store, runs):
    made = [runs.make(status="waiting") for _ in range(4)]
    for run in made:
        store.create_run(run)
    now = time.time()
    store.park(made[0]["id"], "s0", due=now - 10)
    store.park(made[1]["id"], "s0", due=now - 20)
    store.park(made[2]["id"], "s0", due=now + 3600)
    store.park(made[3]["id"], "s0", event="x")  # no time: never due
    first, second = (made[1]["id"], "s0"), (made[0]["id"], "s0")
    assert store.due_parked(now) == [first, second]
    assert store.due_parked(now, limit=1) == [first]
    assert store.due_parked() == [first, second]  # the store's own now
    store.unpark(*first)
    assert store.due_parked(now) == [second]


def test_parked_for_an_event_type_and_key(store, runs):
    made = [runs.make(status="waiting") for _ in range(4)]
    for run in made:
        store.create_run(run)
    store.park(made[0]["id"], "s0", event="order.paid", key="A")
    store.park(made[1]["id"], "s0", event="order.paid", key="B")
    store.park(made[2]["id"], "s0", event="order.paid")  # any key
    store.park(made[3]["id"], "s0", event="order.shipped", key="A")
    assert store.parked_for("order.paid", "A") == sorted([(made[0]["id"], "s0"), (made[2]["id"], "s0")])
    assert store.parked_for("order.paid", None) == [(made[2]["id"], "s0")]
    assert store.parked_for("order.cancelled", "A") == []


def test_parallel_steps_of_one_run_have_an_entry_each(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "paid", event="order.paid", key="A")
    store.park(run["id"], "shipped", event="order.shipped", key="A", due=5.0)
    store.park(run["id"], "ok")  # an approval: neither time nor event
    assert [entry["step"] for entry in store.parked(run["id"])] == ["ok", "paid", "shipped"]
    assert store.parked_for("order.paid", "A") == [(run["id"], "paid")]
    assert store.parked_for("order.shipped", "A") == [(run["id"], "shipped")]
    assert store.due_parked(10.0) == [(run["id"], "shipped")]
    assert store.unpark(run["id"], "paid")["event"] == "order.paid"
    assert [entry["step"] for entry in store.parked(run["id"])] == ["ok", "shipped"]
    assert [entry["step"] for entry in store.unpark_run(run["id"])] == ["ok", "shipped"]
    assert store.parked(run["id"]) == [] and store.unpark_run(run["id"]) == []


def test_parking_a_step_again_replaces_its_entry(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0", event="a")
    store.park(run["id"], "s0", due=5.0)
    assert [(entry["step"], entry["event"], entry["due"]) for entry in store.parked(run["id"])] == [("s0", None, 5.0)]
    assert store.parked_for("a", None) == []
    assert store.due_parked(10.0) == [(run["id"], "s0")]


def test_an_answered_entry_is_replaced_only_by_another_answer(store, runs):
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "ok", due=1e9)
    answer = {"result": {"approved": True, "by": "olga"}}
    store.park(run["id"], "ok", due=1.0, outcome=answer)
    store.park(run["id"], "ok", due=1e9)  # the run halting indexes its waiting steps again: the answer stays
    assert store.parked(run["id"])[0]["outcome"] == answer
    assert store.due_parked(2.0) == [(run["id"], "ok")]
    later = {"error": "rejected by vic"}
    store.park(run["id"], "ok", due=1.0, outcome=later)
    assert store.unpark(run["id"], "ok")["outcome"] == later


def test_the_wake_index_survives_a_restart(backend, runs):
    if not backend.durable:
        pytest.skip("the memory store keeps nothing across a restart by design")
    store = backend.open()
    run = runs.make(status="waiting")
    store.create_run(run)
    store.park(run["id"], "s0", due=50.0, event="e", key="k")
    store.park(run["id"], "s1", due=1.0, outcome={"result": {"event": None}})
    store = backend.reopen(store)
    assert store.due_parked(100.0) == [(run["id"], "s1"), (run["id"], "s0")]
    assert store.parked_for("e", "k") == [(run["id"], "s0")]
    assert store.parked(run["id"])[1]["outcome"] == {"result": {"event": None}}


def test_a_json_store_made_with_one_entry_per_run_keeps_its_entries(tmp_path, runs):
    from app.storage.json.store import JsonStore

    store = JsonStore(tmp_path / "data")
    run = runs.make(status="waiting")
    store.create_run(run)
    store.close()
    # The layout before an entry per step: parked/<run id>.json.
    old = {"run_id": run["id"], "step": "s0", "due": 50.0, "event": "e", "key": None}
    (tmp_path / "data" / "parked" / f"{run['id']}.json").write_text(json.dumps(old))
    store = JsonStore(tmp_path / "data")
    try:
        assert store.parked(run["id"]) == [{**old, "outcome": None}]
        assert store.parked_for("e", "k") == [(run["id"], "s0")]
        assert [path.name for path in (tmp_path / "data" / "parked").iterdir()] != [f"{run['id']}.json"]
    finally:
        store.close()
