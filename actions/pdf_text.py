"""The pdf_text action: the plain text of a PDF, page by page."""

from __future__ import annotations

import logging
from typing import Any

from actions.base import ActionError, BaseAction
from actions.extract_pdf_data import FileSpec, _choose_file, _open_pdf  # same attachment rules and errors

logger = logging.getLogger(__name__)

# pdftotext's convention: a form feed ends each page, so the text can be split into pages again.
PAGE_BREAK = "\f"


class PdfTextAction(BaseAction):
    """Extracts the text of every page of ``file``; returns ``{"text", "pages", "source"}``.

    ``file`` is a path, an attachment (``{"filename", "path", ...}``) or a list
    of attachments, of which the first PDF is read. Pages are joined with a
    form feed. A scanned PDF without a text layer gives empty text (no OCR).
    """

    type = "pdf_text"

    def __init__(self, name: str, *, file: FileSpec | None, **options: Any):
        super().__init__(name, **options)
        if isinstance(file, str) and not file.strip():
            raise ValueError(f"action {name!r}: file must be a path or an attachment, got {file!r}")
        self.file = file

    def execute(self, data_store: dict) -> dict:
        """Read the PDF's pages in order."""
        if not self.file:
            raise ActionError("pdf_text: no file to read (did its template find nothing?)", retryable=False)
        path, filename = _choose_file(self.file, self.context, self.type)
        with _open_pdf(path, filename) as pdf:
            texts = [pdf.text(index) for index in range(len(pdf))]
        text = PAGE_BREAK.join(texts)
        if not text.strip():
            logger.warning("pdf_text %s: %s has no text layer (a scan needs OCR)", self.name, filename)
        logger.info("pdf_text %s: %d page(s), %d characters from %s", self.name, len(texts), len(text), filename)
        return {"text": text, "pages": len(texts), "source": filename}
