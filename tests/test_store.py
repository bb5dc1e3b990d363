"""Tests of the store interface (MemoryStore and JsonStore) and of JsonStore's durability."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from app.errors import NotFound, StorageError
from app.runs import format_time, new_run, new_step
from app.storage.base import Durability
from app.storage.json.files import Mutex
from app.storage.json.index import INDEX_FIELDS, RunIndex
from app.storage.json.store import FLUSH_DELAY, JsonStore
from app.storage.json.wal import WriteAheadLog
from app.storage.memory import MemoryStore
from tests.fixtures import wait_until

ROOT = Path(__file__).resolve().parents[1]


def make_run(workflow: str = "wf", steps: int = 2, **fields) -> dict:
    run = new_run(workflow, [new_step(f"s{n}", "noop") for n in range(steps)], {"n": 1}, "api")
    run.update(fields)
    return run


def done_step(name: str, result: object = None) -> dict:
    return {**new_step(name, "noop"), "status": "succeeded", "attempts": 1, "result": result}


def finished(run: dict, status: str = "succeeded", at: float | None = None) -> dict:
    return {**run, "status": status, "finished_at": format_time(time.time() if at is None else at), "progress": 100}


def all_runs(store, **filters) -> list[dict]:
    """Every run, page by page."""
    runs, cursor = store.list_runs(limit=7, **filters)
    while cursor:
        page, cursor = store.list_runs(limit=7, before=cursor, **filters)
        runs += page
    return runs


def run_child(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A Python process running ``code`` with the project importable."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, text=True, **kwargs)


@pytest.fixture(params=["memory", "json"])
def store(request, tmp_path):
    return MemoryStore(tmp_path) if request.param == "memory" else JsonStore(tmp_path / "data")


@pytest.fixture
def json_store(tmp_path):
    return JsonStore(tmp_path / "data")


# -- the interface, for both stores ---------------------------------------------
def test_create_and_get(store):
    run = make_run()
    assert store.create_run(run) == (run, True)
    assert store.get_run(run["id"]) == run
    assert store.get_run("run_unknown") is None


def test_update_run_merges_fields(store):
    run = make_run()
    store.create_run(run)
    store.update_run(run["id"], {"status": "running", "started_at": "2026-01-01T10:00:00.000Z"})
    store.update_run(run["id"], {"progress": 50}, mode=Durability.WRITTEN)
    assert store.get_run(run["id"]) == {
        **run,
        "status": "running",
        "started_at": "2026-01-01T10:00:00.000Z",
        "progress": 50,
    }
    assert [found["id"] for found in store.list_runs(status="running")[0]] == [run["id"]]


def test_update_step_keeps_the_last_record(store):
    run = make_run(steps=3)
    store.create_run(run)
    for attempt in range(1, 4):
        store.update_step(run["id"], 1, {**done_step("s1"), "attempts": attempt},
                          mode=Durability.SYNC if attempt % 2 == 0 else Durability.WRITTEN)
    store.update_step(run["id"], 2, done_step("s2", {"text": "ünïcode"}))
    steps = store.get_run(run["id"])["steps"]
    assert steps == [run["steps"][0], {**done_step("s1"), "attempts": 3}, done_step("s2", {"text": "ünïcode"})]


def test_save_run_replaces_the_record(store):
    run = make_run()
    store.create_run(run)
    store.update_step(run["id"], 0, done_step("s0"))
    store.update_run(run["id"], {"status": "running"})
    final = finished({**run, "steps": [done_step("s0"), done_step("s1")]})
    store.save_run(final)
    assert store.get_run(run["id"]) == final
    store.update_run(run["id"], {"error": "late"})  # changes after a save still count
    assert store.get_run(run["id"]) == {**final, "error": "late"}
    assert store.find_run_ids({"succeeded"}) == [run["id"]]


def test_list_runs_newest_first_with_filters_and_cursor(store):
    runs = [make_run("a" if n % 3 else "b") for n in range(10)]
    for run in runs:
        store.create_run(run)
    store.update_run(runs[4]["id"], {"status": "running"})
    newest_first = sorted((run["id"] for run in runs), reverse=True)  # ids sort by creation time

    page, cursor = store.list_runs(limit=4)
    assert [run["id"] for run in page] == newest_first[:4] and cursor == newest_first[3]
    page, cursor = store.list_runs(limit=4, before=cursor)
    assert [run["id"] for run in page] == newest_first[4:8] and cursor == newest_first[7]
    page, cursor = store.list_runs(limit=4, before=cursor)
    assert [run["id"] for run in page] == newest_first[8:] and cursor is None
    assert store.list_runs(limit=10) == (store.list_runs()[0], None)

    assert [run["id"] for run in all_runs(store)] == newest_first
    assert [run["id"] for run in all_runs(store, workflow="b")] == sorted(
        (run["id"] for run in runs if run["workflow"] == "b"), reverse=True
    )
    assert [run["id"] for run in all_runs(store, status="running")] == [runs[4]["id"]]
    assert all_runs(store, workflow="a", status="failed") == []


def test_idempotency_key(store):
    first = make_run("a")
    assert store.create_run(first, "key-1") == (first, True)
    assert store.create_run(make_run("a"), "key-1") == (first, False)
    other_workflow, other_key = make_run("b"), make_run("a")
    assert store.create_run(other_workflow, "key-1") == (other_workflow, True)
    assert store.create_run(other_key, "key-2") == (other_key, True)
    assert len(all_runs(store)) == 3


def test_find_run_ids_oldest_first(store):
    runs = [make_run() for _ in range(5)]
    for run in runs:
        store.create_run(run)
    for run in runs[1:4]:
        store.update_run(run["id"], {"status": "running"})
    store.update_run(runs[2]["id"], {"status": "paused"})
    assert store.find_run_ids({"running", "paused"}) == sorted(run["id"] for run in runs[1:4])
    assert store.find_run_ids({"running"}) == sorted([runs[1]["id"], runs[3]["id"]])
    assert store.find_run_ids({"failed"}) == []


def test_prune_deletes_old_finished_runs(store):
    now = time.time()
    old_done, old_failed, new_done, old_running = (make_run() for _ in range(4))
    for run in (old_done, old_failed, new_done, old_running):
        store.create_run(run, f"key-{run['id']}")
    store.save_run(finished(old_done, at=now - 100))
    store.save_run(finished(old_failed, "failed", at=now - 100))
    store.save_run(finished(new_done, at=now))
    store.update_run(old_running["id"], {"status": "running"})

    assert store.prune(now - 10) == 2
    assert store.get_run(old_done["id"]) is None and store.get_run(old_failed["id"]) is None
    assert {run["id"] for run in all_runs(store)} == {new_done["id"], old_running["id"]}
    # The key of a pruned run is free again; the others still hold.
    again = make_run()
    assert store.create_run(again, f"key-{old_done['id']}") == (again, True)
    assert store.create_run(make_run(), f"key-{new_done['id']}")[1] is False
    assert store.prune(now - 10) == 0


def test_trigger_state(store):
    assert store.load_trigger_state("mail") == {}
    store.save_trigger_state("mail", {"last_uid": 41, "seen": ["a"]})
    store.save_trigger_state("poll", {"etag": "x"})
    store.save_trigger_state("mail", {"last_uid": 42, "seen": ["a", "b"]})
    assert store.load_trigger_state("mail") == {"last_uid": 42, "seen": ["a", "b"]}
    assert store.load_trigger_state("poll") == {"etag": "x"}


def test_started_workflows(store):
    assert store.started_workflows() == set()
    store.set_started("a", True)
    store.set_started("b", True)
    store.set_started("a", True)
    store.set_started("a", False)
    store.set_started("c", False)
    assert store.started_workflows() == {"b"}


def test_files_path(store):
    path = store.files_path("attachments", "run_1")
    assert path.is_dir() and path == store.root / "attachments" / "run_1"


# -- JsonStore: the files --------------------------------------------------------
def test_state_survives_a_new_instance(json_store):
    run = make_run()
    json_store.create_run(run, "key")
    json_store.update_step(run["id"], 0, done_step("s0"))
    json_store.save_trigger_state("wf", {"cursor": 3})
    json_store.set_started("wf", True)
    again = JsonStore(json_store.root)
    assert again.get_run(run["id"]) == {**run, "steps": [done_step("s0"), run["steps"][1]]}
    assert again.create_run(make_run(), "key")[1] is False
    assert again.load_trigger_state("wf") == {"cursor": 3}
    assert again.started_workflows() == {"wf"}


def test_a_run_is_one_journal_and_each_change_one_line(json_store):
    run = make_run(steps=50)
    json_store.create_run(run)
    snapshot = json_store.root / "runs" / f"{run['id']}.json"
    journal = snapshot.with_suffix(".journal")
    assert [json.loads(line) for line in journal.read_text().splitlines()] == [{"seq": 1, "run": run}]
    for index in range(50):
        json_store.update_step(run["id"], index, done_step(f"s{index}"),
                                  mode=Durability.SYNC if index % 2 == 0 else Durability.WRITTEN)
    assert not snapshot.exists()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 52))
    # Line 1000 costs what line 2 did: each is one record, never the run.
    assert max(len(line) for line in journal.read_bytes().splitlines()[1:]) < 300

    final = finished({**run, "steps": [done_step(f"s{n}") for n in range(50)]})
    json_store.save_run(final)  # one more line: the whole record
    assert json.loads(journal.read_text().splitlines()[-1])["seq"] == 52
    assert json_store.get_run(run["id"]) == final
    assert json_store.compact() == 1  # the maintenance job folds it into the snapshot
    assert not journal.exists()
    assert json.loads(snapshot.read_text()) == {"seq": 52, "run": final}
    assert json_store.get_run(run["id"]) == final


def test_prune_removes_the_files_of_pruned_runs(json_store):
    old, new = make_run(), make_run()
    for run in (old, new):
        json_store.create_run(run, f"key-{run['id']}")
        json_store.update_step(run["id"], 0, done_step("s0"))
        json_store.update_run(run["id"], {"status": "succeeded", "finished_at": format_time(time.time() - 100)})
    json_store.update_run(new["id"], {"finished_at": format_time(time.time())})
    assert json_store.prune(time.time() - 10) == 1
    root = json_store.root
    assert sorted(path.name for path in (root / "runs").iterdir()) == [f"{new['id']}.journal"]
    assert [json.loads(path.read_text())["run_id"] for path in (root / "keys").iterdir()] == [new["id"]]
    assert [json.loads(line)["id"] for line in (root / "index.jsonl").read_text().splitlines()] == [new["id"]]


def test_torn_last_journal_line_is_ignored_and_cut(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_step(run["id"], 0, done_step("s0"))
    journal = json_store.root / "runs" / f"{run['id']}.journal"
    with journal.open("ab") as file:
        file.write(b'{"seq":3,"step":1,"record":{"name":"s1","sta')  # a crash mid-write
    expected = {**run, "steps": [done_step("s0"), run["steps"][1]]}
    assert JsonStore(json_store.root).get_run(run["id"]) == expected

    json_store.flush(run["id"])  # lets go of the run, as a crashed process would
    other = JsonStore(json_store.root)  # another process: it must read the journal before appending
    other.update_step(run["id"], 1, done_step("s1"))
    assert other.get_run(run["id"]) == {**run, "steps": [done_step("s0"), done_step("s1")]}
    assert [json.loads(line)["seq"] for line in journal.read_text().splitlines()] == [1, 2, 3]


CHILD_APPENDS = """
import sys
from app.runs import new_step
from app.storage.json.store import JsonStore

