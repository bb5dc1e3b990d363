"""Read an application PDF into data: its AcroForm fields when it has the template's, else the text after labels."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actions.base import ActionError, BaseAction, RunContext, SettingError
from actions.ocr import MODES, PageReader, check_ocr_option, ocr_mode
from actions.paths import PathError, open_regular, readable, readable_folders
from actions.pdf_templates import PdfTemplate, TemplateError, load_templates, templates_folder

if TYPE_CHECKING:
    from pypdf import PdfReader  # imported when a PDF is read: listing or starting workflows skips it

logger = logging.getLogger(__name__)

# What ``file`` may be: a path, an attachment dict (filename, content_type, size, path) or a list of them.
FileSpec = str | os.PathLike | dict | list

# In layout-mode text, words are one space apart and columns are wider gaps apart.
_CELL = re.compile(r"\S+(?:\s{1,2}\S+)*")
# A value printed under a label may start a character or two left of the label itself.
_COLUMN_SLACK = 2


class ExtractPDFDataAction(BaseAction):
    """Extracts an application's fields from a PDF, as the matching PDF template describes them.

    ``ocr`` (auto, always, never): pages without a text layer are read with Tesseract under auto.
    """

    type = "extract_pdf_data"
    result_keys = ("template", "source", "method", "extracted_data", "missing", "ocr_pages", "labels")
    path_fields = {"file": "attachments", "templates_dir": "path"}
    config_choices = {"ocr": MODES}

    def __init__(
        self,
        name: str,
        file: FileSpec,
        company: str | None = None,
        templates_dir: str | os.PathLike | None = None,
        ocr: str = "auto",
        **options: Any,
    ):
        super().__init__(name, **options)
        if not isinstance(file, (str, os.PathLike, dict, list)) or (isinstance(file, str) and not file.strip()):
            raise SettingError("file", f"file must be a path, an attachment dict or a list of attachments, "
                                       f"got {file!r}")
        if company is not None and not isinstance(company, str):
            raise SettingError("company", f"company must be a template id or None, got {company!r}")
        self.file = file
        # Empty or None: the template is detected from the form's header text.
        self.company = company
        self.templates_dir = templates_dir
        check_ocr_option(ocr, name)
        self.ocr = ocr

    def execute(self, data_store: dict) -> dict:
        """Pick the PDF and its template, then read the template's fields from the form or the text."""
        path, filename = _choose_file(self.file, self.context, self.type)
        mode = ocr_mode(self.ocr, self.type)
        try:
            templates = load_templates(templates_folder(self.templates_dir, self.context, self.type))
        except TemplateError as exc:
            raise ActionError(str(exc), retryable=False)
        company = (self.company or "").strip()
        if company and company not in templates:
            raise ActionError(f"unknown company {company!r}; known templates: {', '.join(templates)}", retryable=False)

        with _open_pdf(path, filename, PageReader(path, filename, self.context, self.type, mode)) as pdf:
            form = pdf.form_values()
            template = templates[company] if company else _detect(templates, form, pdf)
            if any(spec.field in form for spec in template.fields.values()):
                # The form has the fields: an empty one is unanswered. Reading the printed text instead would
                # take whatever follows its label (the next label, a button's caption) as the answer.
                method = "form"
                values = {out: form[spec.field] for out, spec in template.fields.items() if form.get(spec.field)}
            else:
                values = _read_labels(pdf, template)
                method = "ocr" if pdf.ocr_pages else "text"

        missing = [out for out in template.fields if out not in values]
        logger.info(
            "%s: %d of %d %s fields from the %s", filename, len(values), len(template.fields), template.id, method
        )
        return {
            "template": template.id,
            "source": filename,
            "method": method,
            "extracted_data": _nest({out: values[out] for out in template.fields if out in values}),
            "missing": missing,
            "ocr_pages": pdf.ocr_pages,
            # The form's own words for each output path, so a reply can say "Date of Birth:" and not a path.
            "labels": {out: spec.label for out, spec in template.fields.items()},
        }


