"""FileAction: every operation, inside its sandbox folder."""

from __future__ import annotations

import base64

import pytest

from actions import walk
from actions.base import ActionError, RunContext
from actions.file import FileAction


@pytest.fixture
def root(tmp_path):
    """The sandbox: WORKFLOW_FILES_ROOT's default, <storage>/files."""
    return tmp_path / "files"


def run(tmp_path, settings=None, **config) -> dict:
    action = FileAction("f", **config)
    action.context = RunContext(settings=settings or {}, storage_path=str(tmp_path))
    return action.execute({})


def test_write_then_read(tmp_path, root):
    written = run(tmp_path, operation="write", path="reports/a.txt", content="héllo\n")
    assert written == {"path": str(root / "reports" / "a.txt")}
    assert (root / "reports" / "a.txt").stat().st_mode & 0o777 == 0o644
    assert run(tmp_path, operation="read", path="reports/a.txt") == {
        "content": "héllo\n", "path": str(root / "reports" / "a.txt"), "size": 7}
    assert [p.name for p in (root / "reports").iterdir()] == ["a.txt"]  # no temporary file left


def test_write_json_and_append(tmp_path, root):
    run(tmp_path, operation="write", path="data.json", content={"a": [1]})
    assert (root / "data.json").read_text() == '{\n  "a": [\n    1\n  ]\n}\n'
    run(tmp_path, operation="write", path="log.txt", content="one\n")
    run(tmp_path, operation="append", path="log.txt", content="two\n")
    run(tmp_path, operation="append", path="new.txt", content="first\n")
    assert (root / "log.txt").read_text() == "one\ntwo\n"
    assert (root / "new.txt").read_text() == "first\n"


def test_base64_round_trip(tmp_path, root):
    data = bytes(range(256))
    run(tmp_path, operation="write", path="blob.bin", content=base64.b64encode(data).decode(), encoding="base64")
    assert (root / "blob.bin").read_bytes() == data
    assert base64.b64decode(run(tmp_path, operation="read", path="blob.bin", encoding="base64")["content"]) == data
    with pytest.raises(ActionError, match="encoding: base64"):
        run(tmp_path, operation="read", path="blob.bin")


def test_copy_and_move(tmp_path, root):
    run(tmp_path, operation="write", path="a.txt", content="A")
    (root / "archive").mkdir()
    assert run(tmp_path, operation="copy", path="a.txt", destination="b.txt") == {"path": str(root / "b.txt")}
    assert run(tmp_path, operation="move", path="b.txt", destination="archive") == {
        "path": str(root / "archive" / "b.txt")}
    assert (root / "a.txt").read_text() == (root / "archive" / "b.txt").read_text() == "A"
    assert not (root / "b.txt").exists()


def test_delete(tmp_path, root):
    run(tmp_path, operation="write", path="d/x.txt", content="x")
    assert run(tmp_path, operation="delete", path="d/x.txt") == {"path": str(root / "d" / "x.txt"), "deleted": True}
    assert run(tmp_path, operation="delete", path="d/x.txt")["deleted"] is False
    assert run(tmp_path, operation="delete", path="d")["deleted"] is True
    assert not (root / "d").exists()
    with pytest.raises(ActionError, match="itself"):
        run(tmp_path, operation="delete", path=".")


def test_list_and_glob(tmp_path, root):
    for path in ("b.csv", "a.csv", "notes.txt", "sub/c.csv"):
        run(tmp_path, operation="write", path=path, content="")
    assert run(tmp_path, operation="list") == {"paths": ["a.csv", "b.csv", "notes.txt", "sub"]}
    assert run(tmp_path, operation="list", pattern="*.csv") == {"paths": ["a.csv", "b.csv"]}
    assert run(tmp_path, operation="list", path="sub") == {"paths": ["sub/c.csv"]}
    assert run(tmp_path, operation="glob", pattern="**/*.csv") == {"paths": ["a.csv", "b.csv", "sub/c.csv"]}