store = JsonStore(sys.argv[1])
print("ready", flush=True)
store.update_step(sys.argv[2], 1, {**new_step("s1", "noop"), "status": "succeeded"})
print("appended", flush=True)
"""


def test_another_process_waits_for_the_run_this_one_holds(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_step(run["id"], 0, done_step("s0"))  # this process keeps the run's journal, locked
    child = run_child(CHILD_APPENDS, str(json_store.root), run["id"], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "ready"
        # An absence, which no event marks: the child gets half a second to append where it must not.
        time.sleep(0.5)
        assert child.poll() is None, "the other process appended to a run this one holds"
        assert [line["seq"] for line in journal_lines(json_store, run["id"])] == [1, 2]
        json_store.flush(run["id"])  # lets go of it (as a paused or finished run does)
        assert child.stdout.readline().strip() == "appended"
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    json_store.update_run(run["id"], {"status": "running"})  # reads what the other process appended first
    assert [line["seq"] for line in journal_lines(json_store, run["id"])] == [1, 2, 3, 4]
    stored = json_store.get_run(run["id"])
    assert [step["status"] for step in stored["steps"]] == ["succeeded", "succeeded"]
    assert stored["status"] == "running"


def test_prune_removes_what_a_killed_process_left_behind(json_store):
    run = make_run()
    json_store.create_run(run)
    runs = json_store.root / "runs"
    hour_ago = time.time() - 2 * 3600
    litter = [runs / "run_0000000000000001abcdef.journal", runs / ".run_x.json.1234.tmp", json_store.root / ".w.tmp"]
    for path in litter:
        path.write_bytes(b"" if path.suffix == ".journal" else b'{"half')  # killed between create and write
        os.utime(path, (hour_ago, hour_ago))
    os.utime(runs / f"{run['id']}.journal", (hour_ago, hour_ago))  # old, but written: a run
    fresh_empty = runs / "run_0000000000000002abcdef.journal"  # a creation under way right now
    fresh_empty.write_bytes(b"")
    json_store.prune(time.time() - 86400)
    assert not any(path.exists() for path in litter)
    assert fresh_empty.exists()
    assert json_store.get_run(run["id"]) == run  # a written journal stays, whatever its age
    assert [listed["id"] for listed in json_store.list_runs()[0]] == [run["id"]]


def test_runs_past_the_open_journals_limit_are_let_go_and_reopened(json_store):
    runs = [make_run() for _ in range(40)]  # more than the journals this process keeps open (and locked)
    for run in runs:
        json_store.create_run(run)
        json_store.update_run(run["id"], {"status": "running"})
    oldest, newest = runs[0]["id"], runs[-1]["id"]
    other = JsonStore(json_store.root)
    other.update_step(oldest, 0, done_step("s0"))  # let go of: no wait
    with pytest.raises(StorageError, match="another process has held it"):
        other._files.open(newest, create=False, wait=0.2)  # still held by json_store
    other.close()
    json_store.update_step(oldest, 1, done_step("s1"))  # reopened, and it reads what the other wrote first
    assert [line["seq"] for line in journal_lines(json_store, oldest)] == [1, 2, 3, 4]
    assert [step["status"] for step in json_store.get_run(oldest)["steps"]] == ["succeeded", "succeeded"]


def test_a_withdrawn_index_line_is_neither_listed_nor_written(tmp_path):
    index = RunIndex(tmp_path / "index.jsonl", Mutex(tmp_path / "index.lock"))
    kept, failed = make_run(), make_run()
    for run in (kept, failed):
        index.append({"id": run["id"], **{field: run.get(field) for field in INDEX_FIELDS}}, defer=True)
    index.withdraw(failed["id"])  # its creation failed after the line was deferred
    assert index.ids == [kept["id"]]
    index.flush()
    assert [json.loads(line)["id"] for line in (tmp_path / "index.jsonl").read_text().splitlines()] == [kept["id"]]
    index.close()


def test_stale_journal_after_a_snapshot_is_harmless(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_step(run["id"], 0, done_step("s0", "old"))
    json_store.update_run(run["id"], {"status": "running"})
    journal = json_store.root / "runs" / f"{run['id']}.journal"
    kept = journal.read_bytes()
    final = finished({**run, "steps": [done_step("s0", "new"), done_step("s1")]})
    json_store.save_run(final)
    json_store.compact()
    journal.write_bytes(kept)  # as if compaction died between writing the snapshot and removing the journal

    fresh = JsonStore(json_store.root)
    assert fresh.get_run(run["id"]) == final
    fresh.update_run(run["id"], {"error": "later"})
    assert JsonStore(json_store.root).get_run(run["id"]) == {**final, "error": "later"}
    assert [json.loads(line)["seq"] for line in journal.read_text().splitlines()] == [1, 2, 3, 5]


def test_unknown_or_bad_run_ids(json_store):
    with pytest.raises(NotFound):
        json_store.update_step("run_missing", 0, done_step("s0"))
    with pytest.raises(NotFound):
        json_store.update_run("run_missing", {"status": "running"})
    assert not list((json_store.root / "runs").iterdir())  # no journal left for a run that does not exist
    assert json_store.get_run("../../etc/passwd") is None
    with pytest.raises(ValueError, match="run id"):
        json_store.create_run(make_run(id="../escape"))
    with pytest.raises(ValueError, match="workflow"):
        json_store.save_trigger_state("../escape", {})
    with pytest.raises(ValueError, match="limit"):
        json_store.list_runs(limit=0)


def test_another_instance_sees_new_runs_and_compaction(json_store):
    reader = JsonStore(json_store.root)
    assert reader.list_runs() == ([], None)  # index loaded (empty) before the writer writes
    runs = [make_run() for _ in range(5)]
    for run in runs:
        json_store.create_run(run)
    json_store.save_run(finished(runs[0], at=time.time() - 100))
    # Index lines are deferred: another process lists them within FLUSH_DELAY.
    wait_until(lambda: len(reader.list_runs()[0]) == 5, timeout=10 * FLUSH_DELAY, message="5 runs listed")
    assert reader.find_run_ids({"succeeded"}) == [runs[0]["id"]]
    assert json_store.prune(time.time() - 10) == 1  # rewrites the index under the reader
    assert {run["id"] for run in reader.list_runs()[0]} == {run["id"] for run in runs[1:]}
    extra = make_run()
    json_store.create_run(extra)
    json_store.flush()  # at once
    assert reader.list_runs(limit=1)[0][0]["id"] == extra["id"]


def test_index_is_compacted_at_load(json_store):
    runs = [make_run() for _ in range(10)]
    for run in runs:
        json_store.create_run(run)
        for status in ["running", "paused"] * 8:
            json_store.update_run(run["id"], {"status": status}, mode=Durability.WRITTEN)
    index = json_store.root / "index.jsonl"
    assert len(index.read_text().splitlines()) == 10 * 17
    assert JsonStore(json_store.root).find_run_ids({"paused"}) == sorted(run["id"] for run in runs)
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    assert [line["id"] for line in lines] == sorted(run["id"] for run in runs)
    assert {line["status"] for line in lines} == {"paused"}


def test_many_threads_update_runs(json_store):
    own = [make_run(steps=20) for _ in range(6)]
    shared = make_run(steps=40)
    for run in [*own, shared]:
        json_store.create_run(run)

    def work(number: int) -> None:
        for index in range(20):
            json_store.update_step(own[number]["id"], index, done_step(f"s{index}", number),
                                  mode=Durability.SYNC if index % 5 == 0 else Durability.WRITTEN)
            json_store.update_step(shared["id"], number * 5 + index % 5, done_step("x", [number, index]),
                                  mode=Durability.WRITTEN)
        json_store.update_run(own[number]["id"], {"status": "running"})

    threads = [threading.Thread(target=work, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fresh = JsonStore(json_store.root)
    for number, run in enumerate(own):
        assert fresh.get_run(run["id"])["steps"] == [done_step(f"s{index}", number) for index in range(20)]
    steps = fresh.get_run(shared["id"])["steps"]
    for number in range(6):
        assert [steps[number * 5 + k]["result"] for k in range(5)] == [[number, 15 + k] for k in range(5)]
    assert fresh.find_run_ids({"running"}) == sorted(run["id"] for run in own)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_no_data_file_stays_open(json_store):
    """Only lock files, the index, the write-ahead log and a bounded few journals of unfinished runs stay open."""
    for _ in range(20):
        run = make_run()
        json_store.create_run(run, run["id"])
        json_store.update_step(run["id"], 0, done_step("s0"), mode=Durability.WRITTEN)
        json_store.update_run(run["id"], {"status": "running"})
        json_store.list_runs()
    json_store.save_run(finished(run))
    json_store.prune(time.time() + 10)
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    mine = [target for target in targets if target.startswith(str(json_store.root))]
    journals = [target for target in mine if target.endswith(".journal")]
    assert mine and all(target.endswith((".lock", ".journal", ".wal", "/index.jsonl")) for target in mine)
    assert len(journals) <= 32 and not any(run["id"] in target for target in journals)


CHILD_CREATES = """
import sys
from app.runs import new_run
from app.storage.json.store import JsonStore

