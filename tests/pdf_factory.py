"""Test PDFs written on demand: text and AcroForm applications for company A and B, and broken files.

The forms are written out here as the companies print them, not derived from pdf_templates/, so the
tests also check that the templates' labels and field names fit real forms.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    BooleanObject,
    DictionaryObject,
    FloatObject,
    NameObject,
    NumberObject,
    TextStringObject,
)

logger = logging.getLogger(__name__)

# company -> (header, [(output path, printed label, AcroForm field name)])
FORMS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "company_a": (
        "Company A Insurance Application",
        [
            ("full_name", "Full Name:", "full_name"),
            ("date_of_birth", "Date of Birth:", "date_of_birth"),
            ("address", "Address:", "address"),
            ("phone_number", "Phone Number:", "phone_number"),
            ("email", "Email:", "email"),
        ],
    ),
    "company_b": (
        "Company B Insurance Application",
        [
            ("personalInfo.firstName", "First Name:", "first_name"),
            ("personalInfo.lastName", "Last Name:", "last_name"),
            ("personalInfo.dateOfBirth", "Date of Birth:", "date_of_birth"),
            ("personalInfo.phoneNumber", "Phone Number:", "phone_number"),
            ("personalInfo.email", "Email:", "email"),
            ("insuranceInfo.policyNumber", "Policy Number:", "policy_number"),
            ("insuranceInfo.policyType", "Policy Type:", "policy_type"),
        ],
    ),
}

# Valid answers by output path.
VALID: dict[str, dict[str, str]] = {
    "company_a": {
        "full_name": "Jane Doe",
        "date_of_birth": "1985-03-15",
        "address": "12 Main Street, Springfield",
        "phone_number": "+1 555 0100",
        "email": "jane.doe@example.com",
    },
    "company_b": {
        "personalInfo.firstName": "John",
        "personalInfo.lastName": "Smith",
        "personalInfo.dateOfBirth": "1979-11-02",
        "personalInfo.phoneNumber": "+44 20 7946 0000",
        "personalInfo.email": "john.smith@example.org",
        "insuranceInfo.policyNumber": "B-2024-0042",
        "insuranceInfo.policyType": "health",
    },
}

FILLER = "The applicant declares that the answers given are true and complete to the best of their knowledge."
LAYOUTS = ("lines", "next_line", "two_column", "two_column_next_line")


def nested(flat: dict[str, str]) -> dict:
    """Dotted paths to nested dicts, as the extract step reports them."""
    out: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def answers(company: str, overrides: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """The valid answers with some replaced; None leaves a field (and its label) out."""
    return {**VALID[company], **(overrides or {})}


def _new_pdf() -> FPDF:
    pdf = FPDF(format="A4")
    # A fixed date keeps the files byte-identical from run to run.
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=11)
    return pdf


def _header(pdf: FPDF, text: str) -> None:
    pdf.set_font("Helvetica", "B", 16)
    pdf.text(20, 25, text)
    pdf.set_font("Helvetica", size=11)


def text_pdf(
    path: Path,
    company: str = "company_a",
    overrides: dict[str, str | None] | None = None,
    *,
    layout: str = "lines",
    pages: int = 1,
    filler_lines: int = 8,
    header: bool = True,
) -> Path:
    """Write a printed (text-only) application; fields are spread over ``pages`` pages between filler text.

    Layouts: "lines" (``Label: value``), "next_line" (value on the line below its label), "two_column"
    (two labels side by side) and "two_column_next_line" (side by side, values below).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    title, fields = FORMS[company]
    values = answers(company, overrides)
    items = [(label, values[out]) for out, label, _ in fields if values[out] is not None]
    # Split the fields as evenly as possible over the pages, the last page getting the last field.
    chunks = [items[len(items) * page // pages : len(items) * (page + 1) // pages] for page in range(pages)]
    pdf = _new_pdf()
    for number, chunk in enumerate(chunks):
        pdf.add_page()
        if header and number == 0:
            _header(pdf, title)
        y = 40.0
        for _ in range(filler_lines // 2):
            pdf.text(20, y, FILLER)
            y += 6
        y += 4
        columns = 2 if layout.startswith("two_column") else 1
        for row in range(0, len(chunk), columns):
            for column, (label, value) in enumerate(chunk[row : row + columns]):
                x = 20 + column * 95
                if layout.endswith("next_line"):
                    pdf.text(x, y, label)
                    pdf.text(x, y + 6, value)
                else:
                    pdf.text(x, y, f"{label} {value}".rstrip())
            y += 14 if layout.endswith("next_line") else 8
        for _ in range(filler_lines - filler_lines // 2):
            pdf.text(20, y, FILLER)
            y += 6
        pdf.text(180, 285, f"Page {number + 1} of {pages}")
    pdf.output(str(path))
    return path


def form_pdf(
    path: Path,
    company: str = "company_a",
    overrides: dict[str, str | None] | None = None,
    *,
    filled: bool = True,
    header: bool = True,
) -> Path:
    """Write an AcroForm application: labels printed on the page, answers in the text fields.

    ``filled=False`` leaves every field empty, as a form sent back unanswered. Under the fields a "Submit"
    caption is printed, as LaTeX (hyperref) forms print their buttons' captions.
    """
    title, fields = FORMS[company]
    values = answers(company, overrides)
    pdf = _new_pdf()
    pdf.add_page()
    if header:
        _header(pdf, title)
    rows = []
    for number, (out, label, name) in enumerate(fields):
        y = 45 + number * 12
        pdf.text(20, y, label)
        rows.append((name, values[out] if filled else None, y))
    pdf.text(20, 45 + len(fields) * 12, "Submit")

    writer = PdfWriter(clone_from=io.BytesIO(bytes(pdf.output())))
    page_height = float(writer.pages[0].mediabox.height)
    refs = ArrayObject()
    for name, value, y in rows:
        top = page_height - y * 72 / 25.4  # fpdf2 measures mm from the top, PDF points from the bottom
        widget = writer.add_annotation(
            0,
            DictionaryObject(
                {
                    NameObject("/Type"): NameObject("/Annot"),
                    NameObject("/Subtype"): NameObject("/Widget"),
                    NameObject("/FT"): NameObject("/Tx"),
                    NameObject("/T"): TextStringObject(name),
                    NameObject("/V"): TextStringObject(value or ""),
                    NameObject("/Rect"): ArrayObject(FloatObject(v) for v in (170, top - 4, 500, top + 12)),
                    NameObject("/F"): NumberObject(4),
                    NameObject("/DA"): TextStringObject("/Helv 10 Tf 0 g"),
                }
            ),
        )
        refs.append(widget.indirect_reference)
    writer.root_object[NameObject("/AcroForm")] = DictionaryObject(
        {
            NameObject("/Fields"): refs,
            # Viewers draw the values themselves; readers such as ours only need /V.
            NameObject("/NeedAppearances"): BooleanObject(True),
        }
    )
    writer.write(path)
    return path


def encrypted_pdf(path: Path, company: str = "company_a", *, user_password: str = "") -> Path:
    """Write a text application encrypted with RC4 (no extra crypto package needed to read it)."""
    plain = text_pdf(path, company)
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password, owner_password="owner-secret", algorithm="RC4-128")
    writer.write(path)
    return path


def corrupt_pdf(path: Path) -> Path:
    """Write a file that starts like a PDF and then breaks off."""
    good = text_pdf(path).read_bytes()
    path.write_bytes(good[:200] + b"\x00garbage\xff" * 20)
    return path


def empty_file(path: Path) -> Path:
    """Write a 0-byte file."""
    path.write_bytes(b"")
    return path


def not_a_pdf(path: Path) -> Path:
    """Write a plain text file (named as the caller likes, e.g. application.pdf)."""
    path.write_text("Company A Insurance Application\nFull Name: Jane Doe\n", encoding="utf-8")
    return path


def lines_pdf(path: Path, pages: list[list[str]]) -> Path:
    """Write the given lines, one list per page, top to bottom: for layouts the other helpers do not make."""
    pdf = _new_pdf()
    for lines in pages:
        pdf.add_page()
        for number, line in enumerate(lines):
            pdf.text(20, 25 + number * 8, line)
    pdf.output(str(path))
    return path


def scanned_pdf(path: Path, source: Path, dpi: int = 300) -> Path:
    """Write ``source``'s pages as pictures only, as a scanner makes them: no text layer, no form fields."""
    import pypdfium2

    document = pypdfium2.PdfDocument(str(source))
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))
    try:
        for page in document:
            picture = page.render(scale=dpi / 72, grayscale=True).to_pil()
            pdf.add_page()
            pdf.image(picture, x=0, y=0, w=pdf.w, h=pdf.h)
    finally:
        document.close()
    pdf.output(str(path))
    return path
