"""Files uploaded with a run: saved under the store, listed as attachments."""

from __future__ import annotations

import mimetypes
import uuid
from pathlib import Path

from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from actions.atomic import write_atomic
from actions.private_files import make_private_dir
from app.errors import StorageError

# The longest name an upload is saved under: file systems refuse names past 255 bytes (and a
# numbered copy adds a prefix), so a longer posted name is shortened, keeping its extension.
MAX_FILENAME = 128
MAX_EXTENSION = 16


def safe_name(posted: str | None) -> str:
    """The name an upload is saved under: werkzeug's ``secure_filename``, at most MAX_FILENAME characters."""
    filename = secure_filename(posted or "") or "upload.bin"
    if len(filename) <= MAX_FILENAME:
        return filename
    stem, dot, extension = filename.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION:
        return filename[:MAX_FILENAME]
    return f"{stem[:MAX_FILENAME - len(extension) - 1]}.{extension}"


def save_upload(upload: FileStorage, folder: Path) -> dict:
    """Write one uploaded file atomically; its attachment record."""
    filename = safe_name(upload.filename)
    target = folder / filename
    copies = 1
    while target.exists():  # two parts with one name keep both files
        copies += 1
        target = folder / f"{copies}-{filename}"
    try:
        size = write_atomic(target, upload.stream)  # uploads are the owner's only (0600)
    except OSError as error:
        raise StorageError(f"cannot save upload {filename!r} to {folder}: {error}") from None
    content_type = upload.mimetype
    if not content_type or content_type == "application/octet-stream":
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return {"filename": filename, "content_type": content_type, "size": size, "path": str(target.resolve())}


def save_uploads(uploads: list[FileStorage], attachments_root: Path) -> tuple[list[dict], list[str]]:
    """Save every file part into a fresh folder; their attachment records in order, and the folder's name.

    The name goes to the run as its ``attachment_folders`` (Runtime.submit), the one place its steps may
    read uploads from; no files: ``([], [])``.
    """
    if not uploads:
        return [], []
    folder = attachments_root / uuid.uuid4().hex
    try:
        make_private_dir(folder)
    except OSError as error:
        raise StorageError(f"cannot create {folder}: {error}") from None
    return [save_upload(upload, folder) for upload in uploads], [folder.name]
