"""The one path check: a path a definition or a run's inputs name stays inside WORKFLOW_FILES_ROOT.

Every action, trigger and library function that opens a path it was given
asks here (DESIGN section 10). Writing, moving, deleting and linking happen
only inside the files root; reading may also reach the run's own folders in
the server's attachments folder, where the server saved its uploads and
e-mailed files (the run record's ``attachment_folders``, which inputs cannot
set): any other path there is another run's file. Imports nothing of app/, so
triggers/, actions/ and workflows/ share it with the runtime.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

ROOT_SETTING = "WORKFLOW_FILES_ROOT"
# Where Linux shows the path an open file descriptor really reached (symlinks swapped in included).
_FD_PATHS = Path("/proc/self/fd")


class PathError(ValueError):
    """A path that leads outside the folders it may name; the message names the field, the value and the root."""


def files_root(settings: Mapping[str, Any], storage_path: str | os.PathLike | None = None) -> Path:
    """WORKFLOW_FILES_ROOT resolved (symlinks followed); default ``<storage>/files``."""
    configured = str(settings.get(ROOT_SETTING) or "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    if storage_path is None:
        storage_path = settings.get("WORKFLOW_STORAGE_PATH") or "./data"
    return (Path(storage_path) / "files").resolve()


def attachments_folder(settings: Mapping[str, Any], storage_path: str | os.PathLike | None = None) -> Path:
    """Where the server saves uploads and e-mail attachments: ``<storage>/attachments``, resolved."""
    if storage_path is None:
        storage_path = settings.get("WORKFLOW_STORAGE_PATH") or "./data"
    return (Path(storage_path) / "attachments").resolve()


def run_folders(settings: Mapping[str, Any], storage_path: str | os.PathLike | None,
                names: Iterable[str]) -> tuple[Path, ...]:
    """The run's own attachment folders: each of ``names`` a folder right under the attachments folder, resolved."""
    parent = attachments_folder(settings, storage_path)
    folders = []
    for name in names:
        folder = (parent / str(name)).resolve()
        if folder.parent == parent:  # one plain name each: "", ".", ".." or "a/b" name no folder of a run
            folders.append(folder)
    return tuple(folders)


def inside(root: Path, value: Any, field: str, *, also: Iterable[Path] = (), confine: bool = True) -> Path:
    """``value`` resolved under ``root`` (``..`` and symlinks followed); PathError when it leads elsewhere.

    A relative path is taken under ``root``; an absolute one must lead into
    ``root`` or one of ``also``. ``~`` is expanded, so ``~/.ssh`` is refused
    as the home folder it names. ``confine=False`` (trusted code only)
    resolves the same way without refusing.
    """
    root = Path(root).resolve()
    raw = str(value if value is not None else ".").strip() or "."
    if "\0" in raw:
        raise PathError(f"{field} {raw!r} contains a NUL byte")
    try:
        # An absolute path stays itself: root / "/etc/passwd" is "/etc/passwd", then refused.
        resolved = (root / Path(raw).expanduser()).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop; an unknown ~user
        raise PathError(f"{field} {raw!r} cannot be resolved: {error}") from None
    folders = [root, *(Path(folder).resolve() for folder in also)]
    if not confine or any(resolved.is_relative_to(folder) for folder in folders):
        return resolved
    where = f"{ROOT_SETTING} ({root})"
    if len(folders) > 1:
        where += "".join(f" or this run's attachments folder ({folder})" for folder in folders[1:])
    raise PathError(f"{field} {raw!r} is outside {where}")


def writable(settings: Mapping[str, Any], storage_path: str | os.PathLike | None, value: Any, field: str) -> Path:
    """A path to write, move, delete or link: inside the files root only."""
    return inside(files_root(settings, storage_path), value, field)


