"""The Store contract (app/storage/base.py), one suite over every backend: memory, JSON and PostgreSQL.

Each test uses the store as the runtime does and checks what it relies on. A backend that legitimately
differs gets its own expectation (``Backend``), with why beside it; nothing is skipped by backend.
Backend-specific behaviour (files, crash recovery, the WAL) is tested beside each backend.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.core.audit import verify
from app.errors import Conflict, NotFound
from app.runs import format_time, new_run, new_step, parse_time, utcnow
from app.storage.audit_chain import GENESIS, entry_hash
from app.storage.base import Durability, Store
from app.storage.json.store import JsonStore
from app.storage.memory import MemoryStore
from tests.waiting import wait_until

# What GET /api/runs accepts back as ?cursor= (app/api/routes.py): a page's `next` must be a run id.
RUN_ID = re.compile(r"^run_[0-9a-f]{1,64}$")
MODES = list(Durability)
INDEX_FIELDS = ("id", "workflow", "status", "created_at", "started_at", "finished_at")


# -- the backends ----------------------------------------------------------------
@dataclass
class Backend:
    """One kind of store, opened (and reopened) on one place; every store it opened is closed at the end."""

    name: str
    make: Callable[[], Store]
    #: Whether what a store recorded is there for a new store on the same place. MemoryStore keeps
    #: everything in its own dicts by design (tests and benchmarks), so a new one starts empty.
    durable: bool
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.make()
        self.opened.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        """Close ``store`` (as a server does at shutdown) and open a new one on the same place."""
        self.opened.remove(store)
        store.close()
        return self.open()

    def close_all(self) -> None:
        while self.opened:
            self.opened.pop().close()


@pytest.fixture(params=["memory", "json", pytest.param("postgres", marks=pytest.mark.services)])
def backend(request, tmp_path) -> Iterator[Backend]:
    if request.param == "memory":
        # Its files under tmp_path (MemoryStore() would make a folder in /tmp that nothing removes).
        found = Backend("memory", lambda: MemoryStore(tmp_path / "files"), durable=False)
    elif request.param == "json":
        found = Backend("json", lambda: JsonStore(tmp_path / "data"), durable=True)
    else:
        url = request.getfixturevalue("postgres_url")  # a fresh database of this test's own
        from app.storage.postgres import PostgresStore  # psycopg is an optional dependency

        found = Backend("postgres", lambda: PostgresStore(url, tmp_path / "files"), durable=True)
    try:
        yield found
    finally:
        found.close_all()


@pytest.fixture
def store(backend) -> Store:
    return backend.open()


# -- records ---------------------------------------------------------------------
class Runs:
    """Run records as the runtime makes them, each created after the one before.

    Ids and created_at move 2 ms per run, so "newest first" has one answer whatever a backend sorts by
    (the id, which sorts by creation time, or created_at), even when a fast store creates two runs in
    the same millisecond.
    """

    def __init__(self):
        self.clock = time.time() - 3600

    def make(self, workflow: str = "wf_a", steps: int = 2, **fields) -> dict:
        self.clock += 0.002
        run = new_run(workflow, [new_step(f"s{n}", "noop") for n in range(steps)], {"n": 1}, "api")
        created_at = format_time(self.clock)
        run.update(id=f"run_{int(self.clock * 1_000_000):016x}{random.getrandbits(24):06x}", created_at=created_at)
        run["history"][0]["at"] = created_at
        run.update(fields)
        return run


@pytest.fixture
def runs() -> Runs:
    return Runs()


def done_step(name: str, result: object = None, attempts: int = 1) -> dict:
    return {**new_step(name, "noop"), "status": "succeeded", "attempts": attempts, "result": result}


def finished(run: dict, status: str = "succeeded", at: float | None = None) -> dict:
    """The whole record of a run that ended ``at`` (default now), as the engine saves it."""
    return {**run, "status": status, "finished_at": format_time(time.time() if at is None else at), "progress": 100}


def log_line(message: str, level: str = "info", step: str | None = None) -> dict:
    return {"at": format_time(time.time()), "level": level, "step": step, "message": message}


def ids(records: list[dict]) -> list[str]:
    return [record["id"] for record in records]


def all_pages(store: Store, limit: int, **filters) -> list[list[dict]]:
    """Every page of a listing, following `next` as GET /api/runs?cursor= does."""
    page, cursor = store.list_runs(limit=limit, **filters)
    pages = [page]
    while cursor is not None:
        assert RUN_ID.match(cursor), f"next {cursor!r} is not a run id"
        assert len(pages) < 100, "the listing never ends"
        page, cursor = store.list_runs(limit=limit, before=cursor, **filters)
        pages.append(page)
    return pages


def everything(store: Store, **filters) -> list[dict]:
    return [run for page in all_pages(store, 50, **filters) for run in page]


# -- creating and reading runs ------------------------------------------------------
def test_a_created_run_reads_back_equal(store, runs):
    run = runs.make()
    assert store.create_run(run) == (run, True)
    assert store.get_run(run["id"]) == run
    no_steps = runs.make(steps=0, version=3, variables={"x": 1})  # a workflow without steps; more fields
    assert store.create_run(no_steps) == (no_steps, True)
    assert store.get_run(no_steps["id"]) == no_steps
    assert ids(everything(store)) == [no_steps["id"], run["id"]]


def test_a_run_id_is_stored_once(store, runs):
    run = runs.make()
    store.create_run(run)
    store.update_step(run["id"], 0, done_step("s0"))
    with pytest.raises(ValueError):
        store.create_run({**runs.make("wf_b"), "id": run["id"]})
    assert store.get_run(run["id"]) == {**run, "steps": [done_step("s0"), run["steps"][1]]}
    assert ids(everything(store)) == [run["id"]]


def test_an_unknown_run_is_none(store, runs):
    store.create_run(runs.make())
    assert store.get_run(runs.make()["id"]) is None  # well formed, never created
    assert store.get_run("run_unknown") is None
    assert store.get_run("not a run id/..") is None  # what a URL may carry: not an error


def test_any_json_value_round_trips(store, runs):
    run = runs.make()
    run["trigger_data"] = {
        "text": "ünïcödé ✓ 日本語 \U0001f600",
        "quotes": "'\"\\ \n\t",
        "numbers": [0, -1, 2**63 + 1, 0.1, 1.5e300, -2.25],
        "flags": [True, False, None],
        "nested": {"a": [{"b": {"c": []}}], "": "empty key"},
        "empty": {},
    }
    store.create_run(run)
    assert store.get_run(run["id"]) == run


def test_a_nul_character_in_text_round_trips(store, runs):
    # "\u0000" is valid JSON, and a webhook body or an e-mail may carry it; a store must keep it, not fail.
    run = runs.make()
    run["trigger_data"] = {"body": "before\u0000after"}
    store.create_run(run)
    store.update_step(run["id"], 0, done_step("s0", {"text": "a\u0000b"}))
    store.append_log(run["id"], log_line("nul \u0000 here"))
    assert store.get_run(run["id"])["trigger_data"] == {"body": "before\u0000after"}
    assert store.get_run(run["id"])["steps"][0]["result"] == {"text": "a\u0000b"}
    assert store.get_logs(run["id"])[0]["message"] == "nul \u0000 here"


def test_the_store_keeps_its_own_copy(store, runs):
    # The engine keeps changing its run dict and step dicts after recording them.
    run = runs.make()
    kept = {**run, "steps": [dict(step) for step in run["steps"]], "history": list(run["history"])}
    store.create_run(run)
    run["status"] = "running"
    run["steps"][0]["status"] = "running"
    run["history"].append({"at": format_time(time.time()), "from": "queued", "to": "running", "by": "engine"})
    step = done_step("s1")
    store.update_step(run["id"], 1, step)
    step["status"] = "changed later"
    read = store.get_run(run["id"])
    read["status"] = "changed by a reader"
    read["steps"][0]["status"] = "changed by a reader"
    assert store.get_run(run["id"]) == {**kept, "steps": [kept["steps"][0], done_step("s1")]}


def test_nested_values_changed_after_an_update_or_a_read_never_reach_the_store(store, runs):
    # The engine appends to the history it passed to update_run; a reader may edit what it read, at any depth.
    run = runs.make()
    store.create_run(run)
    history = [*run["history"], {"at": format_time(time.time()), "from": "queued", "to": "running", "by": "engine"}]
    fields = {"status": "running", "history": history, "variables": {"x": [1, {"y": "z"}]}}
    store.update_run(run["id"], fields)
    expected = {**run, "status": "running", "history": [dict(entry) for entry in history],
                "variables": {"x": [1, {"y": "z"}]}}
    history.append({"at": format_time(time.time()), "from": "running", "to": "paused", "by": "later"})
    history[0]["by"] = "changed later"
    fields["variables"]["x"][1]["y"] = "changed later"
    read = store.get_run(run["id"])
    read["history"][1]["by"] = "changed by a reader"
    read["variables"]["x"].append("added by a reader")
    listed = store.list_runs()[0][0]
    listed["history"][0]["to"] = "changed by a lister"
    listed["variables"]["x"][1]["y"] = "changed by a lister"
    assert store.get_run(run["id"]) == expected


# -- idempotency keys -----------------------------------------------------------------
def test_a_repeated_idempotency_key_returns_the_first_run_and_stores_nothing(store, runs):
    first = runs.make("wf_a")
    assert store.create_run(first, "key-1") == (first, True)
    again = runs.make("wf_a")
    assert store.create_run(again, "key-1") == (first, False)
    assert store.get_run(again["id"]) is None
    assert ids(everything(store)) == [first["id"]]

    # The first run as it is now: the answer to a repeated request shows how far it got.
    store.update_run(first["id"], {"status": "running", "started_at": format_time(time.time())})
    assert store.create_run(runs.make("wf_a"), "key-1") == (store.get_run(first["id"]), False)


def test_an_idempotency_key_belongs_to_one_workflow(store, runs):
    first, other_workflow, other_key, no_key = runs.make("wf_a"), runs.make("wf_b"), runs.make("wf_a"), runs.make()
    assert store.create_run(first, "key-1") == (first, True)
    assert store.create_run(other_workflow, "key-1") == (other_workflow, True)
    assert store.create_run(other_key, "key-2") == (other_key, True)
    assert store.create_run(no_key) == (no_key, True)
    assert store.create_run(runs.make("wf_b"), "key-1") == (other_workflow, False)
    assert sorted(ids(everything(store))) == sorted(ids([first, other_workflow, other_key, no_key]))


def at_once(call: Callable, arguments: list) -> list:
    """``call(argument)`` for each argument, on a thread of its own, all let go together; a thread's error re-raised."""
    start = threading.Barrier(len(arguments))

    def together(argument):
        start.wait(10)
        return call(argument)

    with ThreadPoolExecutor(len(arguments)) as pool:
        return list(pool.map(together, arguments))


def test_concurrent_creations_with_one_key_make_one_run(store, runs):
    for round_ in range(4):
        candidates = [runs.make("wf_a") for _ in range(8)]
        results = at_once(lambda run, key=f"key-{round_}": store.create_run(run, key), candidates)
        created = [run for run, new in results if new]
        assert len(created) == 1, f"round {round_}: {len(created)} runs created for one key"
        assert all(run == created[0] for run, _ in results)
        assert [candidate["id"] for candidate in candidates if store.get_run(candidate["id"])] == [created[0]["id"]]
    assert len(everything(store)) == 4


def test_two_stores_creating_with_one_key_at_once_make_one_run(backend, runs):
    # Two servers on one database (or two processes on one folder) take one request each, repeated.
    stores = [backend.open(), backend.open()]
    for round_ in range(4):
        candidates = [(stores[n % 2], runs.make("wf_a")) for n in range(8)]
        results = at_once(lambda job, key=f"key-{round_}": job[0].create_run(job[1], key), candidates)
        created = [run for run, new in results if new]
        if backend.durable:
            assert len(created) == 1, f"round {round_}: {len(created)} runs created for one key"
            assert all(run == created[0] for run, _ in results)
        else:
            # Each MemoryStore has dicts of its own, by design (tests and benchmarks): a key per store.
            assert len(created) == 2 and {run["id"] for run, _ in results} == {run["id"] for run in created}
    for store in stores:
        store.flush()  # the JSON store lists another process's creations once written (within FLUSH_DELAY)
    if backend.durable:
        assert len(everything(stores[0])) == 4 and everything(stores[0]) == everything(stores[1])
    else:
        assert len(everything(stores[0])) + len(everything(stores[1])) == 8


# -- changing runs ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_update_run_is_read_back_at_once(store, runs, mode):
    run = runs.make()
    store.create_run(run)
    started = format_time(time.time())
    store.update_run(run["id"], {"status": "running", "started_at": started}, mode=mode)
    store.update_run(run["id"], {"progress": 50, "error": None, "variables": {"x": [1, 2]}}, mode=mode)
    expected = {**run, "status": "running", "started_at": started, "progress": 50, "variables": {"x": [1, 2]}}
    assert store.get_run(run["id"]) == expected
    assert ids(store.list_runs(status="running")[0]) == [run["id"]]
    assert store.list_runs(status="queued")[0] == []
    assert store.find_run_ids({"running"}) == [run["id"]]
    assert [(entry["status"], entry["started_at"]) for entry in store.index_entries()] == [("running", started)]


@pytest.mark.parametrize("mode", MODES)
def test_update_step_is_read_back_at_once(store, runs, mode):
    run = runs.make(steps=3)
    store.create_run(run)
    for attempt in range(1, 4):
        store.update_step(run["id"], 1, {**done_step("s1"), "attempts": attempt}, mode=mode)
    store.update_step(run["id"], 2, done_step("s2", {"text": "ünïcode"}), mode=mode)
    assert store.get_run(run["id"]) == {
        **run, "steps": [run["steps"][0], done_step("s1", attempts=3), done_step("s2", {"text": "ünïcode"})]}


@pytest.mark.parametrize("mode", MODES)
def test_step_1000_reads_back(store, runs, mode):
    run = runs.make(steps=1001)
    store.create_run(run)
    store.update_step(run["id"], 1000, done_step("s1000", {"n": 1000}), mode=mode)
    store.update_step(run["id"], 999, done_step("s999"), mode=mode)
    steps = store.get_run(run["id"])["steps"]
    assert len(steps) == 1001
    assert steps[1000] == done_step("s1000", {"n": 1000}) and steps[999] == done_step("s999")
    assert steps[:999] == run["steps"][:999]


def test_changes_in_every_mode_keep_their_order(store, runs):
    run = runs.make(steps=1)
    store.create_run(run)
    for n, mode in enumerate(MODES * 3):
        store.update_step(run["id"], 0, done_step("s0", attempts=n), mode=mode)
        store.update_run(run["id"], {"progress": n}, mode=mode)
    last = len(MODES) * 3 - 1
    assert store.get_run(run["id"]) == {**run, "progress": last, "steps": [done_step("s0", attempts=last)]}


def test_changes_to_an_unknown_run_raise_not_found(store, runs):
    # A change must never make up half a record (a run pruned or never created).
    unknown = runs.make()["id"]
    with pytest.raises(NotFound):
        store.update_run(unknown, {"status": "running"})
    with pytest.raises(NotFound):
        store.update_step(unknown, 0, done_step("s0"))
    assert store.get_run(unknown) is None
    assert everything(store) == []


def test_save_run_replaces_the_record(store, runs):
    run = runs.make()
    store.create_run(run)
    store.update_step(run["id"], 0, done_step("s0"))
    store.update_run(run["id"], {"status": "running", "scratch": "only until the save"})
    final = finished({**run, "steps": [done_step("s0"), done_step("s1")]})
    store.save_run(final)
    assert store.get_run(run["id"]) == final  # no "scratch": replaced, not merged
    store.update_run(run["id"], {"error": "late"})  # changes after a save still count
    assert store.get_run(run["id"]) == {**final, "error": "late"}
    assert store.find_run_ids({"succeeded"}) == [run["id"]]
    assert ids(store.list_runs(status="succeeded")[0]) == [run["id"]]
    assert store.list_runs(status="running")[0] == []

    # The engine saves a halted run's reset steps, queued again (app/core/engine.py).
    queued = {**final, "status": "queued", "finished_at": None, "steps": [run["steps"][0], done_step("s1")]}
    store.save_run(queued)
    assert store.get_run(run["id"]) == queued
    assert store.find_run_ids({"queued"}) == [run["id"]]


# -- listing -------------------------------------------------------------------------------
def test_list_runs_newest_first_and_limited(store, runs):
    made = [runs.make() for _ in range(6)]
    for run in made:
        store.create_run(run)
    newest_first = ids(made)[::-1]
    assert ids(store.list_runs()[0]) == newest_first and store.list_runs()[1] is None
    assert store.list_runs()[0][0] == made[-1]  # whole records
    page, cursor = store.list_runs(limit=1)
    assert ids(page) == newest_first[:1] and cursor is not None
    assert ids(store.list_runs(limit=6)[0]) == newest_first and store.list_runs(limit=6)[1] is None
    assert store.list_runs(limit=100) == (store.list_runs()[0], None)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_bad_limit_raises_value_error(store, runs, limit):
    store.create_run(runs.make())
    with pytest.raises(ValueError):
        store.list_runs(limit=limit)


@pytest.mark.parametrize("limit", [1, 4, 5, 12, 13])
def test_pages_neither_repeat_nor_skip_a_run(store, runs, limit):
    made = [runs.make() for _ in range(12)]
    for run in made:
        store.create_run(run)
    pages = all_pages(store, limit)
    assert [run["id"] for page in pages for run in page] == ids(made)[::-1]
    assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit
    assert len(pages) == -(-12 // limit)  # no empty last page when the runs fill the pages exactly


def test_runs_created_between_pages_do_not_shift_the_pages(store, runs):
    made = [runs.make() for _ in range(10)]
    for run in made:
        store.create_run(run)
    page, cursor = store.list_runs(limit=4)
    seen = ids(page)
    while cursor is not None:
        store.create_run(runs.make())  # newer than every page: on page 1 of the next listing
        page, cursor = store.list_runs(limit=4, before=cursor)
        seen += ids(page)
    assert seen == ids(made)[::-1]


def test_a_run_pruned_between_pages_does_not_shift_the_pages(store, runs):
    made = [runs.make() for _ in range(9)]
    for run in made:
        store.create_run(run)
    page, cursor = store.list_runs(limit=3)
    seen = ids(page)
    while cursor is not None:
        # The run the cursor names goes (WORKFLOW_RETENTION_DAYS) before the next page is asked for.
        store.save_run(finished(store.get_run(cursor), at=time.time() - 100))
        assert store.prune(time.time() - 10) == 1
        page, cursor = store.list_runs(limit=3, before=cursor)
        seen += ids(page)
    assert seen == ids(made)[::-1]


def test_list_runs_filters_by_workflow_and_status(store, runs):
    made = [runs.make("wf_a" if n % 3 else "wf_b") for n in range(12)]
    for run in made:
        store.create_run(run)
    for run in made[2:9:2]:
        store.update_run(run["id"], {"status": "running", "started_at": format_time(time.time())})
    store.save_run(finished(made[4]))

    def expected(workflow: str | None = None, status: str | None = None) -> list[str]:
        return [run["id"] for run in reversed(made)
                if workflow in (None, run["workflow"]) and status in (None, store.get_run(run["id"])["status"])]

    for workflow in (None, "wf_a", "wf_b", "wf_missing"):
        for status in (None, "queued", "running", "succeeded", "failed"):
            for limit in (2, 50):
                pages = all_pages(store, limit, workflow=workflow, status=status)
                found = [run for page in pages for run in page]
                assert ids(found) == expected(workflow, status), (workflow, status, limit)
                assert all(run == store.get_run(run["id"]) for run in found)
    assert expected("wf_b", "running") and expected("wf_a", "succeeded")  # the filters had something to find


def test_find_run_ids_oldest_first(store, runs):
    made = [runs.make() for _ in range(6)]
    for run in made:
        store.create_run(run)
    for run in made[1:5]:
        store.update_run(run["id"], {"status": "running"})
    store.update_run(made[2]["id"], {"status": "paused"})
    store.save_run(finished(made[3]))
    assert store.find_run_ids({"queued", "running"}) == ids([made[0], made[1], made[4], made[5]])
    assert store.find_run_ids({"running", "paused"}) == ids([made[1], made[2], made[4]])
    assert store.find_run_ids({"succeeded"}) == [made[3]["id"]]
    assert store.find_run_ids({"failed"}) == []
    assert store.find_run_ids(set()) == []


def test_index_entries_since_list_created_runs_with_their_fields(store, runs):
    made = [runs.make("wf_a" if n % 2 else "wf_b") for n in range(5)]
    for run in made:
        store.create_run(run)
    started = format_time(time.time())
    store.update_run(made[1]["id"], {"status": "running", "started_at": started})
    store.save_run(finished({**made[3], "started_at": started}, "failed"))

    def entry(run_id: str) -> dict:
        run = store.get_run(run_id)
        return {name: run[name] for name in INDEX_FIELDS}

    assert store.index_entries() == [entry(run["id"]) for run in made]
    assert store.index_entries(since=made[2]["created_at"]) == [entry(run["id"]) for run in made[2:]]  # at or after
    assert store.index_entries(since=format_time(runs.clock + 1)) == []
    assert store.index_entries()[1]["status"] == "running" and store.index_entries()[1]["started_at"] == started
    assert store.index_entries()[3]["status"] == "failed" and store.index_entries()[3]["finished_at"] is not None


# -- pruning ----------------------------------------------------------------------------------
def test_prune_removes_finished_runs_older_than_the_cutoff(store, runs):
    now = parse_time(format_time(time.time()))  # on the millisecond, as finished_at is
    old_done, old_failed, old_cancelled, old_by_fields, new_done, at_cutoff, running, paused, queued = (
        runs.make() for _ in range(9))
    made = [old_done, old_failed, old_cancelled, old_by_fields, new_done, at_cutoff, running, paused, queued]
    for run in made:
        store.create_run(run, f"key-{run['id']}")
        store.append_log(run["id"], log_line(f"created {run['id']}"))
    store.save_run(finished(old_done, at=now - 100))
    store.save_run(finished(old_failed, "failed", at=now - 100))
    store.save_run(finished(old_cancelled, "cancelled", at=now - 100))
    store.update_run(old_by_fields["id"], {"status": "failed", "finished_at": format_time(now - 100)})
    store.save_run(finished(new_done, at=now))
    store.save_run(finished(at_cutoff, at=now - 10))  # "before the cutoff" is strictly before
    long_ago = format_time(now - 100)
    store.update_run(running["id"], {"status": "running", "started_at": long_ago})
    store.update_run(paused["id"], {"status": "paused", "started_at": long_ago})
    pruned, kept = made[:4], made[4:]
    kept_records = {run["id"]: store.get_run(run["id"]) for run in kept}
    kept_logs = {run["id"]: store.get_logs(run["id"]) for run in kept}
    assert all(len(lines) == 1 for lines in kept_logs.values())

    assert store.prune(now - 10) == 4
    for run in pruned:
        assert store.get_run(run["id"]) is None
        assert store.get_logs(run["id"]) == []
    assert {run["id"]: store.get_run(run["id"]) for run in kept} == kept_records
    assert {run["id"]: store.get_logs(run["id"]) for run in kept} == kept_logs
    assert ids(everything(store)) == ids(kept)[::-1]
    assert store.find_run_ids({"succeeded", "failed", "cancelled"}) == ids([new_done, at_cutoff])
    assert [entry["id"] for entry in store.index_entries()] == ids(kept)

    # A pruned run's key is free again; a kept run's still holds.
    again = runs.make()
    assert store.create_run(again, f"key-{old_done['id']}") == (again, True)
    assert store.create_run(runs.make(), f"key-{new_done['id']}") == (kept_records[new_done["id"]], False)
    assert store.prune(now - 10) == 0


# -- logs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_logs_read_back_in_order(store, runs, mode):
    run, other = runs.make(), runs.make()
    store.create_run(run)
    store.create_run(other)
    lines = [log_line(f"line {n}", step="s0" if n % 2 else None) for n in range(5)]
    for line in lines:
        store.append_log(run["id"], line, mode=mode)
    store.append_log(other["id"], log_line("other run"), mode=mode)
    assert store.get_logs(run["id"]) == lines
    assert [line["message"] for line in store.get_logs(other["id"])] == ["other run"]
    assert store.get_logs(runs.make()["id"]) == []


def test_logs_in_mixed_modes_keep_their_order(store, runs):
    run = runs.make()
    store.create_run(run)
    lines = []
    for n, mode in enumerate(MODES * 3):
        lines.append(log_line(f"line {n} ({mode})"))
        store.append_log(run["id"], lines[-1], mode=mode)
        store.update_step(run["id"], 0, done_step("s0", attempts=n), mode=MODES[(n + 1) % len(MODES)])
    assert store.get_logs(run["id"]) == lines


# -- concurrency ------------------------------------------------------------------------------------
def test_concurrent_changes_of_one_run_lose_nothing(store, runs):
    threads, rounds = 8, 20
    run = runs.make(steps=threads)
    store.create_run(run)

    def work(index: int) -> None:
        for n in range(1, rounds + 1):
            mode = MODES[(index + n) % len(MODES)]
            store.update_step(run["id"], index, done_step(f"s{index}", {"thread": index}, attempts=n), mode=mode)
            store.update_run(run["id"], {f"note_{index}": n}, mode=mode)
            store.append_log(run["id"], log_line(f"{index}:{n}"), mode=mode)

    at_once(work, list(range(threads)))
    stored = store.get_run(run["id"])
    assert stored["steps"] == [done_step(f"s{index}", {"thread": index}, attempts=rounds) for index in range(threads)]
    assert {name: stored[name] for name in stored if name.startswith("note_")} == {
        f"note_{index}": rounds for index in range(threads)}
    messages = [line["message"] for line in store.get_logs(run["id"])]
    for index in range(threads):  # every line, each thread's in the order it wrote them
        assert [m for m in messages if m.split(":")[0] == str(index)] == [f"{index}:{n}" for n in range(1, rounds + 1)]
    assert len(messages) == threads * rounds


def test_concurrent_saves_of_definitions_and_started_workflows_lose_nothing(store):
    # Two API requests at once (PUT a definition, start a workflow) must not take one version number or
    # overwrite each other's started workflow.
    versions = at_once(lambda n: (n, store.save_definition("alpha", definition("alpha", n))), list(range(8)))
    assert sorted(version for _, version in versions) == list(range(1, 9))
    assert {version: store.get_definition("alpha", version)["definition"] for _, version in versions} == {
        version: definition("alpha", n) for n, version in versions}
    at_once(lambda n: store.set_started(f"wf_{n}", True), list(range(8)))
    assert store.started_workflows() == {f"wf_{n}" for n in range(8)}


# -- trigger state, started workflows ----------------------------------------------------------------
def test_trigger_state(store):
    assert store.load_trigger_state("mail") == {}
    store.save_trigger_state("mail", {"last_uid": 41, "seen": ["a"], "uidvalidity": 7})
    store.save_trigger_state("poll", {"etag": "x"})
    store.save_trigger_state("mail", {"last_uid": 42, "seen": ["a", "b"]})
    assert store.load_trigger_state("mail") == {"last_uid": 42, "seen": ["a", "b"]}  # replaced, not merged
    assert store.load_trigger_state("poll") == {"etag": "x"}
    store.load_trigger_state("poll")["etag"] = "changed by a reader"
    assert store.load_trigger_state("poll") == {"etag": "x"}
    store.save_trigger_state("poll", {})
    assert store.load_trigger_state("poll") == {}
    assert store.load_trigger_state("never_saved") == {}


def test_started_workflows(store):
    assert store.started_workflows() == set()
    store.set_started("wf_a", True)
    store.set_started("wf_b", True)
    store.set_started("wf_a", True)
    assert store.started_workflows() == {"wf_a", "wf_b"}
    store.set_started("wf_a", False)
    store.set_started("wf_c", False)  # never started: nothing to forget
    assert store.started_workflows() == {"wf_b"}


# -- definitions ---------------------------------------------------------------------------------------
def definition(name: str, n: int) -> dict:
    return {"name": name, "description": f"version {n}", "steps": [{"name": "s", "type": "log", "message": n}]}


def test_definition_versions(store):
    assert [store.save_definition("alpha", definition("alpha", n)) for n in (1, 2, 3)] == [1, 2, 3]
    assert store.save_definition("beta", definition("beta", 1)) == 1  # versions count per name

    newest = store.get_definition("alpha")
    assert {name: newest[name] for name in ("name", "version", "definition")} == {
        "name": "alpha", "version": 3, "definition": definition("alpha", 3)}
    assert parse_time(newest["saved_at"]) <= time.time()  # an ISO time
    assert set(newest) == {"name", "version", "definition", "saved_at"}
    assert [store.get_definition("alpha", n)["definition"] for n in (1, 2, 3)] == [
        definition("alpha", n) for n in (1, 2, 3)]
    assert store.get_definition("alpha", 2)["version"] == 2
    assert store.get_definition("alpha", 4) is None
    assert store.get_definition("alpha", 0) is None
    assert store.get_definition("gamma") is None
    assert store.get_definition("gamma", 1) is None

    listed = {record["name"]: record for record in store.list_definitions()}
    assert listed == {"alpha": store.get_definition("alpha"), "beta": store.get_definition("beta")}

    # The designer's history: every version, newest first, with the time each read answers.
    assert store.list_definition_versions("alpha") == [
        {"version": n, "saved_at": store.get_definition("alpha", n)["saved_at"]} for n in (3, 2, 1)]
    assert [entry["version"] for entry in store.list_definition_versions("beta")] == [1]
    assert store.list_definition_versions("gamma") == []


def test_a_definition_saved_expecting_an_older_version_is_a_conflict(store):
    # If-Match: a save that expects version N is stored only while N is the newest (0: none yet).
    assert store.save_definition("alpha", definition("alpha", 1), expected=0) == 1
    with pytest.raises(Conflict, match="workflow 'alpha' is at version 1; you edited version 0"):
        store.save_definition("alpha", definition("alpha", 9), expected=0)
    assert store.save_definition("alpha", definition("alpha", 2), expected=1) == 2
    with pytest.raises(Conflict, match="is at version 2; you edited version 1"):
        store.save_definition("alpha", definition("alpha", 9), expected=1)
    with pytest.raises(Conflict):
        store.save_definition("beta", definition("beta", 1), expected=3)
    assert [entry["version"] for entry in store.list_definition_versions("alpha")] == [2, 1]
    assert store.get_definition("alpha")["definition"] == definition("alpha", 2)
    assert store.get_definition("beta") is None


def test_of_concurrent_saves_expecting_one_version_one_is_stored(store):
    store.save_definition("alpha", definition("alpha", 0))
    for newest in (1, 2, 3):  # three rounds of six saves at once, each expecting the newest version

        def save(n: int, newest=newest) -> int | None:
            try:
                return store.save_definition("alpha", definition("alpha", 10 * newest + n), expected=newest)
            except Conflict:
                return None

        saved = at_once(save, list(range(6)))
        assert [version for version in saved if version is not None] == [newest + 1], saved
        assert store.get_definition("alpha")["definition"] == definition("alpha", 10 * newest + saved.index(newest + 1))
    assert [entry["version"] for entry in store.list_definition_versions("alpha")] == [4, 3, 2, 1]


def test_delete_definition_forgets_every_version(store):
    for n in (1, 2):
        store.save_definition("alpha", definition("alpha", n))
    store.save_definition("beta", definition("beta", 1))
    store.delete_definition("alpha")
    assert store.get_definition("alpha") is None
    assert store.list_definition_versions("alpha") == []
    assert store.get_definition("alpha", 1) is None and store.get_definition("alpha", 2) is None
    assert [record["name"] for record in store.list_definitions()] == ["beta"]
    store.delete_definition("never_saved")  # nothing to forget: no error
    store.delete_definition("beta")
    assert store.list_definitions() == []


# -- files ---------------------------------------------------------------------------------------------------
def test_files_path_makes_a_folder_under_the_root(store):
    path = store.files_path("attachments", "run_1")
    assert path == Path(store.root) / "attachments" / "run_1" and path.is_dir()
    (path / "a.txt").write_text("kept")
    assert store.files_path("attachments", "run_1") == path and (path / "a.txt").read_text() == "kept"
    assert store.files_path("outbox").is_dir()


# -- maintenance, shutdown and a new store on the same place --------------------------------------------------
def test_maintenance_keeps_every_record(store, runs):
    active, done = runs.make(), runs.make()
    for run in (active, done):
        store.create_run(run)
        store.append_log(run["id"], log_line("one"), mode=Durability.DEFERRED)
        store.update_step(run["id"], 0, done_step("s0"), mode=Durability.DEFERRED)
    store.save_run(finished({**done, "steps": [done_step("s0"), done_step("s1")]}))
    store.append_log(done["id"], log_line("two"))
    before = {run["id"]: (store.get_run(run["id"]), store.get_logs(run["id"])) for run in (active, done)}
    listed = store.list_runs()

    assert store.compact() >= 0
    store.flush(active["id"])
    store.flush()
    assert {run["id"]: (store.get_run(run["id"]), store.get_logs(run["id"])) for run in (active, done)} == before
    assert store.list_runs() == listed
    store.update_step(active["id"], 1, done_step("s1"))  # a run flushed (let go of) still takes changes
    assert store.get_run(active["id"])["steps"][1] == done_step("s1")


def test_records_survive_close_and_a_new_store(backend, runs):
    store = backend.open()
    run, done = runs.make(steps=len(MODES)), runs.make()
    store.create_run(run, "key-1")
    store.create_run(done)
    for index, mode in enumerate(MODES):  # DEFERRED too: close() writes it
        store.update_step(run["id"], index, done_step(f"s{index}", mode.value), mode=mode)
        store.append_log(run["id"], log_line(f"line {index}"), mode=mode)
    store.update_run(run["id"], {"status": "running", "started_at": format_time(time.time())},
                     mode=Durability.DEFERRED)
    store.save_run(finished(done))
    store.save_trigger_state("wf_a", {"cursor": 3})
    store.set_started("wf_a", True)
    store.save_definition("alpha", definition("alpha", 1))
    store.save_definition("alpha", definition("alpha", 2))
    recorded = {
        "runs": [store.get_run(run["id"]), store.get_run(done["id"])],
        "logs": store.get_logs(run["id"]),
        "listed": store.list_runs(),
        "running": store.find_run_ids({"running"}),
        "index": store.index_entries(),
        "trigger": store.load_trigger_state("wf_a"),
        "started": store.started_workflows(),
        "definitions": store.list_definitions(),
    }

    again = backend.reopen(store)
    found = {
        "runs": [again.get_run(run["id"]), again.get_run(done["id"])],
        "logs": again.get_logs(run["id"]),
        "listed": again.list_runs(),
        "running": again.find_run_ids({"running"}),
        "index": again.index_entries(),
        "trigger": again.load_trigger_state("wf_a"),
        "started": again.started_workflows(),
        "definitions": again.list_definitions(),
    }
    if backend.durable:
        assert found == recorded
        assert again.create_run(runs.make(), "key-1") == (recorded["runs"][0], False)
        assert again.save_definition("alpha", definition("alpha", 3)) == 3
    else:
        # MemoryStore keeps nothing beyond its own life, by design (tests and benchmarks).
        assert found == {"runs": [None, None], "logs": [], "listed": ([], None), "running": [], "index": [],
                         "trigger": {}, "started": set(), "definitions": []}


def test_another_store_on_the_same_place_sees_what_one_recorded(backend, runs):
    # Several processes (servers, workers, `run.py run`) open one place; a run changes hands after flush(run_id).
    first, second = backend.open(), backend.open()
    run = runs.make(steps=2)
    first.create_run(run, "key-1")
    first.update_run(run["id"], {"status": "running", "started_at": format_time(time.time())},
                     mode=Durability.DEFERRED)
    first.update_step(run["id"], 0, done_step("s0"), mode=Durability.DEFERRED)
    first.append_log(run["id"], log_line("by the first"), mode=Durability.DEFERRED)
    first.save_trigger_state("wf_a", {"cursor": 1})
    first.set_started("wf_a", True)
    first.save_definition("alpha", definition("alpha", 1))
    first.flush(run["id"])  # lets go of the run, as a paused or handed-over run is
    first.flush()
    if not backend.durable:
        # Each MemoryStore has dicts of its own, by design (tests and benchmarks): nothing is shared.
        assert second.get_run(run["id"]) is None and second.list_runs() == ([], None)
        return

    assert second.get_run(run["id"]) == first.get_run(run["id"])
    assert second.get_logs(run["id"]) == first.get_logs(run["id"])
    assert ids(second.list_runs(status="running")[0]) == [run["id"]]
    assert second.find_run_ids({"running"}) == [run["id"]]
    assert second.index_entries() == first.index_entries()
    assert second.create_run(runs.make(), "key-1") == (first.get_run(run["id"]), False)
    assert second.load_trigger_state("wf_a") == {"cursor": 1}
    assert second.started_workflows() == {"wf_a"}
    assert second.get_definition("alpha") == first.get_definition("alpha")

    # The second takes the run over; the first sees its changes.
    second.update_step(run["id"], 1, done_step("s1"))
    second.append_log(run["id"], log_line("by the second"))
    second.update_run(run["id"], {"status": "paused"})
    second.save_trigger_state("wf_a", {"cursor": 2})
    second.set_started("wf_a", False)
    assert second.save_definition("alpha", definition("alpha", 2)) == 2
    second.flush(run["id"])
    second.flush()
    assert first.get_run(run["id"]) == second.get_run(run["id"])
    assert first.get_run(run["id"])["steps"] == [done_step("s0"), done_step("s1")]
    assert [line["message"] for line in first.get_logs(run["id"])] == ["by the first", "by the second"]
    assert first.find_run_ids({"paused"}) == [run["id"]] and first.find_run_ids({"running"}) == []
    assert ids(first.list_runs(status="paused")[0]) == [run["id"]]
    assert first.load_trigger_state("wf_a") == {"cursor": 2}
    assert first.started_workflows() == set()
    assert first.get_definition("alpha")["version"] == 2


# -- the wake index's runs (its entries: tests/test_store_parking.py) -------------------------------------
def test_parked_run_ids_are_the_runs_with_an_entry_in_the_wake_index(backend, runs):
    store = backend.open()
    two, one, none = (runs.make(status="waiting"), runs.make(status="paused"), runs.make(status="paused"))
    for run in (two, one, none):
        store.create_run(run)
    assert store.parked_run_ids() == set()
    store.park(two["id"], "s0", event="ticket.closed")
    store.park(two["id"], "s1", due=time.time() + 60)
    store.park(one["id"], "s0", outcome={"by": "olga", "result": {"approved": True}})
    assert store.parked_run_ids() == {two["id"], one["id"]}  # a run once, however many of its steps wait
    if backend.durable:
        store = backend.reopen(store)
        assert store.parked_run_ids() == {two["id"], one["id"]}
    store.unpark(two["id"], "s0")
    assert store.parked_run_ids() == {two["id"], one["id"]}
    store.unpark(two["id"], "s1")
    store.unpark_run(one["id"])
    assert store.parked_run_ids() == set()


# -- leases: which worker executes a run (DESIGN section 11) -------------------------------------
LONG = 60.0  # a lease that never ends during a test
SHORT = 0.2  # a lease that ends almost at once


def started(runs: Runs, status: str = "running", **fields) -> dict:
    """A run a worker executes."""
    return runs.make(status=status, started_at=format_time(time.time()), **fields)


def test_a_claim_succeeds_once_and_the_record_names_the_worker(store, runs):
    run = started(runs, trigger_data={"text": "a\u0000b é", "worker": None})  # the claim rewrites the record
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", LONG) is True
    claimed = store.get_run(run["id"])
    assert claimed == {**run, "worker": "host-a:1"}
    assert list(claimed)[: len(run)] == list(run)  # the record keeps its keys' order
    assert store.claim_run(run["id"], "host-b:2", LONG) is False  # a duplicate job does nothing
    assert store.get_run(run["id"])["worker"] == "host-a:1"
    assert store.claim_run(run["id"], "host-a:1", LONG) is True  # the holder's redelivered job: a renewal


def test_a_claim_of_an_unknown_run_or_with_bad_arguments_raises(store, runs):
    with pytest.raises(NotFound):
        store.claim_run("run_0000000000000001abcdef", "host-a:1", LONG)
    run = started(runs)
    store.create_run(run)
    for owner, seconds in (("", LONG), ("host-a:1", 0), ("host-a:1", -1), ("host-a:1", float("nan"))):
        with pytest.raises(ValueError, match="lease"):
            store.claim_run(run["id"], owner, seconds)
    assert store.claim_run(run["id"], "host-a:1", LONG) is True


def test_the_holder_renews_and_nobody_else_does(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", SHORT)
    later = time.time() + 10  # past the short lease, well before a renewed long one
    assert store.expired_leases(now=later) == [run["id"]]
    assert store.renew_lease(run["id"], "host-b:2", LONG) is False
    assert store.expired_leases(now=later) == [run["id"]]
    assert store.renew_lease(run["id"], "host-a:1", LONG) is True
    assert store.expired_leases(now=later) == []
    assert store.claim_run(run["id"], "host-b:2", LONG) is False


def test_an_expired_lease_is_taken_over_and_the_record_names_the_new_worker(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", SHORT)
    wait_until(lambda: store.claim_run(run["id"], "host-b:2", LONG), timeout=10,
               message="host-b:2 takes the run over once host-a:1's lease ended")
    assert store.get_run(run["id"])["worker"] == "host-b:2"
    assert store.renew_lease(run["id"], "host-a:1", LONG) is False  # the old worker learns it lost the run
    assert store.claim_run(run["id"], "host-a:1", LONG) is False
    store.release_run(run["id"], "host-a:1")  # not the holder: nothing happens
    assert store.claim_run(run["id"], "host-c:3", LONG) is False
    assert store.get_run(run["id"])["worker"] == "host-b:2"


def test_release_lets_another_claim_at_once_and_only_the_holder_releases(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", LONG)
    store.release_run(run["id"], "host-b:2")
    assert store.claim_run(run["id"], "host-b:2", LONG) is False
    store.release_run(run["id"], "host-a:1")
    assert store.renew_lease(run["id"], "host-a:1", LONG) is False
    assert store.claim_run(run["id"], "host-b:2", LONG) is True
    assert store.get_run(run["id"])["worker"] == "host-b:2"


def test_create_leased_stores_a_new_run_with_its_lease_and_a_used_key_takes_none(store, runs):
    run = started(runs)
    stored, created = store.create_leased(run, "key-1", "host-a:1", LONG)
    assert created and stored["worker"] == "host-a:1"
    assert store.get_run(run["id"])["worker"] == "host-a:1"
    assert store.claim_run(run["id"], "host-b:2", LONG) is False
    assert store.renew_lease(run["id"], "host-a:1", LONG) is True
    again = started(runs)
    first, created = store.create_leased(again, "key-1", "host-c:3", LONG)
    assert not created and first["id"] == run["id"]
    assert store.claim_run(run["id"], "host-c:3", LONG) is False  # still host-a's
    store.release_run(run["id"], "host-a:1")
    assert store.claim_run(run["id"], "host-b:2", LONG) is True


def test_save_and_release_saves_the_run_and_gives_up_only_its_holders_lease(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", LONG)
    store.request_control(run["id"], "pause", "api")
    run.update(status="succeeded", finished_at=run["created_at"], worker="host-a:1")
    run["steps"][0] = done_step("s0", {"v": 1})
    store.save_and_release(run, "host-b:2")  # not the holder: saved, the lease and the request stay
    assert store.get_run(run["id"]) == run
    assert store.claim_run(run["id"], "host-b:2", LONG) is False
    store.save_and_release(run, "host-a:1")
    assert store.renew_lease(run["id"], "host-a:1", LONG) is False
    assert store.claim_run(run["id"], "host-b:2", LONG) is True
    assert store.take_controls("host-b:2") == []


def test_expired_leases_lists_exactly_the_expired_queued_or_running_runs(store, runs):
    running, queued, live, done, paused, unleased, released = (
        started(runs), started(runs, "queued"), started(runs), started(runs), started(runs, "paused"),
        started(runs), started(runs),
    )
    for run in (running, queued, live, done, paused, unleased, released):
        store.create_run(run)
    for run in (running, queued, done, paused, released):
        assert store.claim_run(run["id"], "host-a:1", SHORT)
    assert store.claim_run(live["id"], "host-a:1", LONG)
    store.save_run(finished(store.get_run(done["id"])))
    store.release_run(released["id"], "host-a:1")
    assert store.expired_leases(now=time.time() + 3600) == [running["id"], queued["id"], live["id"]]  # oldest first

    wait_until(lambda: len(store.expired_leases()) >= 2, timeout=10, message="two short leases end")
    assert store.expired_leases() == [running["id"], queued["id"]]
    assert store.claim_run(running["id"], "host-b:2", LONG)
    assert store.expired_leases() == [queued["id"]]


def test_threads_and_stores_racing_to_claim_one_run_make_one_winner(backend, runs):
    # For JSON and PostgreSQL a second store on the same place stands for another process (another host).
    stores = [backend.open(), backend.open()] if backend.durable else [backend.open()]
    run = started(runs, "queued")
    stores[0].create_run(run)
    stores[0].flush(run["id"])  # handed over, as the server does before a worker takes a run
    owners = [f"host-{n % len(stores)}:{n}" for n in range(8 * len(stores))]
    ready = threading.Barrier(len(owners))

    def claim(n: int) -> bool:
        ready.wait()
        return stores[n % len(stores)].claim_run(run["id"], owners[n], LONG)

    with ThreadPoolExecutor(len(owners)) as pool:
        won = list(pool.map(claim, range(len(owners))))
    assert won.count(True) == 1
    winner = owners[won.index(True)]
    for store in stores:
        assert store.get_run(run["id"])["worker"] == winner
        assert store.claim_run(run["id"], "host-z:9", LONG) is False


# -- control requests: cancel or pause a run executing in another process ----------------------------
def test_a_pending_cancel_is_not_replaced_by_a_pause_and_a_cancel_replaces_a_pause(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", LONG)
    store.request_control(run["id"], "pause", "alice")
    store.request_control(run["id"], "cancel", "bob")  # replaces the pause
    store.request_control(run["id"], "pause", "carol")  # a cancel is pending: changes nothing
    assert store.take_controls("host-a:1") == [(run["id"], "cancel", "bob")]
    assert store.take_controls("host-a:1") == []  # taken once
    store.request_control(run["id"], "pause", "dave")
    assert store.take_controls("host-a:1") == [(run["id"], "pause", "dave")]  # a new request after the take


def test_requests_are_taken_by_the_holder_only_oldest_run_first(store, runs):
    first, second, others, unleased = started(runs), started(runs, "queued"), started(runs), started(runs, "queued")
    for run in (first, second, others, unleased):
        store.create_run(run)
    assert store.claim_run(first["id"], "host-a:1", LONG)
    assert store.claim_run(second["id"], "host-a:1", LONG)
    assert store.claim_run(others["id"], "host-b:2", LONG)
    for run in (unleased, others, second, first):  # asked newest run first
        store.request_control(run["id"], "cancel", "api")
    assert store.take_controls("host-c:3") == []
    assert store.take_controls("host-a:1") == [(first["id"], "cancel", "api"), (second["id"], "cancel", "api")]
    assert store.take_controls("host-a:1") == []
    assert store.take_controls("host-b:2") == [(others["id"], "cancel", "api")]
    # A request made before any claim waits for the run's worker.
    assert store.claim_run(unleased["id"], "host-a:1", LONG)
    assert store.take_controls("host-a:1") == [(unleased["id"], "cancel", "api")]


def test_releasing_a_run_drops_its_request_and_only_the_holder_releases(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", LONG)
    store.request_control(run["id"], "pause", "api")
    store.release_run(run["id"], "host-b:2")  # not the holder: the lease and the request stay
    store.release_run(run["id"], "host-a:1")
    assert store.claim_run(run["id"], "host-b:2", LONG)
    assert store.take_controls("host-b:2") == []


def test_a_request_outlives_an_ended_lease_and_reaches_the_worker_that_takes_over(store, runs):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", SHORT)
    store.request_control(run["id"], "cancel", "api")
    wait_until(lambda: store.expired_leases() == [run["id"]], timeout=10, message="host-a:1's short lease ends")
    assert store.take_controls("host-a:1") == []  # its lease ended: not its request any more
    assert store.claim_run(run["id"], "host-b:2", LONG)
    store.request_control(run["id"], "pause", "api")  # the cancel made while host-a:1 died still wins
    assert store.take_controls("host-a:1") == []
    assert store.take_controls("host-b:2") == [(run["id"], "cancel", "api")]


@pytest.mark.parametrize("operation", ["resume", "", "CANCEL", None])
def test_a_request_with_a_bad_operation_raises_value_error_naming_it(store, runs, operation):
    run = started(runs)
    store.create_run(run)
    assert store.claim_run(run["id"], "host-a:1", LONG)
    with pytest.raises(ValueError, match=re.escape(repr(operation))) as raised:
        store.request_control(run["id"], operation, "api")
    assert run["id"] in str(raised.value) and "'cancel' or 'pause'" in str(raised.value)
    assert store.take_controls("host-a:1") == []


def test_a_request_of_an_unknown_run_raises_not_found(store, runs):
    with pytest.raises(NotFound, match="run_0000000000000001abcdef"):
        store.request_control("run_0000000000000001abcdef", "cancel", "api")


def test_threads_and_stores_racing_to_take_requests_take_each_once(backend, runs):
    # For JSON and PostgreSQL a second store on the same place stands for another process.
    stores = [backend.open(), backend.open()] if backend.durable else [backend.open()]
    leased = [started(runs) for _ in range(5)]
    for run in leased:
        stores[0].create_run(run)
        assert stores[0].claim_run(run["id"], "host-a:1", LONG)
        stores[0].request_control(run["id"], "cancel", "api")
    callers = 8 * len(stores)
    ready = threading.Barrier(callers)

    def take(n: int) -> list[tuple[str, str, str]]:
        ready.wait()
        return stores[n % len(stores)].take_controls("host-a:1")

    with ThreadPoolExecutor(callers) as pool:
        taken = [request for found in pool.map(take, range(callers)) for request in found]
    assert sorted(taken) == [(run["id"], "cancel", "api") for run in leased]
    assert all(store.take_controls("host-a:1") == [] for store in stores)


def test_unleased_runs_lists_queued_or_running_runs_without_a_live_lease(store, runs):
    queued, running, released, expired, live, done, paused = (
        started(runs, "queued"), started(runs), started(runs), started(runs), started(runs), started(runs),
        started(runs, "paused"),
    )
    for run in (queued, running, released, expired, live, done, paused):
        store.create_run(run)
    assert store.claim_run(released["id"], "host-a:1", LONG)
    store.release_run(released["id"], "host-a:1")
    assert store.claim_run(expired["id"], "host-a:1", SHORT)
    assert store.claim_run(live["id"], "host-a:1", LONG)
    store.save_run(finished(store.get_run(done["id"])))
    wait_until(lambda: expired["id"] in store.unleased_runs(), timeout=10, message="a short lease ends")
    assert store.unleased_runs() == [queued["id"], running["id"], released["id"], expired["id"]]  # oldest first
    # Created strictly before the released run: the two before it.
    assert store.unleased_runs(older_than=parse_time(released["created_at"])) == [queued["id"], running["id"]]
    assert store.unleased_runs(older_than=parse_time(queued["created_at"])) == []
    assert store.claim_run(queued["id"], "host-b:2", LONG)
    assert store.unleased_runs() == [running["id"], released["id"], expired["id"]]


# -- secrets: the store keeps ciphertext and times, nothing else ------------------------------------------


def test_a_secret_is_created_replaced_listed_and_deleted(backend, store):
    assert store.get_secret("SMTP") is None and store.list_secrets() == []
    assert store.put_secret("SMTP", "gAAAA-first") is True
    first = store.get_secret("SMTP")
    assert first["name"] == "SMTP" and first["ciphertext"] == "gAAAA-first"
    assert first["created_at"] == first["updated_at"] and first["created_at"].endswith("Z")
    wait_until(lambda: utcnow() > first["updated_at"], timeout=5, message="the clock moves past the first put")
    assert store.put_secret("SMTP", "gAAAA-second") is False  # replaced: created_at stays
    second = store.get_secret("SMTP")
    assert second["ciphertext"] == "gAAAA-second" and second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    store.put_secret("API_KEY", "gAAAA-other")
    assert [record["name"] for record in store.list_secrets()] == ["API_KEY", "SMTP"]
    if backend.durable:
        store = backend.reopen(store)
        assert store.get_secret("SMTP") == second
    assert store.delete_secret("SMTP") is True
    assert store.delete_secret("SMTP") is False
    assert store.get_secret("SMTP") is None
    assert [record["name"] for record in store.list_secrets()] == ["API_KEY"]


def test_concurrent_puts_of_secrets_lose_none(store):
    names = [f"S{n}" for n in range(20)]
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda name: store.put_secret(name, f"cipher-{name}"), names))
    assert created == [True] * len(names)
    assert {record["name"]: record["ciphertext"] for record in store.list_secrets()} == {
        name: f"cipher-{name}" for name in names}


# -- files: what runs need on any host (uploads, e-mail attachments; app/core/files.py) ---------------
KEY = "attachments/f1/form.pdf"
DATA = b"%PDF-1.4\n" + bytes(range(256)) * 64


def test_a_file_put_is_got_back_identical_also_by_another_store_on_the_same_place(backend):
    # A second PostgreSQL store on its own folder stands for another host.
    store = backend.open()
    store.put_file(KEY, DATA)
    store.put_file("attachments/f1/notes.txt", io.BytesIO(b"read from a stream"))
    other = backend.open() if backend.durable else store
    assert other.get_file(KEY) == DATA
    assert other.get_file("attachments/f1/notes.txt") == b"read from a stream"
    if store.local_files:  # memory and JSON: the store's file is the file under its root, not a copy
        assert (store.root / KEY).read_bytes() == DATA


def test_put_file_replaces_and_a_missing_file_is_not_found(store):
    store.put_file(KEY, b"first")
    store.put_file(KEY, b"second")
    assert store.get_file(KEY) == b"second"
    store.put_file("attachments/f1/empty", b"")
    assert store.get_file("attachments/f1/empty") == b""
    with pytest.raises(NotFound, match="attachments/f1/missing.pdf"):
        store.get_file("attachments/f1/missing.pdf")


@pytest.mark.parametrize("key", [
    "attachments/../runs/x.json", "../attachments/f1/a", "/etc/passwd", "attachments/f1/../../x", "attachments",
    "attachments/", "attachments//f1", "attachments/./f1", "runs/x.json", "attachments\\f1", "attachments/f1\0",
    "", None,
])
def test_a_key_that_is_not_a_relative_name_in_the_attachments_area_is_refused(store, key):
    for call in (lambda: store.put_file(key, b"x"), lambda: store.get_file(key), lambda: store.delete_files(key)):
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            call()


def test_delete_files_removes_a_folder_of_files_and_nothing_beside_it(store):
    for key in ("attachments/ab/1", "attachments/ab/2", "attachments/abc/1", "attachments/x/ab"):
        store.put_file(key, b"x")
    assert store.delete_files("attachments/ab") == 2
    assert store.delete_files("attachments/ab") == 0
    assert store.delete_files("attachments/x/ab") == 1
    for key in ("attachments/ab/1", "attachments/ab/2", "attachments/x/ab"):
        with pytest.raises(NotFound):
            store.get_file(key)
    assert store.get_file("attachments/abc/1") == b"x"


def test_prune_files_removes_files_stored_before_the_cutoff_only(store):
    store.put_file("attachments/old/a", b"old")
    # File times can be as coarse as a clock tick (~4 ms): leave a clear gap on both sides of the cutoff.
    cutoff = time.time() + 0.05
    wait_until(lambda: time.time() > cutoff, message="time passed")
    wait_until(lambda: time.time() > cutoff + 0.05, message="time passed")
    store.put_file("attachments/new/b", b"new")
    assert store.prune_files(cutoff - 3600) == 0
    assert store.prune_files(cutoff) == 1
    with pytest.raises(NotFound):
        store.get_file("attachments/old/a")
    assert store.get_file("attachments/new/b") == b"new"
    assert store.prune_files(time.time() + 3600) == 1
    with pytest.raises(NotFound):
        store.get_file("attachments/new/b")


def test_pruning_files_leaves_a_fresh_empty_folder_an_upload_is_about_to_fill(store):
    # An upload makes its folder, then writes its files: a prune in between must not take the folder.
    fresh = store.files_path("attachments", "being-uploaded")
    store.prune_files(time.time() - 3600)
    assert fresh.is_dir()
    store.put_file("attachments/being-uploaded/a.pdf", b"%PDF")
    assert store.get_file("attachments/being-uploaded/a.pdf") == b"%PDF"

# -- API tokens -------------------------------------------------------------------------
def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_a_token_is_stored_by_its_hash_and_found_by_it(store):
    record = store.add_token("ci", "operator", digest("secret-ci"))
    assert record == {"name": "ci", "role": "operator", "hash": digest("secret-ci"), "created": record["created"],
                      "last_used": None}
    assert parse_time(record["created"]) == pytest.approx(time.time(), abs=60)
    store.add_token("grafana", "viewer", digest("secret-grafana"))
    assert store.find_token(digest("secret-ci")) == record
    assert store.find_token(digest("secret-grafana"))["name"] == "grafana"
    assert store.find_token(digest("wrong")) is None
    assert store.get_token("ci") == record and store.get_token("nobody") is None
    assert [token["name"] for token in store.list_tokens()] == ["ci", "grafana"]


def test_a_token_name_is_taken_once(store):
    store.add_token("ci", "viewer", digest("one"))
    with pytest.raises(Conflict, match="a token named 'ci' exists"):
        store.add_token("ci", "admin", digest("two"))
    assert store.get_token("ci")["role"] == "viewer"


def test_touch_records_the_last_use_and_delete_forgets(store):
    store.add_token("ci", "operator", digest("secret-ci"))
    store.touch_token("ci", "2026-12-05T10:00:00.123Z")
    assert store.get_token("ci")["last_used"] == "2026-12-05T10:00:00.123Z"
    store.touch_token("nobody", "2026-12-05T10:00:00.123Z")  # gone meanwhile: nothing
    assert store.delete_token("ci") is True
    assert store.delete_token("ci") is False
    assert store.find_token(digest("secret-ci")) is None and store.list_tokens() == []


def test_tokens_survive_a_new_store_on_the_same_place(backend):
    store = backend.open()
    store.add_token("ci", "admin", digest("secret-ci"))
    reopened = backend.reopen(store)
    assert [token["name"] for token in reopened.list_tokens()] == (["ci"] if backend.durable else [])


# -- the audit log ----------------------------------------------------------------------
def test_audit_entries_are_chained_and_listed_newest_first(store):
    first = store.append_audit("admin", "token.create", "ci", {"role": "operator"})
    second = store.append_audit("ci", "run.cancel", "run_0abc", {})
    assert first == {"id": 1, "at": first["at"], "actor": "admin", "action": "token.create", "target": "ci",
                     "details": {"role": "operator"}, "prev": GENESIS, "hash": first["hash"]}
    assert second["id"] == 2 and second["prev"] == first["hash"]
    assert [first["hash"], second["hash"]] == [entry_hash(first), entry_hash(second)]
    assert store.list_audit() == ([second, first], None)
    assert list(store.audit_entries()) == [first, second]
    assert verify(store.audit_entries()) == (2, None)


def test_audit_pages_filter_and_neither_repeat_nor_skip(store):
    for n in range(7):
        store.append_audit(f"user{n % 2}", "run.cancel" if n % 3 else "workflow.start", f"t{n}", {"n": n})
    pages, cursor = [], None
    while True:
        page, cursor = store.list_audit(limit=3, before=cursor)
        pages.append([entry["id"] for entry in page])
        if cursor is None:
            break
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]
    assert [e["id"] for e in store.list_audit(actor="user0")[0]] == [7, 5, 3, 1]
    assert [e["id"] for e in store.list_audit(action="workflow.start")[0]] == [7, 4, 1]
    assert [e["id"] for e in store.list_audit(action="run.cancel", actor="user1", limit=1)[0]] == [6]
    assert store.list_audit(action="run.cancel", actor="user1", limit=1)[1] == 6
    assert [e["id"] for e in store.list_audit(target="t3")[0]] == [4]
    assert store.list_audit(target="nothing") == ([], None)
    with pytest.raises(ValueError, match="limit"):
        store.list_audit(limit=0)
    with pytest.raises(ValueError, match="actor"):
        store.append_audit("", "run.cancel", "x", {})


def test_concurrent_appends_from_two_stores_keep_one_chain(backend):
    stores = [backend.open(), backend.open()] if backend.durable else [backend.open()] * 2
    at_once(lambda n: stores[n % 2].append_audit(f"writer{n % 2}", "run.cancel", f"run_{n}", {"n": n}),
            list(range(16)))
    entries = list(stores[0].audit_entries())
    assert [entry["id"] for entry in entries] == list(range(1, 17))
    assert verify(entries) == (16, None)
    assert sorted(entry["details"]["n"] for entry in entries) == list(range(16))


def test_the_audit_log_survives_a_new_store(backend):
    store = backend.open()
    store.append_audit("admin", "token.delete", "ci", {})
    reopened = backend.reopen(store)
    appended = reopened.append_audit("admin", "token.create", "ci", {"role": "viewer"})
    if backend.durable:
        assert appended["id"] == 2 and verify(reopened.audit_entries()) == (2, None)
    else:
        assert appended["id"] == 1


# -- the step cache: entries by a sha256 key, expired by a time, pruned by maintenance -----------------
def cache_entry(key: str, expires_at: float, result: object = None, **fields) -> dict:
    return {"key": key, "workflow": "wf_a", "step": "fetch", "run_id": "run_00000000000000aa000001",
            "result": {"json": [1, "ü"], "n": None} if result is None else result,
            "created_at": expires_at - 60, "expires_at": expires_at, **fields}


CACHE_KEY = hashlib.sha256(b"one").hexdigest()
OTHER_KEY = hashlib.sha256(b"two").hexdigest()


def test_a_cache_entry_reads_back_until_it_expires(backend, store):
    now = time.time()
    assert store.get_cache(CACHE_KEY) is None
    entry = cache_entry(CACHE_KEY, now + 3600)
    store.put_cache(entry)
    assert store.get_cache(CACHE_KEY) == entry
    assert store.get_cache(CACHE_KEY, now=now + 3599) == entry
    assert store.get_cache(CACHE_KEY, now=now + 3600) is None  # expired at expires_at
    if backend.durable:
        store = backend.reopen(store)
        assert store.get_cache(CACHE_KEY) == entry


def test_a_cache_entry_is_replaced_whole(store):
    now = time.time()
    store.put_cache(cache_entry(CACHE_KEY, now + 10, {"old": True}))
    newer = cache_entry(CACHE_KEY, now + 100, {"new": True}, run_id="run_00000000000000bb000002")
    store.put_cache(newer)
    assert store.get_cache(CACHE_KEY) == newer


def test_pruning_the_cache_deletes_only_expired_entries(store):
    now = time.time()
    store.put_cache(cache_entry(CACHE_KEY, now - 1))
    store.put_cache(cache_entry(OTHER_KEY, now + 3600))
    assert store.prune_cache() == 1
    assert store.prune_cache() == 0
    assert store.get_cache(OTHER_KEY) is not None
    assert store.prune_cache(now=now + 3600) == 1
    assert store.get_cache(OTHER_KEY, now=now) is None


@pytest.mark.parametrize("key", ["", "../../etc/passwd", "ABC", "a" * 63, "g" * 64, None])
def test_a_cache_key_that_is_no_sha256_is_refused(store, key):
    with pytest.raises(ValueError, match="cache key"):
        store.get_cache(key)
    with pytest.raises(ValueError, match="cache key"):
        store.put_cache(cache_entry(key, time.time() + 60))


def test_a_cache_entry_without_its_fields_is_refused(store):
    entry = cache_entry(CACHE_KEY, time.time() + 60)
    del entry["run_id"]
    with pytest.raises(ValueError, match="missing run_id"):
        store.put_cache(entry)