def _choose_file(spec: Any, context: RunContext, action: str) -> tuple[Path, str]:
    """The path to read and the file name to report, from a path, an attachment or a list of attachments.

    The path must lead into WORKFLOW_FILES_ROOT or one of the run's own attachment folders.
    """
    if isinstance(spec, list):
        attachments = [_as_attachment(item) for item in spec]
        pdfs = [item for item in attachments if _is_pdf(item)]
        if not pdfs:
            names = ", ".join(str(item.get("filename") or item.get("path") or "?") for item in attachments)
            raise ActionError(f"no PDF attachment among: {names or '(no attachments)'}", retryable=False)
        spec = pdfs[0]
    spec = _as_attachment(spec)
    path = spec.get("path")
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ActionError(f"attachment {spec.get('filename') or spec!r} has no 'path' to read", retryable=False)
    try:
        own = context.attachment_folders
        checked = readable(context.settings, context.storage_path, path, "file", own)
        # A FIFO would hold the read (and the step's thread) until a writer came: only a regular file.
        open_regular(checked, f"file {str(path)!r}",
                     readable_folders(context.settings, context.storage_path, own)).close()
    except OSError:  # missing, unreadable: _open_pdf says so as it always did
        return checked, str(spec.get("filename") or Path(str(path).strip()).name)
    except PathError as error:
        raise ActionError(f"{action}: {error}", retryable=False) from None
    return checked, str(spec.get("filename") or Path(str(path).strip()).name)


def _as_attachment(item: Any) -> dict:
    if isinstance(item, dict):
        return item
    if isinstance(item, (str, os.PathLike)) and str(item).strip():
        return {"filename": Path(str(item).strip()).name, "path": item}
    raise ActionError(f"'file' must be a path, an attachment or a list of attachments, got {item!r}", retryable=False)


def _is_pdf(attachment: dict) -> bool:
    content_type = str(attachment.get("content_type") or "").split(";")[0].strip().lower()
    name = str(attachment.get("filename") or attachment.get("path") or "")
    return content_type == "application/pdf" or name.lower().endswith(".pdf")


# insurance_application's reply to an unreadable file (workflows/templates/application_unreadable.txt) quotes
# the errors that begin "cannot read PDF <file>: ", "no PDF attachment among: " and "no template matches <file>".
@contextmanager
def _reading(filename: str) -> Iterator[None]:
    """Turn a failure inside pypdf into one ActionError naming the file."""
    try:
        yield
    except ActionError:
        raise
    except OSError as exc:
        # A disk or network-share hiccup may pass; let the engine retry.
        raise ActionError(f"cannot read PDF {filename}: {exc.strerror or exc}")
    except Exception as exc:
        # pypdf raises PdfReadError for most damage, but ValueError, KeyError and others for some;
        # none of them goes away on a second attempt.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ActionError(f"cannot read PDF {filename}: {reason}", retryable=False) from exc


