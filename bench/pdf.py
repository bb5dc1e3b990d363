"""Benchmark: ExtractPDFDataAction.execute beside pypdf's own text extraction, on generated applications;
and OCR of scanned pages through pdf_text beside the ``tesseract`` program run directly on the same images.

Run as ``python bench/pdf.py``; prints one JSON object. ``ratio`` is our time over pypdf's, or over
tesseract's (target <= 1.2 for both). The OCR part needs Debian's tesseract-ocr; without it it is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run from anywhere: the repository root holds actions/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pypdf  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from actions.base import RunContext  # noqa: E402
from actions.extract_pdf_data import ExtractPDFDataAction  # noqa: E402
from actions.ocr import DPI  # noqa: E402
from actions.pdf_text import PdfTextAction  # noqa: E402
from tests.pdf_factory import scanned_pdf, text_pdf  # noqa: E402

logger = logging.getLogger(__name__)

ROUNDS = 9
# An OCR round takes seconds: fewer of them.
OCR_ROUNDS = 5


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
    # Actions read only inside WORKFLOW_FILES_ROOT.
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(path.parent)})
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


def _page_images(path: Path, folder: Path) -> list[Path]:
    """The scan's pages drawn as pdf_text draws them (grey, DPI), saved as PNG files as a user would OCR them."""
    import pypdfium2

    document = pypdfium2.PdfDocument(str(path))
    images = []
    for number, page in enumerate(document):
        image = folder / f"page-{number + 1}.png"
        page.render(scale=DPI / 72, grayscale=True).to_pil().save(image, dpi=(DPI, DPI))
        images.append(image)
    document.close()
    return images


def bench_ocr(path: Path, folder: Path) -> dict:
    """pdf_text with OCR on a scanned PDF beside ``tesseract page.png stdout`` on each of its pages' images."""
    tesseract = shutil.which("tesseract")
    action = PdfTextAction("text", file=str(path), ocr="always")
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(folder)})
    images = _page_images(path, folder)
    # The same thread limit as pdf_text sets: OpenMP's threads slow Tesseract down on a shared machine.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def theirs() -> None:
        for image in images:
            subprocess.run([tesseract, str(image), "stdout", "-l", "eng"], env=env, check=True,
                           capture_output=True)

    pages = action.execute({})["pages"]  # warm: imports, the page cache of the file
    ours_s, theirs_s, ratios = [], [], []
    for _ in range(OCR_ROUNDS):
        ours_s.append(_seconds_per_call(lambda: action.execute({}), 1))
        theirs_s.append(_seconds_per_call(theirs, 1))
        ratios.append(ours_s[-1] / theirs_s[-1])
    return {
        "pages": pages,
        "dpi": DPI,
        "ours_pages_per_s": round(pages / statistics.median(ours_s), 3),
        "tesseract_pages_per_s": round(pages / statistics.median(theirs_s), 3),
        "ratio": round(statistics.median(ratios), 3),
    }


def _tesseract_version() -> str:
    done = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).split("\n", 1)[0]


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
        if shutil.which("tesseract"):
            # Three dense pages, scanned: every page needs OCR.
            typed = text_pdf(Path(folder) / "typed.pdf", "company_b", pages=3, filler_lines=30)
            scan = scanned_pdf(Path(folder) / "scanned.pdf", typed)
            report["ocr"] = {
                "tesseract": _tesseract_version(),
                "rounds": OCR_ROUNDS,
                "statistic": "median of rounds; ratio = median of per-round ours/tesseract time",
                **bench_ocr(scan, Path(folder)),
            }
        else:
            report["ocr"] = "skipped: tesseract is not installed (apt-get install tesseract-ocr)"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
