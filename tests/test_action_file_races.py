"""FileAction against a symlink swapped in between the path check and the write, move or delete (DESIGN section 10).

The race is made deterministic with a Python audit hook (tests/races.py): at a chosen call of the step, the
hook swaps a folder, or the file, of the checked path for a symlink pointing out of the root, as another
process could. PyFlow's code runs as it is. Whatever the moment, nothing outside the root may change.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actions.base import ActionError, RunContext
from actions.file import FileAction
from tests.races import MOMENTS, Swap, armed, snapshot, traced

REFUSED = (r"^file \w+: (path|destination) '[^']*': '{name}' became a symlink after the path was checked; a write, "
           r"move or delete never follows a symlink inside WORKFLOW_FILES_ROOT$")


def armed_step(tmp_path: Path, swap: Swap, **config) -> dict:
    """One file step, with ``swap`` armed while it runs."""
    action = FileAction("f", **config)
    action.context = RunContext(settings={}, storage_path=str(tmp_path))
    with armed(swap):
        return action.execute({})


@pytest.fixture
def layout(tmp_path):
    """The root with box/a.txt, box/sub/x, a.txt and src.txt; outside it, files of the same names."""
    root, outside = tmp_path / "files", tmp_path / "outside"
    for folder in (root, outside):
        (folder / "box" / "sub").mkdir(parents=True)
        (folder / "sub").mkdir()
        for name in ("box/a.txt", "box/sub/x", "a.txt", "sub/x"):
            (folder / name).write_text(f"{folder.name} {name}\n")
    (root / "src.txt").write_text("source\n")
    return root, outside


# A folder of the path swapped for a symlink to the folder outside.
FOLDER_CASES = {
    "write": {"operation": "write", "path": "box/a.txt", "content": "NEW\n"},
    "write-new-folder": {"operation": "write", "path": "box/new/n.txt", "content": "NEW\n"},
    "append": {"operation": "append", "path": "box/a.txt", "content": "NEW\n"},
    "copy": {"operation": "copy", "path": "src.txt", "destination": "box/a.txt"},
    "move-source": {"operation": "move", "path": "box/a.txt", "destination": "moved.txt"},
    "move-destination": {"operation": "move", "path": "src.txt", "destination": "box/a.txt"},
    "delete-file": {"operation": "delete", "path": "box/a.txt"},
    "delete-folder": {"operation": "delete", "path": "box/sub"},
}


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("case", FOLDER_CASES)
def test_a_folder_swapped_for_a_symlink_after_the_check_leads_nowhere_outside(tmp_path, layout, case, moment):
    root, outside = layout
    before = snapshot(outside)
    swap = Swap(tmp_path, root, "box", outside, moment)
    try:
        armed_step(tmp_path, swap, **FOLDER_CASES[case])
        refused = None
    except ActionError as error:
        refused = error
    assert swap.done, "the step made no file-system call to swap at"
    assert snapshot(outside) == before
    if moment == "first":
        # The walk from the root meets the link and stops: nothing is written, moved or deleted at all.
        assert refused is not None and not refused.retryable
        assert re.match(REFUSED.format(name="box"), str(refused)), str(refused)
    else:
        # The folder was open already: the step acts on it where it now lies, still inside the root.
        assert refused is None
        assert (root / "box").is_symlink()


def test_the_refusal_names_the_field_and_the_component(tmp_path, layout):
    root, outside = layout
    swap = Swap(tmp_path, root, "box", outside, "first")
    with pytest.raises(ActionError) as caught:
        armed_step(tmp_path, swap, operation="move", path="src.txt", destination="box/a.txt")
    assert str(caught.value) == ("file move: destination 'box/a.txt': 'box' became a symlink after the path was "
                                 "checked; a write, move or delete never follows a symlink inside WORKFLOW_FILES_ROOT")
    assert (root / "src.txt").read_text() == "source\n"


def test_a_write_lands_in_the_folder_it_checked_when_the_swap_comes_later(tmp_path, layout):
    root, outside = layout
    result = armed_step(tmp_path, Swap(tmp_path, root, "box", outside, "use"),
                        operation="write", path="box/a.txt", content="NEW\n")
    assert result == {"path": str(root / "box" / "a.txt")}
    assert (root / "box.old" / "a.txt").read_text() == "NEW\n"
    assert (outside / "box" / "a.txt").read_text() == "outside box/a.txt\n"
    assert [path.name for path in (root / "box.old").iterdir() if path.name.endswith(".tmp")] == []


# The file itself swapped for a symlink to the file outside: a step acts on the link, never through it.
FILE_CASES = {
    "write": {"operation": "write", "path": "a.txt", "content": "NEW\n"},
    "append": {"operation": "append", "path": "a.txt", "content": "NEW\n"},
    "copy": {"operation": "copy", "path": "src.txt", "destination": "a.txt"},
    "move-source": {"operation": "move", "path": "a.txt", "destination": "moved.txt"},
    "move-destination": {"operation": "move", "path": "src.txt", "destination": "a.txt"},
    "delete": {"operation": "delete", "path": "a.txt"},
}


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("case", FILE_CASES)
def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path, layout, case, moment):
    root, outside = layout
    before = snapshot(outside)
    swap = Swap(tmp_path, root, "a.txt", outside / "a.txt", moment)
    try:
        armed_step(tmp_path, swap, **FILE_CASES[case])
    except ActionError as error:
        assert re.match(REFUSED.format(name="a.txt"), str(error)), str(error)
    assert swap.done, "the step made no file-system call to swap at"
    assert snapshot(outside) == before
    if case in ("write", "copy", "move-destination"):
        assert not (root / "a.txt").is_symlink()  # the link was replaced, not written through


# -- list and glob: a folder swapped for a symlink to an outside folder right after the check -----------------------
LISTED = (r"^file (list|glob): path 'box': 'box' became a symlink after the path was checked; a list or glob never "
          r"follows a symlinked folder inside WORKFLOW_FILES_ROOT$")
# Each case: the step, and what it gives instead of the outside folder's names (None: refused, naming the folder).
LISTING_CASES = {
    "list": ({"operation": "list", "path": "box"}, None),
    "list-pattern": ({"operation": "list", "path": "box", "pattern": "*.txt"}, None),
    "glob-in-the-folder": ({"operation": "glob", "path": "box", "pattern": "**/*"}, None),
    "glob-naming-the-folder": ({"operation": "glob", "pattern": "box/*"}, []),
    "glob-through-the-folder": ({"operation": "glob", "pattern": "*/*"}, []),
    "glob-recursive": ({"operation": "glob", "pattern": "**/*.txt"}, ["a.txt"]),
}


@pytest.fixture
def listing(tmp_path):
    """The root with box/a.txt, box/sub/x and a.txt; outside it, secret names (one a link back into the root)."""
    root, outside = tmp_path / "files", tmp_path / "outside"
    (root / "box" / "sub").mkdir(parents=True)
    for name in ("box/a.txt", "box/sub/x", "a.txt"):
        (root / name).write_text(name)
    (outside / "secret-folder").mkdir(parents=True)
    (outside / "secret-1.txt").write_text("s")
    (outside / "secret-folder" / "secret-2.txt").write_text("s")
    # Resolves inside the root: a check of where each match leads, made after the walk, keeps its outside name.
    (outside / "secret-link.txt").symlink_to(root / "a.txt")
    return root, outside


@pytest.mark.parametrize("case", LISTING_CASES)
def test_a_list_or_glob_never_shows_a_name_outside_the_root(tmp_path, listing, case):
    root, outside = listing
    config, expected = LISTING_CASES[case]
    swap = Swap(tmp_path, root, "box", outside, "first")
    with traced() as trail:
        try:
            shown = armed_step(tmp_path, swap, **config)
        except ActionError as error:
            shown = error
    assert swap.done, "the step made no file-system call to swap at"
    assert "secret" not in str(shown)
    assert trail.reached(outside) == []  # nothing outside was even listed
    if expected is None:
        assert isinstance(shown, ActionError) and not shown.retryable
        assert re.match(LISTED, str(shown)), str(shown)
    else:
        assert shown == {"paths": expected}
