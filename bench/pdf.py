"""Benchmark: ExtractPDFDataAction.execute beside pypdf's own text extraction, on generated applications.

Run as ``python bench/pdf.py``; prints one JSON object. ``ratio`` is our time over pypdf's (target <= 1.2).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run from anywhere: the repository root holds actions/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pypdf  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from actions.extract_pdf_data import ExtractPDFDataAction  # noqa: E402
from tests.pdf_factory import text_pdf  # noqa: E402

logger = logging.getLogger(__name__)

ROUNDS = 9


def _seconds_per_call(work, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - start) / repeat


def _pypdf_text(path: Path) -> None:
    reader = PdfReader(path)
    for page in reader.pages:
        page.extract_text()


def bench(path: Path, repeat: int) -> dict:
    """Time both readers on one file; the template is detected, as in the demo workflow."""
    action = ExtractPDFDataAction("extract", file=str(path))
    result = action.execute({})
    if result["missing"]:
        raise SystemExit(f"benchmark file {path.name} lost fields: {result['missing']}")
    _pypdf_text(path)  # warm both paths (imports, caches) before timing
    ours, theirs, ratios = [], [], []
    for _ in range(ROUNDS):
        # Alternating rounds see the same machine load, so their ratio is steadier than either time.
        ours.append(_seconds_per_call(lambda: action.execute({}), repeat))
        theirs.append(_seconds_per_call(lambda: _pypdf_text(path), repeat))
        ratios.append(ours[-1] / theirs[-1])
    return {
        "pages": len(PdfReader(path).pages),
        "ours_pdfs_per_s": round(1 / statistics.median(ours), 2),
        "pypdf_pdfs_per_s": round(1 / statistics.median(theirs), 2),
        "ratio": round(statistics.median(ratios), 3),
    }


def main() -> None:
    """Generate the two applications in a temporary folder and print the measurements."""
    with tempfile.TemporaryDirectory() as folder:
        # The last field sits on the last page, so no reader may stop early.
        one = text_pdf(Path(folder) / "one_page.pdf", "company_b")
        fifty = text_pdf(Path(folder) / "fifty_pages.pdf", "company_b", pages=50, filler_lines=30)
        report = {
            "benchmark": "extract_pdf_data",
            "pypdf": pypdf.__version__,
            "python": sys.version.split()[0],
            "rounds": ROUNDS,
            "statistic": "median of rounds; ratio = median of per-round ours/pypdf time",
            "target_ratio": 1.2,
            "one_page": bench(one, repeat=60),
            "fifty_pages": bench(fifty, repeat=2),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
