"""The file trigger: settled files fire once, move to processed, and survive restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actions.log import LogAction
from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.disks import tmpfs
from tests.fixtures import TRIGGER_WORKFLOWS, WORKFLOWS, wait_until
from triggers.base import TriggerError
from triggers.file import FileTrigger
from workflows.base import Workflow


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def inbox(tmp_path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def watcher(inbox: Path, clock: FakeClock, **options) -> FileTrigger:
    """A set-up trigger on ``inbox``, with WORKFLOW_FILES_ROOT the test's folder that holds it."""
    trigger = FileTrigger("drop", folder=str(inbox), clock=clock, **options)
    trigger.setup({"WORKFLOW_FILES_ROOT": str(inbox.parent)})
    return trigger


def drop(folder: Path, name: str, text: str = "hello") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def handle(trigger: FileTrigger) -> list[dict]:
    """Poll once and acknowledge every event, as the runtime does."""
    events = trigger.poll()
    for event in events:
        trigger.acknowledge(event, "run_1")
    return events


def test_a_dropped_file_fires_once_it_has_settled_and_then_moves_to_processed(inbox, clock):
    trigger = watcher(inbox, clock, settle_seconds=2)
    source = drop(inbox, "report.txt", "quarterly numbers")
    assert trigger.poll() == []  # just seen
    clock.now += 1.9
    assert trigger.poll() == []
    clock.now += 0.1
    [event] = trigger.poll()
    processed = inbox / "processed" / "report.txt"
    stat = source.stat()
    assert event == {
        "path": str(processed),
        "filename": "report.txt",
        "size": len("quarterly numbers"),
        "modified_at": event["modified_at"],
        "source_path": str(source),
    }
    assert event["modified_at"].endswith("Z")
    assert trigger.event_key(event) == f"file:{source}:{stat.st_size}:{event['modified_at']}"
    # The run may read the file at its processed path before the original is removed...
    assert processed.read_text(encoding="utf-8") == "quarterly numbers" and source.exists()
    trigger.acknowledge(event, "run_1")
    # ...and once its run is stored, the original is gone, so it never fires again.
    assert not source.exists() and processed.read_text(encoding="utf-8") == "quarterly numbers"
    clock.now += 10
    assert handle(trigger) == []
    assert trigger.state == {"pending": {}, "unmoved": {}}


def test_a_file_still_being_written_does_not_fire_until_it_stops_changing(inbox, clock):
    trigger = watcher(inbox, clock, settle_seconds=1)
    path = drop(inbox, "big.txt", "part 1")
    assert handle(trigger) == []
    for more in range(3):
        clock.now += 0.9
        with open(path, "a", encoding="utf-8") as handle_:
            handle_.write(f" part {more + 2}")
        assert handle(trigger) == []  # it changed since the last poll: wait again
    clock.now += 0.9
    assert handle(trigger) == []
    clock.now += 0.1
    [event] = handle(trigger)
    assert event["size"] == len("part 1 part 2 part 3 part 4")


def test_settle_seconds_zero_fires_at_first_sight(inbox, clock):
    trigger = watcher(inbox, clock, settle_seconds=0)
    drop(inbox, "now.txt")
    assert [event["filename"] for event in handle(trigger)] == ["now.txt"]


def test_only_matching_regular_files_fire_oldest_first(inbox, clock):
    trigger = watcher(inbox, clock, pattern="*.csv", settle_seconds=0)
    drop(inbox, "b.csv")
    os.utime(drop(inbox, "a.csv"), (1_000, 1_000))
    drop(inbox, "notes.txt")
    drop(inbox, ".partial.csv")  # hidden: a writer's temporary name
    (inbox / "folder.csv").mkdir()
    assert [event["filename"] for event in handle(trigger)] == ["a.csv", "b.csv"]


def test_a_name_taken_in_processed_gets_a_suffix(inbox, clock):
    trigger = watcher(inbox, clock, settle_seconds=0)
    (inbox / "processed").mkdir()
    drop(inbox / "processed", "data.txt", "old")
    drop(inbox, "data.txt", "new")
    [event] = handle(trigger)
    assert event["path"] == str(inbox / "processed" / "data-1.txt")
    assert (inbox / "processed" / "data.txt").read_text(encoding="utf-8") == "old"
    assert (inbox / "processed" / "data-1.txt").read_text(encoding="utf-8") == "new"