store = JsonStore(sys.argv[1])
store.list_runs(limit=1)  # load the index before the other process writes
print("ready", flush=True)
sys.stdin.readline()
for n in range(40):
    run = new_run("wf", [], {"n": n}, sys.argv[2])
    store.create_run(run)
    store.update_run(run["id"], {"status": "running"})
    store.save_run({**run, "status": "succeeded", "finished_at": run["created_at"]})
for n in range(10):
    store.create_run(new_run("wf", [], {"n": n}, sys.argv[2]), f"shared-{n}")
store.set_started(sys.argv[2], True)
store.flush()  # the deferred index lines: the other process lists what this one made
print("done", flush=True)
sys.stdin.readline()
ids, cursor = [], None
while True:
    page, cursor = store.list_runs(limit=30, before=cursor)
    ids += [run["id"] for run in page]
    if cursor is None:
        break
print(len(ids), len(set(ids)), flush=True)
"""


def test_two_processes_create_runs_at_once(json_store):
    children = [
        run_child(CHILD_CREATES, str(json_store.root), name, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for name in ("one", "two")
    ]
    try:
        for expected in ("ready", "done"):
            for child in children:
                assert child.stdout.readline().strip() == expected
            for child in children:
                child.stdin.write("go\n")
                child.stdin.flush()
        counts = [child.stdout.readline().split() for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
            child.stdin.close()
            child.stdout.close()
    assert counts == [["90", "90"], ["90", "90"]]  # 2 x 40 runs + 10 runs for 10 keys shared by both
    runs = all_runs(json_store)
    assert len(runs) == 90
    assert len(json_store.find_run_ids({"succeeded"})) == 80
    assert json_store.started_workflows() == {"one", "two"}


CHILD_LOOPS = """
import random, sys
from app.runs import new_run, new_step
from app.storage.base import Durability
from app.storage.json.store import JsonStore