def readable(settings: Mapping[str, Any], storage_path: str | os.PathLike | None, value: Any, field: str,
             own: Iterable[str] = ()) -> Path:
    """A path to read: inside the files root or one of the run's own attachment folders (``own``: their names).

    Any other path in the attachments folder is refused as another run's file, whatever the inputs say.
    """
    root = files_root(settings, storage_path)
    try:
        return inside(root, value, field, also=run_folders(settings, storage_path, own))
    except PathError:
        resolved = inside(root, value, field, confine=False)
        if not resolved.is_relative_to(attachments_folder(settings, storage_path)):
            raise
    raise PathError(f"{field} {str(value).strip()!r} is not an attachment of this run (another run's upload or "
                    f"e-mail attachment): a run reads only the files the server saved for it")


def open_regular(path: Path, shown: str, folders: Iterable[Path]) -> IO[bytes]:
    """``path`` (checked by ``inside``) opened to read; PathError unless it is a regular file in ``folders``.

    Opened without blocking and without following a last symlink: a FIFO, whose read would wait for a
    writer for ever, or a device is refused, and so is a path that a symlink swapped in after the check
    led elsewhere (where the open really landed is read back from /proc on Linux). ``shown`` names the
    path in messages (``path 'pipe'``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        check_regular(fd, shown)
        if _FD_PATHS.is_dir():
            reached = Path(os.readlink(_FD_PATHS / str(fd)))
            folders = [Path(folder) for folder in folders]
            if not any(reached.is_relative_to(folder) for folder in folders):
                raise PathError(f"{shown} led outside {ROOT_SETTING} ({folders[0]}) when opened (a symlink "
                                f"changed after the check)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(fd: int, shown: str) -> None:
    """PathError unless the open ``fd`` is a regular file (not a FIFO, a folder or a device)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise PathError(f"{shown} is {kind}; only regular files can be read")


def readable_folders(settings: Mapping[str, Any], storage_path: str | os.PathLike | None,
                     own: Iterable[str] = ()) -> tuple[Path, ...]:
    """The folders a path to read may lead into: the files root, then the run's own attachment folders."""
    return files_root(settings, storage_path), *run_folders(settings, storage_path, own)


# -- a definition's own paths, checked when it is saved ------------------------------------------------
def literal(value: Any) -> bool:
    """Whether ``value`` is text a run uses as it is written: no template (a template is checked once rendered)."""
    return isinstance(value, str) and bool(value.strip()) and "{{" not in value and "{%" not in value


def outside_root(settings: Mapping[str, Any], storage_path: str | os.PathLike | None, value: Any, field: str,
                 *, attachments: bool = False) -> list[tuple[str, str]]:
    """(field, why) for each literal path of ``value`` outside WORKFLOW_FILES_ROOT, which every run would refuse.

    ``attachments``: ``value`` may also be an attachment (``{"path": ...}``) or a list of paths and
    attachments, each reported at its own field (``attachments[1].path``). A path into the attachments
    folder is refused too: a run reads there only its own files, which a definition cannot name.
    """
    if attachments and isinstance(value, list):
        return [found for index, item in enumerate(value) if not isinstance(item, list)
                for found in outside_root(settings, storage_path, item, f"{field}[{index}]", attachments=True)]
    if attachments and isinstance(value, Mapping):
        return outside_root(settings, storage_path, value.get("path"), f"{field}.path")
    if not literal(value):
        return []
    root = files_root(settings, storage_path)
    raw = value.strip()
    # Refused only when it leads out both as written and resolved: a symlink inside the root may change
    # before a run (which checks again), one on the way to the root (/data -> /mnt/data) is the server's.
    if _written_inside(root, raw):
        return []
    try:
        inside(root, value, field)
    except PathError as error:
        return [(field, str(error))]
    return []


def _written_inside(root: Path, raw: str) -> bool:
    """Whether ``raw`` leads into ``root`` as written: ``..`` and ``~`` taken as they read, no symlink followed."""
    if "\0" in raw:
        return False
    try:
        written = Path(os.path.normpath(root / Path(raw).expanduser()))
    except RuntimeError:  # an unknown ~user: ``inside`` says so
        return False
    return written.is_relative_to(root)


