"""OCR of PDF pages without a text layer: pypdfium2 draws a page, Tesseract reads it."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from actions.base import ActionError, RunContext, SettingError

logger = logging.getLogger(__name__)

MODES = ("auto", "always", "never")
DPI = 300
# A page drawn at DPI beyond this many pixels (twice A3) is drawn coarser: a poster-sized page must not
# take gigabytes. Tesseract reads 10-12 pt text well down to about 200 DPI.
MAX_PIXELS = 35_000_000
# How often a running Tesseract is checked against the run's cancellation and the step's deadline.
POLL_SECONDS = 0.1
INSTALL = "apt-get install tesseract-ocr (Debian, Ubuntu), dnf install tesseract, or brew install tesseract"
LANGUAGES_SETTING = "OCR_LANGUAGES"
PAGES_SETTING = "WORKFLOW_MAX_OCR_PAGES"
# Tesseract tends to read "jane.doe@example.com" as "jane.doe @example.com": a space beside an "@" between the
# two halves of an address is dropped, or the address fails every check downstream.
_SPLIT_ADDRESS = re.compile(r"(?<=[\w.+-])[ \t]*@[ \t]*(?=[\w-]+(?:\.[\w-]+)+)")

# pdfium is not thread-safe, and steps of parallel runs share the process: one page is drawn at a time.
# Tesseract, the slow part, runs outside the lock.
_PDFIUM = threading.Lock()


def ocr_mode(value: Any, action: str) -> str:
    """``value`` as one of MODES; a non-retryable ActionError naming the field otherwise."""
    mode = str(value or "auto").strip().lower()
    if mode not in MODES:
        raise ActionError(f"{action}: ocr must be auto, always or never, got {value!r}", retryable=False)
    return mode


def check_ocr_option(value: Any, name: str) -> None:
    """At definition time: SettingError for ``ocr`` unless ``value`` is one of MODES or a template, checked later."""
    if "{{" not in str(value) and str(value or "auto").strip().lower() not in MODES:
        raise SettingError("ocr", f"action {name!r}: ocr must be auto, always or never, got {value!r}")


class PageReader:
    """Reads the pages of one PDF file with Tesseract, within the step's deadline and page budget.

    pypdfium2 is imported and the file opened on first need; ``close()`` releases it.
    """

    def __init__(self, path: Path, filename: str, context: RunContext, action: str, mode: str = "auto"):
        self.path = path
        self.filename = filename
        self.action = action
        self.mode = mode
        self.context = context
        self.languages = str(context.settings.get(LANGUAGES_SETTING) or "eng")
        self.max_pages = context.settings.get(PAGES_SETTING)
        self.started = time.monotonic()
        self.pages_read = 0
        self.dpi = DPI  # of the page drawn last
        self._document: Any = None

    def has_marks(self, index: int) -> bool:
        """Whether page ``index`` draws anything at all (a blank page needs no OCR)."""
        with _PDFIUM:
            page = self._open()[index]
            try:
                return next(page.get_objects(max_depth=1), None) is not None
            finally:
                page.close()

    def read(self, index: int) -> str:
        """Page ``index``'s text as Tesseract reads it."""
        if self.max_pages is not None and self.pages_read >= self.max_pages:
            raise ActionError(
                f"{self.action}: {self.filename} needs OCR on more than {self.max_pages:g} pages ({PAGES_SETTING}); "
                f"split the PDF or raise the setting", retryable=False)
        if self.context.cancel_event.is_set():
            raise ActionError(f"{self.action}: cancelled during OCR of {self.filename}", retryable=False)
        tesseract = shutil.which("tesseract")
        if tesseract is None:
            why = "has no text layer and needs OCR" if self.mode == "auto" else "is to be read by OCR (ocr: always)"
            raise ActionError(f"{self.action}: page {index + 1} of {self.filename} {why}, but Tesseract is not "
                              f"installed: {INSTALL}", retryable=False)
        image = self._draw(index)
        text = self._tesseract(tesseract, image, index)
        self.pages_read += 1
        return _SPLIT_ADDRESS.sub("@", text).strip()

    def close(self) -> None:
        """Release the open document, if any."""
        if self._document is not None:
            with _PDFIUM:
                self._document.close()
            self._document = None

    def _open(self) -> Any:
        if self._document is None:
            import pypdfium2  # only a PDF that needs OCR pays for loading pdfium

            try:
                self._document = pypdfium2.PdfDocument(str(self.path))
            except pypdfium2.PdfiumError as exc:
                raise ActionError(f"cannot read PDF {self.filename}: pdfium: {exc}", retryable=False) from None
        return self._document

    def _draw(self, index: int) -> bytes:
        """Page ``index`` in shades of grey as a binary PGM image, which Tesseract reads without decoding."""
        with _PDFIUM:
            page = self._open()[index]
            try:
                width, height = page.get_size()  # in points, 1/72 inch
                scale = min(DPI / 72, math.sqrt(MAX_PIXELS / max(width * height, 1)))
                bitmap = page.render(scale=scale, grayscale=True)
                try:
                    columns, rows, stride = bitmap.width, bitmap.height, bitmap.stride
                    pixels = bytes(bitmap.buffer)
                finally:
                    bitmap.close()
            finally:
                page.close()
        if stride != columns:  # rows are padded to a multiple of 4 bytes
            pixels = b"".join(pixels[row * stride : row * stride + columns] for row in range(rows))
        self.dpi = round(scale * 72)
        return b"P5\n%d %d\n255\n" % (columns, rows) + pixels

    def _tesseract(self, tesseract: str, image: bytes, index: int) -> str:
        """Run Tesseract on one page image until it ends, the step's deadline passes or the run is cancelled."""
        where = f"page {index + 1} of {self.filename}"
        limit = self.context.step_timeout
        # Files, not pipes: a process fed through a pipe cannot be waited for with a timeout without a thread
        # to write it (Popen.communicate does not resume writing after a timeout).
        with tempfile.TemporaryDirectory(prefix="pyflow-ocr-") as folder:
            picture = Path(folder) / "page.pgm"
            picture.write_bytes(image)
            # No form feed after the page (pdf_text joins pages with its own); the image carries no resolution.
            argv = [tesseract, str(picture), "stdout", "--dpi", str(self.dpi), "-l", self.languages,
                    "-c", "page_separator="]
            # Tesseract's OpenMP threads spin against each other on a busy machine (several times slower with
            # two cores shared); parallel runs and steps are PyFlow's way to use more cores.
            env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
            with (Path(folder) / "out").open("w+b") as out, (Path(folder) / "err").open("w+b") as err:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
                stopped = self._wait(process, limit)
                out.seek(0)
                err.seek(0)
                text, problem = out.read(), err.read()
        if stopped == "cancelled":
            raise ActionError(f"{self.action}: cancelled during OCR of {where}", retryable=False)
        if stopped == "timeout":
            raise ActionError(f"{self.action}: OCR of {where} passed the step timeout ({limit:g} s); Tesseract "
                              f"was stopped", retryable=False)
        # With one of several languages missing Tesseract warns and goes on with the others; a language
        # the setting asks for is not dropped silently.
        if process.returncode != 0 or b"Failed loading language" in problem:
            raise ActionError(f"{self.action}: {_failure(problem, self.languages, where)}", retryable=False)
        return text.decode("utf-8", errors="replace")

    def _wait(self, process: subprocess.Popen, limit: float | None) -> str | None:
        """Wait for ``process``; "timeout" or "cancelled" when it had to be killed."""
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                return None
            except subprocess.TimeoutExpired:
                pass
            if self.context.cancel_event.is_set():
                reason = "cancelled"
            elif limit and time.monotonic() - self.started > limit:
                reason = "timeout"
            else:
                continue
            process.kill()
            process.wait()
            return reason


def _failure(stderr: bytes, languages: str, where: str) -> str:
    """One line saying why Tesseract failed on ``where``."""
    text = stderr.decode("utf-8", errors="replace")
    if "Failed loading language" in text or "Could not initialize tesseract" in text:
        missing = re.findall(r"Failed loading language '([^']+)'", text)
        names = ", ".join(missing) or languages
        packages = " ".join(f"tesseract-ocr-{name.lower().replace('_', '-')}" for name in missing) or "its language"
        return (f"Tesseract has no data for {names} ({LANGUAGES_SETTING}={languages}), needed for {where}: "
                f"apt-get install {packages}")
    lines = [line for line in text.splitlines() if line.strip()]
    return f"Tesseract failed on {where}: {lines[-1] if lines else 'no message'}"