store = JsonStore(sys.argv[1])
print("ready", flush=True)
for n in range(100_000):
    run = new_run("wf", [new_step(f"s{k}", "noop") for k in range(3)], {"n": n}, "api")
    store.create_run(run, f"key-{sys.argv[2]}-{n}" if n % 3 == 0 else None)
    print("created", run["id"], flush=True)
    for k in range(3):
        step = {**new_step(f"s{k}", "noop"), "status": "succeeded", "result": "x" * random.randrange(5000)}
        store.update_step(run["id"], k, step, mode=Durability.SYNC if k != 1 else Durability.WRITTEN)
        print("step", run["id"], k, flush=True)
    if n % 2:
        store.save_run({**store.get_run(run["id"]), "status": "succeeded", "finished_at": run["created_at"]})
        print("saved", run["id"], flush=True)
    else:
        store.update_run(run["id"], {"status": "running"}, mode=Durability.WRITTEN)
"""


@pytest.mark.slow  # child processes killed at random moments, twice
def test_kill_9_loses_nothing_reported(json_store, tmp_path):
    for round_ in range(2):  # the second round starts on what the first kill left
        out = tmp_path / f"out{round_}.txt"
        with out.open("w") as stdout:
            child = run_child(CHILD_LOOPS, str(json_store.root), str(round_), stdout=stdout)
            wait_until(out.read_text, timeout=30, interval=0.01, message="the child ready")  # imports take a while
            time.sleep(random.uniform(0.2, 0.6))  # the behaviour under test: a kill at any moment of its work
            child.send_signal(signal.SIGKILL)
            child.wait()
        lines = out.read_text().split("\n")[1:-1]  # after "ready"; the last piece may be cut mid-line
        assert lines, "the child reported nothing before it was killed"

        store = JsonStore(json_store.root)
        listed = {run["id"]: run for run in all_runs(store)}
        for kind, run_id, *rest in (line.split() for line in lines):
            run = store.get_run(run_id)
            assert run is not None and run_id in listed
            if kind == "step":
                assert run["steps"][int(rest[0])]["status"] == "succeeded"
            elif kind == "saved":
                assert run["status"] == "succeeded"
        for path in (json_store.root / "runs").glob("*.j*"):
            run = store.get_run(path.stem)  # None only for a journal the kill cut before its first line
            assert run is None or run["id"] == path.stem


CHILD_COMMITS = """
import sys
from app.runs import new_run, new_step
from app.storage.json.store import JsonStore