def test_a_symlink_to_the_file_under_its_name_in_processed_is_not_taken_for_it(inbox, clock):
    # The link was taken for the file placed already: the run got a path that dangled once the original went.
    trigger = watcher(inbox, clock, settle_seconds=0)
    (inbox / "processed").mkdir()
    (inbox / "processed" / "data.txt").symlink_to(inbox / "data.txt")
    drop(inbox, "data.txt", "new")
    [event] = handle(trigger)
    assert event["path"] == str(inbox / "processed" / "data-1.txt")
    assert Path(event["path"]).read_text(encoding="utf-8") == "new"


def test_a_custom_processed_folder_is_created(inbox, clock, tmp_path):
    trigger = watcher(inbox, clock, settle_seconds=0, processed_folder=str(tmp_path / "done" / "2026"))
    drop(inbox, "a.txt")
    [event] = handle(trigger)
    assert event["path"] == str(tmp_path / "done" / "2026" / "a.txt")
    assert os.listdir(inbox) == []


# -- restarts -------------------------------------------------------------------------------------------


def test_settling_continues_across_a_restart(inbox, clock):
    trigger = watcher(inbox, clock, settle_seconds=2)
    drop(inbox, "a.txt")
    assert handle(trigger) == []
    clock.now += 2
    restarted = watcher(inbox, clock, settle_seconds=2)
    restarted.state = trigger.state
    assert [event["filename"] for event in handle(restarted)] == ["a.txt"]


def test_a_restart_before_the_run_was_stored_polls_the_same_event_again(inbox, clock):
    trigger = watcher(inbox, clock, settle_seconds=0)
    drop(inbox, "a.txt")
    [first] = trigger.poll()  # the process dies here: no run stored, no acknowledge
    restarted = watcher(inbox, clock, settle_seconds=0)
    restarted.state = trigger.state
    [again] = restarted.poll()
    # Same key (the store answers with the first run, if it was stored) and same path: no a-1.txt.
    assert restarted.event_key(again) == trigger.event_key(first)
    assert again["path"] == first["path"]
    restarted.acknowledge(again, "run_1")
    assert os.listdir(inbox / "processed") == ["a.txt"]
    assert handle(restarted) == []


def test_a_file_replaced_under_its_name_before_the_run_was_stored_is_kept_and_fires(inbox, clock):
    # A scanner that always writes scan.pdf: a new scan replaced the one being handled while its run
    # was stored, and the acknowledgement removed the new scan, which never had a run.
    trigger = watcher(inbox, clock, settle_seconds=0)
    drop(inbox, "scan.txt", "first scan")
    [first] = trigger.poll()
    replacement = drop(inbox, ".scan.tmp", "second scan, longer")
    os.replace(replacement, inbox / "scan.txt")  # as writers replace a file: atomically
    trigger.acknowledge(first, "run_1")
    assert (inbox / "processed" / "scan.txt").read_text(encoding="utf-8") == "first scan"
    assert (inbox / "scan.txt").read_text(encoding="utf-8") == "second scan, longer"
    [second] = handle(trigger)
    assert Path(second["path"]).read_text(encoding="utf-8") == "second scan, longer"
    assert not (inbox / "scan.txt").exists()


