"""The pdf_text action: the plain text of a PDF, page by page."""

from __future__ import annotations

import logging
from typing import Any

from actions.base import ActionError, BaseAction, SettingError
from actions.extract_pdf_data import FileSpec, _choose_file, _open_pdf  # same attachment rules and errors
from actions.ocr import MODES, PageReader, check_ocr_option, ocr_mode

logger = logging.getLogger(__name__)

# pdftotext's convention: a form feed ends each page, so the text can be split into pages again.
PAGE_BREAK = "\f"


class PdfTextAction(BaseAction):
    """Extracts the text of every page of ``file``; returns ``{"text", "pages", "source", "ocr_pages"}``.

    ``file`` is a path, an attachment (``{"filename", "path", ...}``) or a list
    of attachments, of which the first PDF is read. Pages are joined with a
    form feed. ``ocr``: auto reads pages without a text layer with Tesseract
    (``ocr_pages`` numbers them), always reads every page so, never none.
    """

    type = "pdf_text"
    result_keys = ("text", "pages", "source", "ocr_pages")
    path_fields = {"file": "attachments"}
    config_choices = {"ocr": MODES}

    def __init__(self, name: str, *, file: FileSpec | None, ocr: str = "auto", **options: Any):
        super().__init__(name, **options)
        if isinstance(file, str) and not file.strip():
            raise SettingError("file", f"action {name!r}: file must be a path or an attachment, got {file!r}")
        check_ocr_option(ocr, name)
        self.file = file
        self.ocr = ocr

    def execute(self, data_store: dict) -> dict:
        """Read the PDF's pages in order."""
        if not self.file:
            raise ActionError("pdf_text: no file to read (did its template find nothing?)", retryable=False)
        path, filename = _choose_file(self.file, self.context, self.type)
        mode = ocr_mode(self.ocr, self.type)
        with _open_pdf(path, filename, PageReader(path, filename, self.context, self.type, mode)) as pdf:
            texts = [pdf.text(index) for index in range(len(pdf))]
            ocr_pages = pdf.ocr_pages
        text = PAGE_BREAK.join(texts)
        if not text.strip() and mode == "never":
            raise ActionError(f"pdf_text: no text layer was found in {filename} and ocr is 'never' "
                              f"(set ocr to auto to read scanned pages with Tesseract)", retryable=False)
        if not text.strip():
            logger.warning("pdf_text %s: %s has no text", self.name, filename)
        logger.info("pdf_text %s: %d page(s), %d by OCR, %d characters from %s", self.name, len(texts),
                    len(ocr_pages), len(text), filename)
        return {"text": text, "pages": len(texts), "source": filename, "ocr_pages": ocr_pages}
