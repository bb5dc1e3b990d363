"""FileTrigger against a symlink swapped in between setup()'s folder check and a listing, link, move or delete.

DESIGN section 10: a definition's file trigger touches nothing outside WORKFLOW_FILES_ROOT. The race is
made deterministic with a Python audit hook (tests/races.py): at a chosen call of a poll or of the
acknowledgement that removes the original, the hook swaps the watched folder, the processed folder or
the file for a symlink pointing out of the root, as another process could. PyFlow's code runs as it is.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.disks import tmpfs
from tests.races import MOMENTS, Swap, armed, snapshot
from triggers.base import TriggerError
from triggers.file import FileTrigger

REFUSED = (r"^trigger 'drop': (folder 'inbox'|processed_folder 'done(/new)?'): '{name}' became a symlink after the "
           r"folder was checked; the trigger never follows a symlink to list, link, move or delete files")


@pytest.fixture
def layout(tmp_path):
    """The root with inbox/a.txt and done/; outside it, inbox/a.txt, done/a.txt and secret.txt."""
    root, outside = tmp_path / "files", tmp_path / "outside"
    for folder in (root, outside):
        (folder / "inbox").mkdir(parents=True)
        (folder / "done").mkdir()
        (folder / "inbox" / "a.txt").write_text(f"{folder.name} inbox/a.txt\n")
    (outside / "done" / "a.txt").write_text("outside done/a.txt\n")
    (outside / "secret.txt").write_text("outside secret\n")
    return root, outside


def watcher(root: Path, processed: str = "done") -> FileTrigger:
    trigger = FileTrigger("drop", folder="inbox", processed_folder=processed, pattern="*.txt", settle_seconds=0,
                          clock=lambda: 1_000_000.0)
    trigger.setup({"WORKFLOW_FILES_ROOT": str(root)})
    return trigger


def regular_files(folder: Path) -> dict[str, bytes]:
    """Every regular file below ``folder`` and its bytes; a symlink is not followed."""
    found = {}
    for where, _, names in os.walk(folder):
        for name in names:
            path = Path(where) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(folder))] = path.read_bytes()
    return found


def handled(trigger: FileTrigger, swap: Swap, phase: str) -> tuple[list[dict], list[TriggerError]]:
    """Poll once and acknowledge every event, as the runtime does, with ``swap`` armed during ``phase``."""
    refused: list[TriggerError] = []
    events: list[dict] = []
    try:
        if phase == "poll":
            with armed(swap):
                events = trigger.poll()
        else:
            events = trigger.poll()
        for event in events:
            if phase == "acknowledge":
                with armed(swap):
                    trigger.acknowledge(event, "run_1")
            else:
                trigger.acknowledge(event, "run_1")
    except TriggerError as error:
        refused.append(error)
    return events, refused


def nothing_outside_touched(root: Path, outside: Path, before: dict) -> None:
    """Outside unchanged, and no file's bytes from outside linked or copied into the root."""
    assert snapshot(outside) == before
    leaked = {name: data for name, data in regular_files(root).items() if data.startswith(b"outside")}
    assert leaked == {}


# (phase armed, folder swapped, processed_folder): done/new is made by the poll.
FOLDER_CASES = {
    "poll-watched-folder": ("poll", "inbox", "done"),
    "poll-processed-folder": ("poll", "done", "done"),
    "poll-processed-folder-made": ("poll", "done", "done/new"),
    "acknowledge-watched-folder": ("acknowledge", "inbox", "done"),
}


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("case", FOLDER_CASES)
def test_a_folder_swapped_for_a_symlink_after_the_check_leads_nowhere_outside(tmp_path, layout, case, moment):
    root, outside = layout
    phase, name, processed = FOLDER_CASES[case]
    trigger = watcher(root, processed)
    before = snapshot(outside)
    swap = Swap(tmp_path, root, name, outside / name, moment)
    events, refused = handled(trigger, swap, phase)
    assert swap.done, "the trigger made no file-system call to swap at"
    nothing_outside_touched(root, outside, before)
    # The dropped file is never lost: left where it was, or placed in the processed folder.
    assert b"files inbox/a.txt\n" in regular_files(root).values()
    if moment == "first":
        # The walk from the root meets the link and stops: nothing is listed, linked, made or removed there.
        [error] = refused
        assert re.match(REFUSED.format(name=name), str(error)), str(error)
        original = root / ("inbox.old" if name == "inbox" else "inbox") / "a.txt"
        assert original.read_text() == "files inbox/a.txt\n"
        if phase == "acknowledge":
            assert str(error).endswith("; 'inbox/a.txt' stays (its run run_1 is stored, and it will not start "
                                       "another)")
            assert trigger.state["unmoved"] == {"a.txt": trigger.event_key(events[0])}
        else:
            assert events == [] and regular_files(root / f"{name}.old" if name == "done" else root / "done") == {}