def test_a_file_whose_original_cannot_be_removed_is_reported_once_and_not_fired_again(inbox, clock, monkeypatch):
    trigger = watcher(inbox, clock, settle_seconds=0)
    drop(inbox, "locked.txt")
    [event] = trigger.poll()

    def refuse(path, *, dir_fd=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(TriggerError, match=r"cannot remove .*locked.txt after its run run_1 was stored"):
        trigger.acknowledge(event, "run_1")
    assert trigger.poll() == []
    monkeypatch.undo()
    drop(inbox, "locked.txt", "a new file under that name")
    assert [event["filename"] for event in trigger.poll()] == ["locked.txt"]


# -- a processed folder on another file system -------------------------------------------------------


@pytest.fixture
def other_disk(tmp_path):
    """A 1 MB tmpfs beside the inbox: another file system, which can fill up."""
    with tmpfs(tmp_path / "other", "1m", "the cross-file-system tests") as mount:
        yield mount


def test_a_poll_repeated_before_the_run_was_stored_leaves_one_copy_on_another_file_system(inbox, clock, other_disk):
    # Linking fails across file systems, so the file is copied; polled again (the process died before the run
    # was stored, or the store failed), the copy already there was taken for another file's and a-1.txt was left.
    trigger = watcher(inbox, clock, settle_seconds=0, processed_folder=str(other_disk / "done"))
    drop(inbox, "a.txt", "the numbers")
    [first] = trigger.poll()  # no run stored, no acknowledge
    restarted = watcher(inbox, clock, settle_seconds=0, processed_folder=str(other_disk / "done"))
    restarted.state = trigger.state
    [again] = restarted.poll()
    assert again["path"] == first["path"] == str(other_disk / "done" / "a.txt")
    assert restarted.event_key(again) == trigger.event_key(first)
    restarted.acknowledge(again, "run_1")
    assert os.listdir(other_disk / "done") == ["a.txt"]
    assert (other_disk / "done" / "a.txt").read_text(encoding="utf-8") == "the numbers"
    assert os.listdir(inbox) == []


def test_another_file_under_a_taken_name_on_another_file_system_still_gets_a_suffix(inbox, clock, other_disk):
    trigger = watcher(inbox, clock, settle_seconds=0, processed_folder=str(other_disk))
    drop(other_disk, "data.txt", "old")
    drop(inbox, "data.txt", "new")
    [event] = handle(trigger)
    assert event["path"] == str(other_disk / "data-1.txt")
    assert (other_disk / "data.txt").read_text(encoding="utf-8") == "old"
    assert (other_disk / "data-1.txt").read_text(encoding="utf-8") == "new"


def test_a_copy_that_does_not_fit_is_an_error_and_leaves_no_partial_file(inbox, clock, other_disk):
    trigger = watcher(inbox, clock, settle_seconds=0, processed_folder=str(other_disk / "done"))
    source = drop(inbox, "big.bin", "x" * (2 * 1024 * 1024))  # twice the other disk's size
    for _ in range(3):  # each poll tries again; none may leave part of a copy behind
        with pytest.raises(TriggerError, match=rf"cannot place {source} in {other_disk / 'done'}: No space left"):
            trigger.poll()
        assert os.listdir(other_disk / "done") == []
    assert source.stat().st_size == 2 * 1024 * 1024  # the original is never lost
    source.write_text("smaller now", encoding="utf-8")
    [event] = handle(trigger)
    assert os.listdir(other_disk / "done") == ["big.bin"]
    assert Path(event["path"]).read_text(encoding="utf-8") == "smaller now"
    assert not source.exists()


# -- errors ---------------------------------------------------------------------------------------------


def test_a_missing_folder_is_an_error_naming_it(tmp_path, clock):
    trigger = watcher(tmp_path / "nowhere", clock)
    with pytest.raises(TriggerError, match=rf"folder {tmp_path / 'nowhere'} does not exist"):
        trigger.poll()


@pytest.mark.parametrize("options, message", [
    ({"settle_seconds": -1}, "settle_seconds must be 0 or more"),
    ({"settle_seconds": "soon"}, "settle_seconds must be a number of seconds"),
    ({"poll_interval": 0}, "poll_interval must be greater than 0"),
    ({"pattern": ""}, "pattern must be a file name pattern"),
    ({"pattern": "sub/*.txt"}, "pattern must be a file name pattern"),
    ({"folder": ""}, "folder must be a path"),
])
def test_bad_options_are_refused_naming_the_field(tmp_path, options, message):
    with pytest.raises(ValueError, match=rf"^trigger 'drop': {message}"):
        FileTrigger("drop", **{"folder": str(tmp_path), **options})


def test_the_processed_folder_must_differ_from_the_folder(tmp_path):
    with pytest.raises(ValueError, match="processed_folder must differ from folder"):
        FileTrigger("drop", folder=str(tmp_path), processed_folder=str(tmp_path)).setup(
            {"WORKFLOW_FILES_ROOT": str(tmp_path)})


# -- the files root -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"folder": "/etc"}, "folder"),
    ({"folder": "../outside"}, "folder"),
    ({"folder": "~"}, "folder"),
    ({"folder": "in\0box"}, "folder"),
    ({"folder": "inbox", "processed_folder": "/tmp"}, "processed_folder"),
    ({"folder": "inbox", "processed_folder": "inbox/../../outside"}, "processed_folder"),
])
def test_folders_outside_the_files_root_are_refused_naming_the_field(tmp_path, options, field):
    root = tmp_path / "files"
    trigger = FileTrigger("drop", **options)
    with pytest.raises(ValueError, match=rf"^trigger 'drop': {field} '.*' (is outside WORKFLOW_FILES_ROOT \({root}\)|"
                                         rf"contains a NUL byte)"):
        trigger.setup({"WORKFLOW_FILES_ROOT": str(root)})
    with pytest.raises(RuntimeError, match="setup"):  # never polled unchecked
        trigger.poll()


