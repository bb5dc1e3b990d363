"""Write the demo's sample applications next to this script: ``python samples/make_samples.py``.

application_company_a.pdf is a complete, valid Company A application; application_company_b_invalid.pdf
is a Company B application with a wrongly written date of birth, a bad e-mail address and an unknown
policy type, so the demo shows both outcomes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

SAMPLES = {
    "application_company_a.pdf": (
        "Company A Insurance Application",
        [
            ("Full Name:", "Jane Doe"),
            ("Date of Birth:", "1985-03-15"),
            ("Address:", "12 Main Street, Springfield"),
            ("Phone Number:", "+1 555 0100"),
            ("Email:", "jane.doe@example.com"),
        ],
    ),
    "application_company_b_invalid.pdf": (
        "Company B Insurance Application",
        [
            ("First Name:", "John"),
            ("Last Name:", "Smith"),
            ("Date of Birth:", "15/03/1985"),
            ("Phone Number:", "+44 20 7946 0000"),
            ("Email:", "john.smith(at)example"),
            ("Policy Number:", "B-2024-0042"),
            ("Policy Type:", "car"),
        ],
    ),
}


def write_sample(path: Path, header: str, fields: list[tuple[str, str]]) -> Path:
    """Write one single-page application: a header, then one ``Label: value`` line per field."""
    pdf = FPDF(format="A4")
    # A fixed date keeps the committed files unchanged when the script is run again.
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 12, header, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, "Please answer every question. Write dates as YYYY-MM-DD.", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for label, value in fields:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(40, 9, label)
        pdf.set_font("Helvetica", size=11)
        pdf.cell(0, 9, value, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def main() -> None:
    """Write every sample and say where."""
    for name, (header, fields) in SAMPLES.items():
        path = write_sample(HERE / name, header, fields)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
