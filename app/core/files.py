"""Files across hosts: a run's attachments travel through the store, never through an assumed shared disk.

The server calls ``share`` before it creates a run: every attachment it saved
under ``<store root>/attachments`` gets a host-independent ``key``
(``attachments/<folder>/<name>``) and, where the store keeps its own copy
(PostgreSQL), is put there. A worker calls ``fetch`` before it executes a run:
an attachment whose file is not on its disk is read from the store and written
under its own attachments folder, and the inputs the steps get point there.
Only keys in the run's own folders (its record's ``attachment_folders``) are
fetched: a key posted in inputs cannot fetch another run's file.
docs/files.md says how files travel and how large they may be.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from actions.atomic import write_atomic
from actions.private_files import make_private_dir
from app.errors import StorageError
from app.storage.base import Store, check_file_key

logger = logging.getLogger(__name__)

AREA = "attachments"


def share(store: Store, inputs: dict, *, max_bytes: int | None = None) -> dict:
    """Give each attachment the server saved in ``inputs["attachments"]`` its store ``key``; ``inputs``, changed.

    Its ``path`` stays for a run executed on this host. A file larger than
    ``max_bytes`` gets no key (logged): only this host can read it.
    """
    records = inputs.get("attachments") if isinstance(inputs, dict) else None
    if not isinstance(records, list):
        return inputs
    folder = (store.root / AREA).resolve()
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            continue
        path = Path(record["path"]).resolve()
        if not path.is_relative_to(folder) or path == folder:
            continue  # not a file the server saved: nothing another host could be given
        key = check_file_key(f"{AREA}/{path.relative_to(folder).as_posix()}")
        if not store.local_files:
            try:
                size = path.stat().st_size
                if max_bytes is not None and size > max_bytes:
                    logger.warning("attachment %s (%d bytes) is larger than %d bytes (WORKFLOW_MAX_UPLOAD_MB): "
                                   "kept on this host only, not shared through the store", path, size, max_bytes)
                    continue
                with path.open("rb") as file:
                    store.put_file(key, file)
            except OSError as exc:
                raise StorageError(f"cannot share attachment {path} through the store: {exc.strerror or exc}") \
                    from None
        record["key"] = key
    return inputs


def fetch(store: Store, inputs: dict, attachments_root: str | Path, *, folders: Iterable[str]) -> dict:
    """``inputs`` whose attachments with a ``key`` have their file under ``attachments_root``, ``path`` pointing there.

    A file missing on this host is read from the store and written atomically
    (0600, folders 0700). ``inputs`` itself is not changed: the run's stored
    record keeps what it had; give the returned copy to the steps. ``folders``:
    the run's own (``attachment_folders``); a key in any other is ValueError
    naming the attachment. NotFound when the store no longer has a file (its
    run outlived WORKFLOW_RETENTION_DAYS).
    """
    records = inputs.get("attachments") if isinstance(inputs, dict) else None
    if not isinstance(records, list) or not any(isinstance(r, dict) and r.get("key") for r in records):
        return inputs
    root = Path(attachments_root).resolve()
    own = set(folders)
    fetched = copy.deepcopy(inputs)
    for record in fetched["attachments"]:
        if not isinstance(record, dict) or not record.get("key"):
            continue
        key = check_file_key(record["key"])
        if not key.startswith(f"{AREA}/"):
            raise ValueError(f"attachment key {key!r} is not under {AREA}/")
        if key.split("/")[1] not in own:
            raise ValueError(f"attachment {str(record.get('filename') or key)!r} (key {key!r}) is not an attachment "
                             f"of this run (another run's upload or e-mail attachment): a run reads only the "
                             f"files the server saved for it")
        local = root.joinpath(*key.split("/")[1:])
        if not local.is_file():
            data = store.get_file(key)
            try:
                make_private_dir(local.parent)
                write_atomic(local, data)
            except OSError as exc:
                raise StorageError(f"cannot write attachment {key!r} to {local}: {exc.strerror or exc}") from None
        record["path"] = str(local)
    return fetched


def own_folders(run: Mapping[str, Any]) -> tuple[str, ...]:
    """The folders under the attachments folder a run's steps may read: its record's ``attachment_folders``.

    A run stored before PyFlow recorded them (no such key: every run created since has it, if only
    empty) keeps what it could read then: the folders its own attachment records name, which the
    server wrote when it created the run.
    """
    if "attachment_folders" in run:
        return tuple(run["attachment_folders"] or ())
    records = (run.get("trigger_data") or {}).get("attachments") if isinstance(run.get("trigger_data"), dict) else None
    folders: dict[str, None] = {}
    for record in records if isinstance(records, list) else ():
        if not isinstance(record, dict):
            continue
        key, path = record.get("key"), record.get("path")
        if isinstance(key, str) and key.startswith(f"{AREA}/") and key.count("/") >= 2:
            folders[key.split("/")[1]] = None
        elif isinstance(path, str) and f"/{AREA}/" in path:
            folders[path.rsplit(f"/{AREA}/", 1)[1].split("/")[0]] = None
    return tuple(name for name in folders if name not in ("", ".", ".."))


def limit(settings: Mapping[str, Any]) -> int:
    """The largest attachment shared through the store: WORKFLOW_MAX_UPLOAD_MB in bytes."""
    return int(float(settings["WORKFLOW_MAX_UPLOAD_MB"]) * 1024 * 1024)