def test_the_refusal_names_the_field_and_the_folder_relative_to_the_root(tmp_path, layout):
    root, outside = layout
    trigger = watcher(root, "done/new")
    with armed(Swap(tmp_path, root, "done", outside / "done", "first")), pytest.raises(TriggerError) as caught:
        trigger.poll()
    assert str(caught.value) == ("trigger 'drop': processed_folder 'done/new': 'done' became a symlink after the "
                                 "folder was checked; the trigger never follows a symlink to list, link, move or "
                                 "delete files")
    assert not (outside / "done" / "new").exists()


@pytest.fixture(params=["same file system", "another file system"])
def processed(request, layout):
    """The processed folder: beside the inbox, or on a tmpfs mounted inside the root (the copy path)."""
    root, _ = layout
    if request.param == "same file system":
        yield "done"
    else:
        with tmpfs(root / "other", "1m", "the cross-file-system race tests"):
            yield "other/done"


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_file_swapped_for_a_symlink_after_the_listing_is_not_followed(tmp_path, layout, processed, moment, caplog):
    root, outside = layout
    trigger = watcher(root, processed)
    before = snapshot(outside)
    swap = Swap(tmp_path, root, "inbox/a.txt", outside / "secret.txt", moment)
    with caplog.at_level(logging.WARNING, logger="triggers.file"):
        events, refused = handled(trigger, swap, "poll")
    assert swap.done, "the trigger made no file-system call to swap at"
    nothing_outside_touched(root, outside, before)
    assert (events, refused) == ([], [])
    # Neither the file it points to nor the link itself is placed; the link stays, and never fires.
    assert os.readlink(root / "inbox" / "a.txt") == str(outside / "secret.txt")
    assert snapshot(root / processed) == {}
    assert trigger.poll() == [] and trigger.state["pending"] == {}
    if moment == "use":  # listed as a regular file, a symlink when placed: said so
        assert "trigger 'drop': folder 'inbox': 'inbox/a.txt' is no longer a regular file" in caplog.text


def test_a_refused_poll_is_logged_naming_the_workflow_the_field_and_the_folder(tmp_path, caplog):
    storage = tmp_path / "data"
    root, outside = storage / "files", tmp_path / "outside"
    (root / "inbox").mkdir(parents=True)
    (root / "inbox" / "a.txt").write_text("files inbox/a.txt\n")
    (outside / "inbox").mkdir(parents=True)
    (outside / "inbox" / "a.txt").write_text("outside inbox/a.txt\n")
    before = snapshot(outside)
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage)}))
    try:
        client = app.test_client()
        definition = {"name": "dropbox", "trigger": {"type": "file", "folder": "inbox",
                                                     "settle_seconds": 0},
                      "steps": [{"name": "log", "type": "log", "config": {"message": "x"}}]}
        assert client.post("/api/workflows", json=definition).status_code == 201
        # Only calls inside the root count: the store's own files are written in the same thread.
        with caplog.at_level(logging.WARNING), armed(Swap(root, root, "inbox", outside / "inbox", "first")) as swap:
            answer = client.post("/api/workflows/dropbox/poll")
        assert swap.done
        assert answer.status_code == 502, answer.get_json()
        message = ("trigger 'dropbox': folder 'inbox': 'inbox' became a symlink after the folder was checked; the "
                   "trigger never follows a symlink to list, link, move or delete files")
        assert message in answer.get_json()["error"]["message"]
        assert re.search(rf"polling dropbox failed \(1 in a row, .*\): {re.escape(message)}", caplog.text)
        assert client.get("/api/runs?workflow=dropbox").get_json()["runs"] == []
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
    assert snapshot(outside) == before
    assert (root / "inbox.old" / "a.txt").read_text() == "files inbox/a.txt\n"
