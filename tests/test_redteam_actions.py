"""Red-team findings on actions and triggers (DESIGN section 10): what a posted definition or a run's inputs
could make a step do to the host, each now refused. The attacks run against the real actions and servers."""

from __future__ import annotations

import os
import threading

import pytest

import actions.file as file_module
from actions.base import ActionError, RunContext
from actions.file import FileAction


def file_step(tmp_path, **config) -> dict:
    """One file step with WORKFLOW_FILES_ROOT's default, ``<tmp_path>/files``."""
    action = FileAction("f", **config)
    action.context = RunContext(settings={}, storage_path=str(tmp_path))
    return action.execute({})


# -- file: a FIFO inside the root held a read (and the step's thread) for ever ---------------------------------
@pytest.mark.parametrize("operation", ["read", "copy", "append"])
def test_a_fifo_in_the_files_root_is_refused_not_read_for_ever(tmp_path, operation):
    root = tmp_path / "files"
    root.mkdir()
    os.mkfifo(root / "pipe")  # anyone who may drop files in the root (a shared inbox) can make one
    config = {"destination": "copy.txt"} if operation == "copy" else {"content": "x"} if operation == "append" else {}
    outcome: dict = {}

    def attempt() -> None:
        try:
            outcome["result"] = file_step(tmp_path, operation=operation, path="pipe", **config)
        except Exception as error:  # noqa: BLE001 (the outcome is asserted below)
            outcome["error"] = error

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # the old behaviour: free the thread (a writer's end of file) before failing
        os.close(os.open(root / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=30)
        pytest.fail(f"file {operation} of a FIFO blocked until a writer came")
    error = outcome.get("error")
    assert isinstance(error, ActionError), outcome
    assert str(error) == f"file {operation}: 'pipe' is a FIFO; only regular files can be read"
    assert not error.retryable


# -- file: a folder swapped for a symlink between the path check and the open -----------------------------------
def test_a_symlink_swapped_in_after_the_check_does_not_lead_out(tmp_path, monkeypatch):
    root, outside = tmp_path / "files", tmp_path / "outside"
    (root / "box").mkdir(parents=True)
    (root / "box" / "a.txt").write_text("harmless")
    outside.mkdir()
    (outside / "a.txt").write_text("TOP SECRET")
    checked = file_module.inside

    def check_then_swap(*args, **kwargs):
        # The real check passes; then the attacker (a local user of a shared root) swaps the folder for a link.
        path = checked(*args, **kwargs)
        if (root / "box").is_dir() and not (root / "box").is_symlink():
            os.rename(root / "box", root / "box.old")
            (root / "box").symlink_to(outside)
        return path

    monkeypatch.setattr(file_module, "inside", check_then_swap)
    with pytest.raises(ActionError, match=r"^file read: 'box/a.txt' led outside WORKFLOW_FILES_ROOT \(.*\) when "
                                          r"opened \(a symlink changed after the check\)$") as caught:
        file_step(tmp_path, operation="read", path="box/a.txt")
    assert "TOP SECRET" not in str(caught.value)
    assert not caught.value.retryable


def test_a_file_read_stays_bounded_and_a_copy_is_streamed(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.bin").write_bytes(b"\x00" * 1000)
    os.chmod(root / "a.bin", 0o640)
    assert file_step(tmp_path, operation="copy", path="a.bin", destination="b.bin") == {"path": str(root / "b.bin")}
    assert (root / "b.bin").read_bytes() == b"\x00" * 1000
    assert (root / "b.bin").stat().st_mode & 0o777 == 0o640


# -- file: glob patterns with several '**' walked the tree once per '**' nested in the one before -----------------
def test_a_glob_with_more_than_one_recursive_wildcard_is_refused(tmp_path):
    # Thirty nested folders a definition can make with one write; "**/" * 10 over them ran for ever.
    file_step(tmp_path, operation="write", path="/".join(["a"] * 30) + "/x", content="")
    with pytest.raises(ActionError, match=r"^file glob: pattern '\*\*/\*\*/x' has more than one '\*\*'") as caught:
        file_step(tmp_path, operation="glob", pattern="**/**/x")
    assert not caught.value.retryable
    assert file_step(tmp_path, operation="glob", pattern="**/x") == {"paths": ["/".join(["a"] * 30) + "/x"]}