@pytest.fixture
def tree(tmp_path, root):
    """A root with files at three depths, a hidden one, a link to a folder inside, a link out and a loop."""
    for path in ("a.csv", ".hidden.csv", "box/b.csv", "box/deep/c.csv", "box/deep/d.txt", "other/e.csv"):
        run(tmp_path, operation="write", path=path, content="")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.csv").write_text("s")
    (root / "alias").symlink_to(root / "box")
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "box" / "loop").symlink_to("loop")
    return root


GLOBS = {
    "*.csv": [".hidden.csv", "a.csv"],  # hidden names match, as in Path.glob
    "**/*.csv": [".hidden.csv", "a.csv", "box/b.csv", "box/deep/c.csv", "other/e.csv"],  # no symlinked folder
    "box/**/*.csv": ["box/b.csv", "box/deep/c.csv"],
    "box/**": ["box", "box/deep"],
    "**/deep/*": ["box/deep/c.csv", "box/deep/d.txt"],
    "**/": [".", "box", "box/deep", "other"],
    "*/": ["alias", "box", "other"],  # a link to a folder inside is one; the link out and the loop are not
    "alias/*.csv": ["alias/b.csv"],  # a plain part follows a link that stays inside
    "*/deep/?.txt": ["alias/deep/d.txt", "box/deep/d.txt"],
    "*": [".hidden.csv", "a.csv", "alias", "box", "other"],
    "out/*": [],
    "box/l*": [],
    "box/deep/c.csv": ["box/deep/c.csv"],
    "nothing/*": [],
}


@pytest.mark.parametrize("pattern", GLOBS)
def test_glob_matches_as_path_glob_without_leaving_the_root(tmp_path, tree, pattern):
    assert run(tmp_path, operation="glob", pattern=pattern) == {"paths": GLOBS[pattern]}
    # The same as Path.glob (Python 3.11) keeping what resolves inside the root, as the step did before.
    kept = [str(path.relative_to(tree)) for path in tree.glob(pattern) if _resolves_inside(path, tree)]
    assert GLOBS[pattern] == sorted(kept)


def _resolves_inside(path, root) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def test_glob_in_a_folder_and_list_keep_their_shapes(tmp_path, tree):
    assert run(tmp_path, operation="glob", path="box", pattern="**/*.csv") == {"paths": ["box/b.csv",
                                                                                       "box/deep/c.csv"]}
    assert run(tmp_path, operation="glob", path="alias", pattern="*.csv") == {"paths": ["box/b.csv"]}
    assert run(tmp_path, operation="glob", path="missing", pattern="*") == {"paths": []}
    assert run(tmp_path, operation="glob", path="a.csv", pattern="*") == {"paths": []}
    # A listing names every entry, symlinks included, wherever they point; it never lists what is behind them.
    assert run(tmp_path, operation="list") == {"paths": [".hidden.csv", "a.csv", "alias", "box", "other", "out"]}
    assert run(tmp_path, operation="list", path="alias", pattern="*.csv") == {"paths": ["box/b.csv"]}
    with pytest.raises(ActionError, match=r"^file list: 'missing' not found$"):
        run(tmp_path, operation="list", path="missing")
    with pytest.raises(ActionError, match=r"^file list: 'a.csv': Not a directory$"):
        run(tmp_path, operation="list", path="a.csv")


@pytest.mark.parametrize("pattern, message", [
    ("a**", "Invalid pattern: '**' can only be an entire path component"),
    (".", "Unacceptable pattern: '.'"),
    ("./", "Unacceptable pattern: './'"),
    ("  ", "Unacceptable pattern: ''"),
])
def test_an_invalid_glob_pattern_is_a_clear_error(tmp_path, root, pattern, message):
    with pytest.raises(ActionError) as caught:
        run(tmp_path, operation="glob", pattern=pattern)
    assert str(caught.value) == f"file glob: invalid pattern {pattern.strip()!r}: {message}"
    assert not caught.value.retryable


def test_a_glob_is_bounded(tmp_path, root, monkeypatch):
    for index in range(6):
        run(tmp_path, operation="write", path=f"box/{index}", content="")
    run(tmp_path, operation="write", path="deep/" + "/".join("abcdef") + "/x", content="")
    monkeypatch.setattr(walk, "MAX_ENTRIES", 5)
    with pytest.raises(ActionError) as caught:
        run(tmp_path, operation="glob", path="box", pattern="*")
    assert str(caught.value) == ("file glob: pattern '*' looked at more than 5 entries below 'box'; narrow the "
                                 "pattern or the path")
    assert not caught.value.retryable
    monkeypatch.setattr(walk, "MAX_ENTRIES", 100)
    monkeypatch.setattr(walk, "MAX_DEPTH", 4)
    assert run(tmp_path, operation="glob", path="deep", pattern="a/b/c/*") == {"paths": ["deep/a/b/c/d"]}
    with pytest.raises(ActionError, match=r"^file glob: pattern '\*\*/x' reached folders more than 4 deep below "
                                          r"'deep'; narrow the pattern or the path$"):
        run(tmp_path, operation="glob", path="deep", pattern="**/x")


def test_configured_root(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    result = run(tmp_path, settings={"WORKFLOW_FILES_ROOT": str(elsewhere)}, operation="write", path="x",
                 content="1")
    assert result == {"path": str(elsewhere / "x")}


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ActionError, match="file read: 'nope.txt' not found") as caught:
        run(tmp_path, operation="read", path="nope.txt")
    assert not caught.value.retryable


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "link/passwd", "~", "~/x", "/proc/self/environ"])
@pytest.mark.parametrize("operation", ["read", "write", "delete"])
def test_paths_outside_the_root_are_refused(tmp_path, root, path, operation):
    root.mkdir()
    (root / "link").symlink_to("/etc")  # a symlink inside the root, pointing out of it
    config = {"content": "x"} if operation == "write" else {}
    with pytest.raises(ActionError, match=r"path '.*' is outside WORKFLOW_FILES_ROOT \(/") as caught:
        run(tmp_path, operation=operation, path=path, **config)
    assert not caught.value.retryable
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("operation", ["read", "write", "delete", "list"])
def test_a_nul_byte_is_a_clear_refusal(tmp_path, operation):
    config = {"content": "x"} if operation == "write" else {}
    with pytest.raises(ActionError, match=r"^file: path 'a\\x00b' contains a NUL byte$") as caught:
        run(tmp_path, operation=operation, path="a\0b", **config)
    assert not caught.value.retryable


def test_destination_and_glob_stay_inside(tmp_path, root):
    run(tmp_path, operation="write", path="a.txt", content="A")
    with pytest.raises(ActionError, match="destination '../b.txt' is outside"):
        run(tmp_path, operation="copy", path="a.txt", destination="../b.txt")
    with pytest.raises(ActionError, match="must be relative"):
        run(tmp_path, operation="glob", pattern="../*")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    (root / "out").symlink_to(tmp_path / "outside")
    assert run(tmp_path, operation="glob", pattern="*/*")["paths"] == []


def test_deleting_a_symlink_removes_the_link_only(tmp_path, root):
    run(tmp_path, operation="write", path="a.txt", content="A")
    (root / "link").symlink_to(root / "a.txt")
    assert run(tmp_path, operation="delete", path="link")["deleted"] is True
    assert (root / "a.txt").exists() and not (root / "link").exists()


@pytest.mark.parametrize(("config", "message"), [
    ({"operation": "shred", "path": "x"}, "operation must be one of"),
    ({"operation": "write", "path": "x"}, "'content' is required"),
    ({"operation": "copy", "path": "x"}, "'destination' is required"),
    ({"operation": "read", "path": ""}, "'path' is required"),
])
def test_bad_config_is_refused_at_definition(config, message):
    with pytest.raises(ValueError, match=message):
        FileAction("f", **config)


def outside_tree(tmp_path):
    """A folder beside the root with one file in it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("outside")
    return outside


@pytest.mark.parametrize("config", [
    {"operation": "write", "path": "out/a.txt", "content": "x"},
    {"operation": "write", "path": "out/new/a.txt", "content": "x"},
    {"operation": "append", "path": "out/a.txt", "content": "x"},
    {"operation": "copy", "path": "in.txt", "destination": "out/a.txt"},
    {"operation": "move", "path": "in.txt", "destination": "out/a.txt"},
    {"operation": "move", "path": "out/a.txt", "destination": "in.txt"},
    {"operation": "delete", "path": "out/a.txt"},
    {"operation": "write", "path": "link", "content": "x"},
    {"operation": "append", "path": "link", "content": "x"},
    {"operation": "copy", "path": "in.txt", "destination": "link"},
    {"operation": "move", "path": "in.txt", "destination": "link"},
    {"operation": "move", "path": "link", "destination": "in.txt"},
], ids=lambda config: f"{config['operation']}-{config['path']}-{config.get('destination', '')}")
def test_a_symlink_pointing_out_is_never_written_through(tmp_path, root, config):
    outside = outside_tree(tmp_path)
    run(tmp_path, operation="write", path="in.txt", content="in")
    (root / "out").symlink_to(outside)  # made on the host; the API cannot make one
    (root / "link").symlink_to(outside / "a.txt")
    with pytest.raises(ActionError, match=r"^file: (path|destination) '[^']+' is outside WORKFLOW_FILES_ROOT"):
        run(tmp_path, **config)
    assert sorted(path.name for path in outside.iterdir()) == ["a.txt"]
    assert (outside / "a.txt").read_text() == "outside"
    assert (root / "in.txt").read_text() == "in"


@pytest.mark.parametrize("path", ["link", "out"])
def test_deleting_a_symlink_pointing_out_removes_the_link_only(tmp_path, root, path):
    outside = outside_tree(tmp_path)
    root.mkdir()
    (root / "out").symlink_to(outside)
    (root / "link").symlink_to(outside / "a.txt")
    assert run(tmp_path, operation="delete", path=path) == {"path": str(root / path), "deleted": True}
    assert not (root / path).is_symlink()
    assert (outside / "a.txt").read_text() == "outside"


def test_a_symlink_that_stays_inside_is_followed_as_checked(tmp_path, root):
    run(tmp_path, operation="write", path="box/a.txt", content="A")
    (root / "alias").symlink_to(root / "box")
    assert run(tmp_path, operation="write", path="alias/b.txt", content="B") == {"path": str(root / "box" / "b.txt")}
    assert run(tmp_path, operation="append", path="alias/a.txt", content="+") == {"path": str(root / "box" / "a.txt")}
    assert (root / "box" / "b.txt").read_text() == "B" and (root / "box" / "a.txt").read_text() == "A+"
    assert (root / "alias").is_symlink()


@pytest.mark.parametrize("operation", ["write", "append"])
def test_writing_the_root_itself_is_refused_without_touching_its_parent(tmp_path, root, operation):
    root.mkdir()
    with pytest.raises(ActionError, match=rf"^file {operation}: path '\.' is WORKFLOW_FILES_ROOT itself, a folder$"):
        run(tmp_path, operation=operation, path=".", content="x")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["files"]


def test_a_folder_cannot_be_moved_into_itself(tmp_path, root):
    run(tmp_path, operation="write", path="d/sub/a.txt", content="A")
    with pytest.raises(ActionError, match=r"^file move: destination 'd/sub' is inside 'd', the folder being moved$"):
        run(tmp_path, operation="move", path="d", destination="d/sub")
    assert (root / "d" / "sub" / "a.txt").read_text() == "A"


def test_moves_and_writes_make_missing_folders_and_deletes_of_missing_ones_are_no_error(tmp_path, root):
    run(tmp_path, operation="write", path="a/b/c.txt", content="C")
    assert run(tmp_path, operation="move", path="a/b/c.txt", destination="x/y/c.txt") == {
        "path": str(root / "x" / "y" / "c.txt")}
    assert (root / "x" / "y" / "c.txt").read_text() == "C"
    for missing in ("nowhere/c.txt", "x/y/c.txt/d"):
        assert run(tmp_path, operation="delete", path=missing) == {"path": str(root / missing), "deleted": False}
    with pytest.raises(ActionError, match=r"^file move: 'a/b/c.txt' not found$"):
        run(tmp_path, operation="move", path="a/b/c.txt", destination="z/c.txt")
    assert not (root / "z").exists()  # no folder made for a move that cannot happen