# -- library functions called by python steps ------------------------------------------------------
#
# A function such as workflows.library.sqlite_store:load_rows gets its path as a plain argument and
# knows nothing of the settings: the python step tells it the folders here, for the time of the call.
_confinement: ContextVar[tuple[Mapping[str, Any], str | None, tuple[str, ...]] | None] = ContextVar(
    "pyflow_paths", default=None)


@contextmanager
def confined(settings: Mapping[str, Any], storage_path: str | os.PathLike | None,
             own: Iterable[str] = ()) -> Iterator[None]:
    """Within the block, ``confine`` checks paths against these settings' files root (and the run's ``own``)."""
    token = _confinement.set((settings, None if storage_path is None else str(storage_path), tuple(own)))
    try:
        yield
    finally:
        _confinement.reset(token)


def confine(value: Any, field: str, *, write: bool = True) -> Path:
    """``value`` checked as ``writable`` (or ``readable``) inside a python step; as given in a plain call.

    Outside a python step the caller is Python code, which is trusted as the
    workflows in workflows/ are, so its path is taken as it is.
    """
    current = _confinement.get()
    if current is None:
        return Path(str(value))
    settings, storage_path, own = current
    if write:
        return writable(settings, storage_path, value, field)
    return readable(settings, storage_path, value, field, own)


# -- start-up --------------------------------------------------------------------------------------
# The project's own packages; a python step may import from workflows.library, and the rest is the server.
PROJECT = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("app", "actions", "triggers", "workflows")


def code_paths(modules: Iterable[str] = ()) -> list[Path]:
    """The code a files root must stay apart from: the project's packages and the named modules.

    A package counts as its folder; a single-file module as the file, the
    package folder and ``__pycache__`` beside it that would shadow it.
    """
    found = [PROJECT / name for name in CODE_FOLDERS]
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue  # start-up names a module that cannot be imported on its own
        if spec is None:
            continue
        if spec.submodule_search_locations:
            found.extend(Path(folder) for folder in spec.submodule_search_locations)
        elif spec.origin and os.path.isabs(spec.origin):
            module = Path(spec.origin)
            found.extend((module, module.parent / module.stem, module.parent / "__pycache__"))
    return [path.resolve() for path in found]


def check_root_apart(root: Path, code: Iterable[Path], storage: str | os.PathLike | None = None) -> None:
    """PathError unless ``root`` is apart from every code path and the store, and the store is not in the code.

    A files root inside, equal to or above a code folder would let a file
    step write a module that a python step then imports; one that holds the
    store would let it rewrite the store's definitions and state, and so would
    one inside the store anywhere but its ``files`` folder (the default root):
    its runs, other runs' uploads, its keys and locks.
    """
    root = Path(root).resolve()
    store = None if storage is None else Path(storage).resolve()
    for path in code:
        path = Path(path).resolve()
        if path.is_relative_to(root) or root.is_relative_to(path):
            raise PathError(f"{ROOT_SETTING} ({root}) must be apart from the code in {path}: a files root inside, "
                            f"equal to or above a code folder would let a posted definition change the code")
        # Uploads keep their names: inside a package folder they would be importable modules.
        if store is not None and store.is_relative_to(path):
            raise PathError(f"WORKFLOW_STORAGE_PATH ({store}) must not be inside the code in {path}: uploads saved "
                            f"there would be importable modules")
    if store is not None:
        if store.is_relative_to(root):
            raise PathError(f"{ROOT_SETTING} ({root}) must not hold the store, WORKFLOW_STORAGE_PATH ({store}); "
                            f"the default is {store / 'files'}")
        if root.is_relative_to(store) and not root.is_relative_to(store / "files"):
            raise PathError(f"{ROOT_SETTING} ({root}) must not be inside the store, WORKFLOW_STORAGE_PATH ({store}), "
                            f"except in its files folder: file steps could read and rewrite its runs and every "
                            f"run's uploads; the default is {store / 'files'}")