def test_the_default_root_is_files_in_the_storage_and_relative_folders_are_under_it(tmp_path):
    trigger = FileTrigger("drop", folder="inbox")
    trigger.setup({"WORKFLOW_STORAGE_PATH": str(tmp_path / "data")})
    assert trigger.folder == str(tmp_path / "data" / "files" / "inbox")
    assert trigger.processed_folder == str(tmp_path / "data" / "files" / "inbox" / "processed")
    with pytest.raises(ValueError, match=r"folder '/etc' is outside WORKFLOW_FILES_ROOT"):
        FileTrigger("drop", folder="/etc").setup({"WORKFLOW_STORAGE_PATH": str(tmp_path / "data")})


def test_a_symlink_inside_the_root_that_points_out_is_refused(tmp_path):
    root, secret = tmp_path / "files", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    (secret / "id_rsa").write_text("KEY", encoding="utf-8")
    (root / "inbox").symlink_to(secret)
    (root / "done").symlink_to(secret)
    with pytest.raises(ValueError, match=r"folder 'inbox' is outside WORKFLOW_FILES_ROOT"):
        FileTrigger("drop", folder="inbox").setup({"WORKFLOW_FILES_ROOT": str(root)})
    (root / "real").mkdir()
    with pytest.raises(ValueError, match=r"processed_folder 'done' is outside WORKFLOW_FILES_ROOT"):
        FileTrigger("drop", folder="real", processed_folder="done").setup({"WORKFLOW_FILES_ROOT": str(root)})
    assert (secret / "id_rsa").read_text(encoding="utf-8") == "KEY"


# -- through the app -------------------------------------------------------------------------------------


@pytest.fixture
def client(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                      "WORKFLOW_CLASSES": [*WORKFLOWS, *TRIGGER_WORKFLOWS]}))
    yield app.test_client()
    app.extensions["pyflow"].shutdown(timeout=2)


def test_a_started_file_workflow_runs_once_per_dropped_file(client, storage):
    inbox = storage / "files" / "inbox"
    assert client.post("/api/workflows/file_drop/start").status_code == 200
    # The folder does not exist yet: the workflow says so, and keeps trying.
    summary = wait_until(lambda: (client.get("/api/workflows/file_drop").get_json()["last_poll"] or {}).get("error"))
    assert summary.endswith(f"folder {inbox} does not exist; create it or fix the trigger's folder")
    inbox.mkdir(parents=True)
    drop(inbox, "hello.txt", "hello from a file")
    drop(inbox, "ignored.pdf")

    def finished():
        runs = client.get("/api/runs?workflow=file_drop").get_json()["runs"]
        return runs if runs and all(run["status"] == "succeeded" for run in runs) else None

    # Failed polls back off (0.05 s doubling), so the first run may take a moment.
    [run] = wait_until(finished, timeout=5, message="a run for hello.txt")
    assert run["trigger_data"]["filename"] == "hello.txt"
    assert run["source"] == "file", "a dropped file brought the event"
    assert run["steps"][0]["result"] == {"text": "hello from a file"}
    assert sorted(os.listdir(inbox)) == ["ignored.pdf", "processed"]
    assert os.listdir(inbox / "processed") == ["hello.txt"]
    client.post("/api/workflows/file_drop/stop")
    assert len(client.get("/api/runs?workflow=file_drop").get_json()["runs"]) == 1


def test_a_workflow_written_in_python_may_watch_any_folder_a_definition_may_not(tmp_path):
    """A Python workflow is trusted code (DESIGN section 10); a posted definition is confined to the root."""
    outside = tmp_path / "drop"
    outside.mkdir()

    class Watcher(Workflow):
        name = "watcher"
        trigger = FileTrigger("drop", folder=str(outside), settle_seconds=0)
        actions = [LogAction("log", message="{{ trigger_data.filename }}")]

    app = start_app(create_app(
        {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), "WORKFLOW_CLASSES": [Watcher]}
    ))
    try:
        client = app.test_client()
        drop(outside, "a.txt")
        [run] = client.post("/api/workflows/watcher/poll").get_json()["runs"]
        assert run["trigger_data"]["path"] == str(outside / "processed" / "a.txt")
        definition = {"name": "copycat", "trigger": {"type": "file", "folder": str(outside), "settle_seconds": 0},
                      "steps": [{"name": "log", "type": "log", "config": {"message": "x"}}]}
        assert client.post("/api/workflows", json=definition).status_code in (201, 422)
        refused = client.post("/api/workflows/copycat/poll")
        assert refused.status_code in (404, 409)
        if refused.status_code == 409:
            assert f"folder '{outside}' is outside WORKFLOW_FILES_ROOT" in refused.get_json()["error"]["message"]
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