@contextmanager
def _open_pdf(path: Path, filename: str, ocr: PageReader | None = None) -> Iterator[_Pdf]:
    """Open the PDF from its file, without reading it all into memory, and decrypt it if it has no password.

    With ``ocr``, pages are read by it as its mode says; it is closed with the file.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ActionError(f"cannot read PDF {filename}: no such file {path}", retryable=False)
    with handle:
        with _reading(filename):
            head = handle.read(1024)
            if not head:
                raise ActionError(f"cannot read PDF {filename}: the file is empty", retryable=False)
            # The PDF standard allows the header anywhere in the first 1024 bytes.
            if b"%PDF-" not in head:
                raise ActionError(f"cannot read PDF {filename}: not a PDF file (no %PDF header)", retryable=False)
            handle.seek(0)
            # Given a path, PdfReader reads the whole file into memory; given an open file it reads what it needs.
            from pypdf import PasswordType, PdfReader

            reader = PdfReader(handle)
            if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise ActionError(f"cannot read PDF {filename}: it is protected by a password", retryable=False)
        # Outside _reading: a failure in the caller's block is not the file's fault.
        try:
            yield _Pdf(reader, filename, ocr)
        finally:
            if ocr is not None:
                ocr.close()


class _Pdf:
    """An open PDF whose pages' text is extracted (or read by OCR) once each, when first needed."""

    def __init__(self, reader: PdfReader, filename: str, ocr: PageReader | None = None):
        self.reader = reader
        self.filename = filename
        self.ocr = ocr
        self._plain: dict[int, str] = {}
        self._ocr_text: dict[int, str] = {}

    @property
    def ocr_pages(self) -> list[int]:
        """The numbers (from 1) of the pages read by OCR so far."""
        return [index + 1 for index in sorted(self._ocr_text)]

    def __len__(self) -> int:
        with _reading(self.filename):
            return len(self.reader.pages)

    def text(self, index: int, layout: bool = False) -> str:
        """Page ``index``'s text; ``layout`` keeps columns apart at some extra cost.

        OCR has one text for both: Tesseract already prints a page's columns apart, as blocks.
        """
        if index in self._ocr_text:
            return self._ocr_text[index]
        if self.ocr is not None and self.ocr.mode == "always":
            return self._read_by_ocr(index)
        if not layout and index in self._plain:
            return self._plain[index]
        with _reading(self.filename):
            page = self.reader.pages[index]
            text = page.extract_text(extraction_mode="layout") if layout else page.extract_text()
        if not layout:
            self._plain[index] = text
        if not text.strip() and self.ocr is not None and self.ocr.mode == "auto" and self.ocr.has_marks(index):
            return self._read_by_ocr(index)
        return text

    def has_text(self) -> bool:
        """Whether any page has a text layer (or was read by OCR)."""
        return any(self.text(index).strip() for index in range(len(self)))

    def _read_by_ocr(self, index: int) -> str:
        text = self._ocr_text[index] = self.ocr.read(index)
        logger.info("%s: page %d read by OCR, %d characters", self.filename, index + 1, len(text))
        return text

    def form_values(self) -> dict[str, str]:
        """AcroForm values ("" when empty) by field name, both fully qualified and by their last part."""
        with _reading(self.filename):
            fields = self.reader.get_fields() or {}
            raw = {name: field.get("/V") for name, field in fields.items()}
        values: dict[str, str] = {}
        for name, value in raw.items():
            text = _field_text(value)
            # Form designers qualify names ("form1[0].page1[0].email[0]"); templates name the last part.
            for key in (name, re.sub(r"\[\d+\]$", "", name.rsplit(".", 1)[-1])):
                if not values.get(key):  # a value wins over an empty field of the same short name
                    values[key] = text
        return values


def _field_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(filter(None, (_field_text(item) for item in value)))
    if value is None or value == "/Off":
        return ""
    from pypdf.generic import NameObject

    # Check boxes and radio buttons hold names such as /Yes.
    text = str(value)[1:] if isinstance(value, NameObject) else str(value)
    return " ".join(text.split())


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _detect(templates: dict[str, PdfTemplate], form: dict[str, str], pdf: _Pdf) -> PdfTemplate:
    """The template whose header text the form's fields or, first found, its pages carry."""
    in_form = _norm(" ".join([*form, *form.values()]))
    for template in templates.values():
        if _norm(template.match) in in_form:
            return template
    for index in range(len(pdf)):
        text = _norm(pdf.text(index))
        hits = [(text.find(_norm(t.match)), t.id) for t in templates.values() if _norm(t.match) in text]
        if hits:
            # The header comes first; a later mention of another company's form is not its header.
            return templates[min(hits)[1]]
    if not pdf.has_text():
        # Before "no template matches": the cause is the missing text, not the form.
        if pdf.ocr is None or pdf.ocr.mode == "never":
            how = "ocr is 'never'"
        else:
            how = "OCR found no words either" if pdf.ocr_pages else "its pages are blank"
        raise ActionError(f"cannot read PDF {pdf.filename}: no text layer was found ({how})", retryable=False)
    raise ActionError(f"no template matches {pdf.filename}; known templates: {', '.join(templates)}", retryable=False)


