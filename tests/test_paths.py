"""actions/paths.py: the one path check, the library functions' confinement and the start-up check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from actions import paths
from actions.paths import PathError, confine, confined, inside, readable, writable
from app import create_app, start_app
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


# -- inside -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("a.txt", "a.txt"), ("sub/../b.txt", "b.txt"), (".", ""), ("", ""), (None, ""), ("./sub/", "sub"),
])
def test_relative_paths_are_taken_under_the_root(root, value, expected):
    assert inside(root, value, "path") == root / expected if expected else root


def test_an_absolute_path_inside_the_root_is_itself(root):
    assert inside(root, str(root / "x" / "y.csv"), "path") == root / "x" / "y.csv"


@pytest.mark.parametrize("value", [
    "/etc/passwd", "../secret", "a/../../secret", "~", "~/.ssh/id_rsa", "/proc/self/environ", "//etc/passwd",
])
def test_paths_leading_out_are_refused_naming_field_value_and_root(root, value):
    with pytest.raises(PathError) as caught:
        inside(root, value, "attachments[2]")
    assert str(caught.value) == f"attachments[2] {value!r} is outside WORKFLOW_FILES_ROOT ({root})"


def test_a_nul_byte_is_refused(root):
    with pytest.raises(PathError, match=r"^path 'a\\x00b' contains a NUL byte$"):
        inside(root, "a\0b", "path")


def test_a_symlink_inside_the_root_pointing_out_is_refused(root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret", encoding="utf-8")
    (root / "link").symlink_to(secret)
    (root / "dir").symlink_to(tmp_path)
    for value in ("link", "dir/secret.txt", str(root / "link")):
        with pytest.raises(PathError, match="is outside WORKFLOW_FILES_ROOT"):
            inside(root, value, "path")
    (root / "inner").symlink_to(root / "x.txt")  # a link that stays inside is fine
    assert inside(root, "inner", "path") == root / "x.txt"


def test_a_symlink_loop_is_refused(root):
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    with pytest.raises(PathError, match=r"^path 'a' (cannot be resolved|is outside)"):
        inside(root, "a", "path")


def test_a_root_given_through_a_symlink_is_compared_resolved(tmp_path, root):
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert inside(alias, "a.txt", "path") == root / "a.txt"
    assert inside(alias, str(root / "a.txt"), "path") == root / "a.txt"


# -- readable and writable ----------------------------------------------------------------------------

def test_the_default_root_is_files_in_the_storage(tmp_path):
    settings = {"WORKFLOW_STORAGE_PATH": str(tmp_path / "data")}
    assert paths.files_root(settings) == tmp_path / "data" / "files"
    assert paths.files_root({}, tmp_path / "store") == tmp_path / "store" / "files"
    assert paths.files_root({"WORKFLOW_FILES_ROOT": str(tmp_path / "mine")}, "ignored") == tmp_path / "mine"


def test_the_runs_own_attachments_folder_is_readable_but_not_writable(tmp_path):
    settings = {"WORKFLOW_STORAGE_PATH": str(tmp_path)}
    upload = tmp_path / "attachments" / "abc" / "form.pdf"
    assert readable(settings, None, str(upload), "file", ("abc",)) == upload
    with pytest.raises(PathError, match=rf"^destination '{upload}' is outside WORKFLOW_FILES_ROOT \({tmp_path}/"):
        writable(settings, None, str(upload), "destination")
    with pytest.raises(PathError) as caught:
        readable(settings, None, "/etc/passwd", "attachments[0]", ("abc",))
    assert str(caught.value) == (f"attachments[0] '/etc/passwd' is outside WORKFLOW_FILES_ROOT ({tmp_path}/files) "
                                 f"or this run's attachments folder ({tmp_path}/attachments/abc)")
    # A relative path is the files root's, never the attachments folder's.
    assert readable(settings, None, "abc/form.pdf", "file", ("abc",)) == tmp_path / "files" / "abc" / "form.pdf"


@pytest.mark.parametrize("own", [(), ("def",), ("..",), ("",), ("abc/..",)])
def test_another_runs_attachment_is_refused_naming_the_field(tmp_path, own):
    """DESIGN section 10: an attachment path in inputs is trusted only when the server made it for this run."""
    settings = {"WORKFLOW_STORAGE_PATH": str(tmp_path)}
    for value in (tmp_path / "attachments" / "abc" / "form.pdf", tmp_path / "attachments" / "form.pdf",
                  tmp_path / "attachments" / "def" / ".." / "abc" / "form.pdf"):
        with pytest.raises(PathError) as caught:
            readable(settings, None, str(value), "file", own)
        assert str(caught.value) == (f"file {str(value)!r} is not an attachment of this run (another run's upload or "
                                     f"e-mail attachment): a run reads only the files the server saved for it")
    assert paths.readable_folders(settings, None, own) == ((tmp_path / "files", tmp_path / "attachments" / "def")
                                                           if own == ("def",) else (tmp_path / "files",))


# -- confine: library functions called by python steps --------------------------------------------------

def test_confine_checks_only_inside_a_python_step(tmp_path):
    assert confine("/anywhere/db.sqlite3", "db_path") == Path("/anywhere/db.sqlite3")  # trusted Python caller
    with confined({}, tmp_path):
        assert confine("db.sqlite3", "db_path") == tmp_path / "files" / "db.sqlite3"
        with pytest.raises(PathError, match=r"^db_path '/anywhere/db.sqlite3' is outside WORKFLOW_FILES_ROOT"):
            confine("/anywhere/db.sqlite3", "db_path")
        attachment = tmp_path / "attachments" / "x.pdf"
        with pytest.raises(PathError):
            confine(str(attachment), "file")  # writing: the files root only
    with confined({}, tmp_path, ("abc",)):
        own, other = tmp_path / "attachments" / "abc" / "x.pdf", tmp_path / "attachments" / "def" / "x.pdf"
        assert confine(str(own), "file", write=False) == own  # reading: the run's own attachments too
        with pytest.raises(PathError, match="is not an attachment of this run"):
            confine(str(other), "file", write=False)
    assert confine("/anywhere/db.sqlite3", "db_path") == Path("/anywhere/db.sqlite3")  # reset after the block


# -- start-up: the files root is apart from the code and the store ------------------------------------------

@pytest.mark.parametrize("folder", [
    "", "app", "workflows", "workflows/library", "workflows/library/pwn", "actions/sub", "..",
])
def test_a_files_root_in_or_above_the_code_stops_start_up(tmp_path, folder):
    root = (REPO / folder).resolve()
    with pytest.raises(ConfigError) as caught:
        start_app(create_app(
            {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), "WORKFLOW_FILES_ROOT": str(root)}
        ))
    message = str(caught.value)
    assert message.startswith(f"WORKFLOW_FILES_ROOT ({root}) must be apart from the code in {REPO}/")
    assert "would let a posted definition change the code" in message


def test_a_files_root_in_a_listed_module_stops_start_up(tmp_path):
    package = tmp_path / "code" / "myflows"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "code" / "single.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    sys.path.insert(0, str(tmp_path / "code"))
    try:
        for setting, module, root in (
            ("WORKFLOW_PYTHON_MODULES", ("myflows",), package / "files"),
            ("WORKFLOW_MODULES", ("myflows",), package),
            ("WORKFLOW_PYTHON_MODULES", ("single",), tmp_path / "code"),  # above the module file
            ("WORKFLOW_PYTHON_MODULES", ("single",), tmp_path / "code" / "single"),  # a package would shadow it
        ):
            settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                        "WORKFLOW_FILES_ROOT": str(root), setting: module}
            with pytest.raises(ConfigError, match=rf"^WORKFLOW_FILES_ROOT \({root}\) must be apart from the code in "):
                start_app(create_app(settings))
        # Beside the module, in a folder of its own, is fine.
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                          "WORKFLOW_FILES_ROOT": str(tmp_path / "code" / "data"),
                          "WORKFLOW_PYTHON_MODULES": ("single",)}))
        app.extensions["pyflow"].shutdown(timeout=2)
    finally:
        sys.path.remove(str(tmp_path / "code"))
        sys.modules.pop("myflows", None)


def test_a_files_root_that_holds_the_store_stops_start_up(tmp_path):
    with pytest.raises(ConfigError) as caught:
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                    "WORKFLOW_FILES_ROOT": str(tmp_path)}))
    assert str(caught.value) == (f"WORKFLOW_FILES_ROOT ({tmp_path}) must not hold the store, WORKFLOW_STORAGE_PATH "
                                 f"({tmp_path / 'data'}); the default is {tmp_path / 'data' / 'files'}")


@pytest.mark.parametrize("inside", ["attachments", "runs", "attachments/4f0c"])
def test_a_files_root_inside_the_store_but_its_files_folder_stops_start_up(tmp_path, inside):
    """Every run's uploads, the run records and the store's state live there: no file step may reach them."""
    data = tmp_path / "data"
    with pytest.raises(ConfigError) as caught:
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(data),
                              "WORKFLOW_FILES_ROOT": str(data / inside)}))
    assert str(caught.value) == (
        f"WORKFLOW_FILES_ROOT ({data / inside}) must not be inside the store, WORKFLOW_STORAGE_PATH ({data}), except "
        f"in its files folder: file steps could read and rewrite its runs and every run's uploads; the default is "
        f"{data / 'files'}")


def test_the_default_and_a_separate_root_start(tmp_path):
    for extra in ({}, {"WORKFLOW_FILES_ROOT": str(tmp_path / "elsewhere")},
                  {"WORKFLOW_FILES_ROOT": str(tmp_path / "data" / "files" / "team")}):
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), **extra}))
        app.extensions["pyflow"].shutdown(timeout=2)


def test_a_store_inside_the_code_stops_start_up(tmp_path):
    storage = REPO / "workflows" / "library" / f"data-{tmp_path.name}"
    with pytest.raises(ConfigError) as caught:
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                    "WORKFLOW_FILES_ROOT": str(tmp_path / "files")}))
    assert str(caught.value) == (f"WORKFLOW_STORAGE_PATH ({storage}) must not be inside the code in {REPO}/workflows: "
                                 f"uploads saved there would be importable modules")
    assert not storage.exists()  # refused before the store made its folder