store = JsonStore(sys.argv[1])
run = new_run("wf", [new_step(f"s{k}", "noop") for k in range(3)], {}, "api")
store.create_run(run, "the-key")
for k in range(3):
    store.update_step(run["id"], k, {**new_step(f"s{k}", "noop"), "status": "succeeded", "result": k})
print(run["id"], flush=True)
sys.stdin.readline()  # killed here, its write-ahead log still on disk
"""


def commit_and_die(root: Path) -> str:
    """Id of a 3-step run a child process committed before it was killed."""
    child = run_child(CHILD_COMMITS, str(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        return child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()


def test_a_power_loss_loses_no_committed_change(json_store):
    """What a crash of the machine may lose (unsynced journal tails, index lines) the write-ahead log restores."""
    run_id = commit_and_die(json_store.root)
    assert run_id and len(list((json_store.root / "wal").glob("*.wal"))) == 1
    journal = json_store.root / "runs" / f"{run_id}.journal"
    first_line = journal.read_bytes().split(b"\n")[0]
    # As if the power went out: the journal keeps its creation line and half of the next; the index is gone.
    journal.write_bytes(first_line + b'\n{"seq":2,"step":0,"rec')
    (json_store.root / "index.jsonl").unlink(missing_ok=True)  # its lines were deferred: it may not exist

    store = JsonStore(json_store.root)
    run = store.get_run(run_id)
    assert [(step["status"], step["result"]) for step in run["steps"]] == [("succeeded", k) for k in range(3)]
    assert [listed["id"] for listed in all_runs(store)] == [run_id]
    assert store.create_run(make_run(), "the-key") == (run, False)  # the key still finds its run
    assert not list((json_store.root / "wal").glob("*.wal"))  # replayed once, then removed
    assert [json.loads(line)["seq"] for line in journal.read_text().splitlines()] == [1, 2, 3, 4]


def test_a_power_loss_that_spares_the_journals_still_restores_the_index(json_store):
    run_id = commit_and_die(json_store.root)
    (json_store.root / "index.jsonl").unlink(missing_ok=True)  # its lines were deferred: it may not exist
    store = JsonStore(json_store.root)
    assert [listed["id"] for listed in all_runs(store)] == [run_id]
    assert store.create_run(make_run(), "the-key")[0]["id"] == run_id


CHILD_CHECKPOINTS = """
import sys, time
import app.storage.json.store
from app.runs import new_run
from app.storage.json.store import JsonStore

app.storage.json.store._WAL_LIMIT = 0  # every durable write checkpoints (in the background)
app.storage.json.store.FLUSH_DELAY = 3600  # and no timer writes the deferred index lines: only the checkpoint may
store = JsonStore(sys.argv[1])
runs = [new_run("wf", [], {"n": n}, "api") for n in range(3)]
for run in runs:
    store.create_run(run)
    while any(store.root.joinpath("wal").glob("*.wal")):  # until its checkpoint is done
        time.sleep(0.01)
print(" ".join(run["id"] for run in runs), flush=True)
sys.stdin.readline()  # killed here: the log is gone, the deferred index lines were written or are lost
"""


def test_a_checkpoint_writes_the_deferred_index_lines_before_it_drops_the_log(json_store):
    child = run_child(CHILD_CHECKPOINTS, str(json_store.root), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        run_ids = child.stdout.readline().split()
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert len(run_ids) == 3
    store = JsonStore(json_store.root)  # no log left to replay: the index alone must know the runs
    assert sorted(run["id"] for run in all_runs(store)) == sorted(run_ids)
    assert store.find_run_ids({"queued"}) == sorted(run_ids)  # what start-up recovery reads


def test_a_rotation_waits_for_what_follows_a_write(tmp_path):
    wal = WriteAheadLog(tmp_path / "wal")
    inside, release = threading.Event(), threading.Event()

    def then():
        inside.set()
        release.wait(5)

    writer = threading.Thread(target=wal.write, args=(b'{"seq":1}\n', "run_a", then))
    writer.start()
    assert inside.wait(5)
    rotated = []
    rotator = threading.Thread(target=lambda: rotated.append(wal.rotate()))
    rotator.start()
    rotator.join(0.3)
    assert not rotated, "the segment was rotated while the write's follow-up ran"
    release.set()
    writer.join(5)
    rotator.join(5)
    assert rotated[0].keys == {"run_a"}
    WriteAheadLog.drop(rotated[0])


def test_a_power_loss_that_took_a_whole_new_journal_restores_it(json_store):
    run_id = commit_and_die(json_store.root)
    (json_store.root / "runs" / f"{run_id}.journal").unlink()  # its directory entry was never synced
    store = JsonStore(json_store.root)
    run = store.get_run(run_id)
    assert [(step["status"], step["result"]) for step in run["steps"]] == [("succeeded", k) for k in range(3)]
    assert [listed["id"] for listed in all_runs(store)] == [run_id]


def test_a_live_process_log_is_left_alone_and_dropped_at_close(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_step(run["id"], 0, done_step("s0"))
    logs = list((json_store.root / "wal").glob("*.wal"))
    assert len(logs) == 1
    other = JsonStore(json_store.root)  # its owner holds the log's lock: not replayed, not removed
    assert list((json_store.root / "wal").glob("*.wal")) == logs
    json_store.close()  # journals fsync'd, the log dropped
    assert not list((json_store.root / "wal").glob("*.wal"))
    assert other.get_run(run["id"]) == {**run, "steps": [done_step("s0"), run["steps"][1]]}


def wal_bytes(folder) -> int:
    """The write-ahead log's size on disk; a segment a checkpoint drops between listing and reading counts 0."""
    total = 0
    for path in folder.glob("*.wal"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_a_full_write_ahead_log_is_checkpointed_in_the_background(json_store, monkeypatch):
    monkeypatch.setattr("app.storage.json.store._WAL_LIMIT", 4096)
    runs = [make_run() for _ in range(30)]
    for run in runs:
        json_store.create_run(run)
        json_store.update_step(run["id"], 0, done_step("s0", "x" * 200))
    wait_until(lambda: wal_bytes(json_store.root / "wal") <= 8192,
               timeout=60, interval=0.01, message="the write-ahead log checkpointed")
    fresh = JsonStore(json_store.root)
    assert [fresh.get_run(run["id"])["steps"][0] for run in runs] == [done_step("s0", "x" * 200)] * 30


def test_logs_survive_compaction_once_each(json_store):
    run = make_run()
    json_store.create_run(run)
    entries = [{"at": format_time(time.time()), "level": "info", "step": None, "message": f"line {n}"}
               for n in range(3)]
    json_store.append_log(run["id"], entries[0])
    json_store.update_step(run["id"], 0, done_step("s0"))
    json_store.append_log(run["id"], entries[1])
    assert json_store.get_logs(run["id"]) == entries[:2]
    journal = json_store.root / "runs" / f"{run['id']}.journal"
    json_store.save_run(finished(run))
    kept = journal.read_bytes()
    assert json_store.compact() == 1
    assert json_store.get_logs(run["id"]) == entries[:2]
    journal.write_bytes(kept)  # as if compaction died before removing the journal
    assert JsonStore(json_store.root).get_logs(run["id"]) == entries[:2]
    json_store.append_log(run["id"], entries[2])
    assert json_store.compact() == 1
    assert json_store.get_logs(run["id"]) == entries


# -- JsonStore: failures of the file system --------------------------------------
def journal_lines(store: JsonStore, run_id: str) -> list[dict]:
    path = store.root / "runs" / f"{run_id}.journal"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deferred_changes_are_read_at_once_and_written_with_the_next_change(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_run(run["id"], {"status": "running"}, mode=Durability.DEFERRED)
    json_store.update_step(run["id"], 0, {**done_step("s0"), "status": "running"}, mode=Durability.DEFERRED)
    json_store.append_log(run["id"], {"message": "started"}, mode=Durability.DEFERRED)
    assert json_store.get_run(run["id"])["status"] == "running"
    assert json_store.get_run(run["id"])["steps"][0]["status"] == "running"
    assert json_store.get_logs(run["id"]) == [{"message": "started"}]
    assert json_store.list_runs(status="running")[0][0]["id"] == run["id"]
    assert [line["seq"] for line in journal_lines(json_store, run["id"])] == [1]  # nothing written yet

    json_store.update_step(run["id"], 0, done_step("s0"))
    lines = journal_lines(json_store, run["id"])
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]  # one write, in the order they were made
    assert [next(key for key in ("run", "fields", "step", "log") if key in line) for line in lines] == [
        "run", "fields", "step", "log", "step"]
    assert JsonStore(json_store.root).get_run(run["id"]) == {**run, "status": "running", "steps": [
        done_step("s0"), run["steps"][1]]}
    assert json_store.get_logs(run["id"]) == [{"message": "started"}]  # once, though now in the file too


def test_deferred_changes_reach_the_file_within_the_flush_delay(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_step(run["id"], 1, done_step("s1"), mode=Durability.DEFERRED)
    other = JsonStore(json_store.root)
    assert other.get_run(run["id"])["steps"][1]["status"] == "pending"
    wait_until(lambda: other.get_run(run["id"])["steps"][1]["status"] != "pending", timeout=5,
               message="the deferred step written")
    assert other.get_run(run["id"])["steps"][1] == done_step("s1")
    assert [line["seq"] for line in journal_lines(json_store, run["id"])] == [1, 2]


def test_a_deferred_index_line_reaches_the_file_within_the_flush_delay(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.flush()  # its index line
    json_store.flush(run["id"])  # and the run itself, which another process may then change
    writer = JsonStore(json_store.root)  # knows no seq of the run: its change is written at once
    writer.update_run(run["id"], {"status": "running"}, mode=Durability.DEFERRED)
    deadline = time.monotonic() + 5
    while json_store.find_run_ids({"running"}) != [run["id"]] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert json_store.find_run_ids({"running"}) == [run["id"]]


def test_close_writes_deferred_changes(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_run(run["id"], {"status": "running"}, mode=Durability.DEFERRED)
    json_store.append_log(run["id"], {"message": "last words"}, mode=Durability.DEFERRED)
    json_store.close()
    fresh = JsonStore(json_store.root)
    assert fresh.get_run(run["id"])["status"] == "running"
    assert fresh.find_run_ids({"running"}) == [run["id"]]
    assert fresh.get_logs(run["id"]) == [{"message": "last words"}]


def test_folder_that_cannot_be_written_gives_storage_error(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.save_trigger_state("wf", {"cursor": 1})
    runs = json_store.root / "runs"
    moved = runs.with_name("runs.moved")
    runs.rename(moved)
    runs.write_text("a file where a folder should be")
    new = make_run()
    not_a_folder = rf"cannot write {runs / new['id']}\.(json|journal): \[Errno 20\] Not a directory"
    with pytest.raises(StorageError, match=not_a_folder):
        json_store.create_run(new)
    # Another process (this one keeps the journals of its executing runs open) cannot even start.
    with pytest.raises(StorageError, match=rf"cannot create {runs}: "):
        JsonStore(json_store.root).update_step(run["id"], 0, done_step("s0"))
    with pytest.raises(StorageError, match="cannot create"):
        JsonStore(runs)  # a file
    runs.unlink()
    moved.rename(runs)
    assert json_store.get_run(run["id"]) == run
    assert [found["id"] for found in json_store.list_runs()[0]] == [run["id"]]


def test_read_only_folder_gives_storage_error(json_store):
    triggers = json_store.root / "triggers"
    json_store.save_trigger_state("wf", {"cursor": 1})
    triggers.chmod(0o555)
    try:
        if os.access(triggers, os.W_OK):
            pytest.skip("running as root: a read-only mode does not stop writes")
        with pytest.raises(StorageError, match=rf"cannot write {triggers / 'wf.json'}: \[Errno 13\]"):
            json_store.save_trigger_state("wf", {"cursor": 2})
    finally:
        triggers.chmod(0o755)
    assert json_store.load_trigger_state("wf") == {"cursor": 1}


CHILD_DISK_FULL = """
import json, resource, sys
from app.errors import StorageError
from app.runs import new_run, new_step
from app.storage.json.store import JsonStore

store = JsonStore(sys.argv[1])
run = json.loads(sys.argv[2])
big = "x" * 5000
# Python ignores SIGXFSZ, so a write past the limit fails with EFBIG as on a full disk.
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
calls = {
    "trigger": lambda: store.save_trigger_state("wf", {"cursor": 2, "pad": big}),
    "step": lambda: store.update_step(run["id"], 0, {**new_step("s0", "noop"), "result": big}),
    "save": lambda: store.save_run({**run, "status": "succeeded", "error": big}),
    "create": lambda: store.create_run(new_run("wf", [], {"pad": big}, "api")),
}
errors = {}
for name, call in calls.items():
    try:
        call()
        errors[name] = None
    except StorageError as exc:
        errors[name] = exc.message
print(json.dumps(errors))
"""


def test_full_disk_gives_storage_error_and_keeps_what_was_stored(json_store):
    run = make_run()
    json_store.create_run(run)
    json_store.update_step(run["id"], 1, done_step("s1"))
    json_store.save_trigger_state("wf", {"cursor": 1})
    json_store.flush(run["id"])  # lets go of the run: the child may append to it
    stored = json_store.get_run(run["id"])
    files = {path: path.read_bytes() for path in json_store.root.rglob("*") if path.parent.name in ("runs", "triggers")}

    child = run_child(CHILD_DISK_FULL, str(json_store.root), json.dumps(run), stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    errors = json.loads(out)
    runs = json_store.root / "runs"
    assert errors["trigger"].startswith(f"cannot write {json_store.root / 'triggers' / 'wf.json'}: [Errno 27]")
    assert errors["step"].startswith(f"cannot write {runs / run['id']}.journal: [Errno 27] File too large")
    assert errors["save"].startswith(f"cannot write {runs / run['id']}.journal: [Errno 27]")
    assert errors["create"].startswith(f"cannot write {runs}/run_")

    # Nothing stored before was lost or changed, and no half-written file is left.
    after = {path: path.read_bytes() for path in json_store.root.rglob("*") if path.parent.name in ("runs", "triggers")}
    assert after == files
    fresh = JsonStore(json_store.root)
    assert fresh.get_run(run["id"]) == stored
    assert fresh.load_trigger_state("wf") == {"cursor": 1}
    fresh.update_step(run["id"], 0, done_step("s0"))
    assert fresh.get_run(run["id"])["steps"] == [done_step("s0"), done_step("s1")]


# -- JsonStore: cost ------------------------------------------------------------------
def test_listing_50_of_100k_runs_reads_only_those(json_store):
    # 100,000 older runs that exist only in the index (writing their files would take minutes);
    # listing the newest 50 must not look at them.
    start = (time.time_ns() // 1000) - 10**9
    lines = (
        f'{{"id":"run_{start + n:016x}000000","workflow":"old","status":"succeeded",'
        f'"created_at":"2026-01-01T00:00:00.000Z","finished_at":"2026-01-01T00:00:01.000Z"}}\n'
        for n in range(100_000)
    )
    (json_store.root / "index.jsonl").write_text("".join(lines))
    newest = [make_run() for _ in range(60)]
    for run in newest:
        json_store.create_run(run)
    json_store.flush()  # their index lines, else written within FLUSH_DELAY: the reader below must see them

    store = JsonStore(json_store.root)
    # The older runs have no files: a listing that opened them would fail. Its speed: bench/core.py (listing).
    page, cursor = store.list_runs(limit=50)
    assert [run["id"] for run in page] == sorted((run["id"] for run in newest), reverse=True)[:50]
    assert cursor == page[-1]["id"]


def test_durable_update_step_costs_one_journal_line_and_one_logged_line(json_store):
    # Its cost against a bare fsynced append is measured in bench/core.py (durable step).
    run = make_run(steps=1)
    json_store.create_run(run)
    step = done_step("s0", {"text": "x" * 200})
    journal = json_store.root / "runs" / f"{run['id']}.journal"

    def lines() -> tuple[int, int]:
        logged = sum(len(path.read_bytes().splitlines()) for path in (json_store.root / "wal").glob("*.wal"))
        return len(journal.read_bytes().splitlines()), logged

    json_store.update_step(run["id"], 0, step)
    before = lines()
    for _ in range(100):
        json_store.update_step(run["id"], 0, step)
    assert lines() == (before[0] + 100, before[1] + 100)  # appends, whatever the run's size: nothing rewritten


# -- file modes: the store is the owner's only --------------------------------
@pytest.fixture
def open_umask():
    """The most permissive umask: modes must not depend on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_every_file_is_0600_and_every_folder_0700(tmp_path, open_umask):
    from io import BytesIO

    from werkzeug.datastructures import FileStorage

    from app.api.uploads import save_uploads

    store = JsonStore(tmp_path / "data")
    run = make_run()
    store.create_run(run, idempotency_key="k-1")
    store.update_step(run["id"], 0, done_step("s0", {"x": 1}))
    store.append_log(run["id"], {"at": "2026-01-01T00:00:00.000Z", "level": "info", "step": None, "message": "hi"})
    store.save_run(finished(run))
    store.compact()
    store.save_trigger_state("wf", {"cursor": 1})
    store.set_started("wf", True)
    store.save_definition("wf", {"name": "wf", "steps": []})
    save_uploads([FileStorage(BytesIO(b"data"), filename="a.txt")], store.files_path("attachments"))
    store.flush()
    store.close()
    modes = {path.relative_to(tmp_path): path.stat().st_mode & 0o777 for path in (tmp_path / "data").rglob("*")}
    assert modes  # runs, keys, locks, index, triggers, definitions, attachments
    wrong = {str(path): oct(mode) for path, mode in modes.items()
             if mode != (0o700 if (tmp_path / path).is_dir() else 0o600)}
    assert wrong == {}
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


def test_an_existing_storage_root_is_made_private(tmp_path):
    root = tmp_path / "data"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    JsonStore(root).close()
    assert root.stat().st_mode & 0o777 == 0o700


# -- leases on the JSON store (the contract is in test_store_contract.py) ------------------------
def test_a_lease_is_a_file_that_release_and_prune_remove(json_store):
    run = make_run(status="running")
    json_store.create_run(run)
    lease = json_store.root / "leases" / f"{run['id']}.json"
    assert json_store.claim_run(run["id"], "host-a:1", 60)
    assert json.loads(lease.read_text())["owner"] == "host-a:1"
    assert oct(lease.stat().st_mode & 0o777) == "0o600"
    json_store.release_run(run["id"], "host-a:1")
    assert not lease.exists()
    assert json_store.claim_run(run["id"], "host-a:1", 60)
    json_store.save_run(finished(json_store.get_run(run["id"]), at=time.time() - 100))
    assert json_store.prune(time.time() - 10) == 1
    assert not lease.exists()


def test_the_lease_of_a_killed_process_is_taken_over_once_it_ends(json_store):
    run = make_run(status="running")
    json_store.create_run(run)
    json_store.flush(run["id"])  # handed over to the worker process
    with run_child("""
        import sys
        from app.storage.json.store import JsonStore
        store = JsonStore(sys.argv[1])
        print(store.claim_run(sys.argv[2], "child:1", 3), flush=True)
        sys.stdin.read()
    """, str(json_store.root), run["id"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout.readline().strip() == "True"
            assert json_store.claim_run(run["id"], "parent:2", 60) is False  # a live lease of another process
            assert json_store.get_run(run["id"])["worker"] == "child:1"
        finally:
            child.kill()  # kill -9: its journal's lock goes with it, its lease file stays until it ends
    wait_until(lambda: json_store.claim_run(run["id"], "parent:2", 60), timeout=15)
    assert json_store.get_run(run["id"])["worker"] == "parent:2"
    assert json_store.expired_leases(now=time.time() + 3600) == [run["id"]]


def test_format_time_writes_each_second_as_datetime_does_whatever_came_before():
    from datetime import UTC, datetime

    # Times in and out of order, across second boundaries, and rounding up into the next second:
    # the text of the second format_time keeps from its last call must never leak into another.
    base = 1_764_900_000.0
    epochs = [base + 0.25, base + 1.5, base + 0.75, base + 0.9996, base + 1.0004, base - 86_400.5, base + 0.9994]
    for epoch in epochs + epochs[::-1]:
        expected = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert format_time(epoch) == expected