@lru_cache(maxsize=64)
def _labels(labels: tuple[str, ...]) -> _Labels:
    return _Labels(labels)


class _Labels:
    """Finds a template's labels in lines of text: whole words, any case and spacing, longest first."""

    def __init__(self, labels: tuple[str, ...]):
        parts = []
        for label in sorted(labels, key=len, reverse=True):
            body = r"\s+".join(re.escape(word) for word in label.split())
            parts.append(body + (r"(?!\w)" if label[-1].isalnum() else ""))
        # The shared look-behind outside the alternation is tested once per position, not once per label.
        self._pattern = re.compile(rf"(?<!\w)(?:{'|'.join(parts)})", re.IGNORECASE)
        # Most lines hold no label; a substring test on each label's first word skips them at a fraction
        # of the regex's cost.
        self._first_words = {label.split()[0].lower() for label in labels}

    def find(self, line: str) -> list[re.Match]:
        """The labels in ``line``, left to right."""
        lowered = line.lower()
        if not any(word in lowered for word in self._first_words):
            return []
        return list(self._pattern.finditer(line))


def _first_cell(text: str, start: int = 0, end: int | None = None) -> str:
    """The first run of words in ``text`` that begins in the column range [start, end)."""
    for cell in _CELL.finditer(text):
        if cell.start() >= start - _COLUMN_SLACK and (end is None or cell.start() < end - _COLUMN_SLACK):
            return cell.group()
    return ""


def _read_labels(pdf: _Pdf, template: PdfTemplate) -> dict[str, str]:
    """Each field's value: the text after its label on the same line, else on the next non-empty line."""
    out_by_label = {_norm(spec.label): out for out, spec in template.fields.items()}
    labels = _labels(tuple(spec.label for spec in template.fields.values()))
    found: dict[str, str] = {}
    # Labels whose value should be on the next non-empty line, with the column range each one heads.
    pending: list[tuple[str, int, int | None]] = []
    for index in range(len(pdf)):
        lines = pdf.text(index).splitlines()
        matches = [labels.find(line) for line in lines]
        # Plain extraction runs side-by-side columns into one line of text; layout mode keeps them apart
        # by position. It costs about 15% more, so only pages with labels side by side (or values still
        # expected under a right-hand label) pay for it.
        if any(start for _, start, _ in pending) or any(len(line_matches) > 1 for line_matches in matches):
            lines = pdf.text(index, layout=True).splitlines()
            matches = [labels.find(line) for line in lines]
        for line, line_matches in zip(lines, matches, strict=True):
            if not line.strip():
                continue
            if pending:
                head = line[: line_matches[0].start()] if line_matches else line
                for out, start, end in pending:
                    value = _first_cell(head, start, end)
                    if value:
                        found.setdefault(out, value)
                pending = []
            for number, match in enumerate(line_matches):
                out = out_by_label[_norm(match.group())]
                end = line_matches[number + 1].start() if number + 1 < len(line_matches) else None
                if out in found:
                    continue
                value = _first_cell(line[match.end() : end])
                if value:
                    found[out] = value
                else:
                    pending.append((out, match.start() if number else 0, end))
            if len(found) == len(out_by_label) and not pending:
                # Every label has its value; the first occurrence wins, so later pages cannot change it.
                return found
    return found


def _nest(flat: dict[str, str]) -> dict:
    """Turn dotted paths into nested dicts: {"a.b": 1} -> {"a": {"b": 1}}."""
    nested: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested
