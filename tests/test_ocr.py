"""OCR of scanned PDFs (actions/ocr.py) through pdf_text and extract_pdf_data, with the real Tesseract."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from actions.base import ActionError, RunContext
from actions.extract_pdf_data import ExtractPDFDataAction
from actions.pdf_text import PdfTextAction
from app.core.config import load_settings
from app.errors import ConfigError
from tests import pdf_factory
from tests.pdf_factory import VALID, nested


def run(action_type, file: Path, settings: dict | None = None, **config) -> dict:
    """Execute the action on ``file`` with WORKFLOW_FILES_ROOT its folder, as the engine would."""
    action = action_type("read", file=str(file), **config)
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(file.parent), **(settings or {})},
                                step_timeout=(settings or {}).pop("step_timeout", None))
    return action.execute({})


def failure(action_type, file: Path, settings: dict | None = None, **config) -> ActionError:
    with pytest.raises(ActionError) as caught:
        run(action_type, file, settings, **config)
    assert caught.value.retryable is False
    return caught.value


@pytest.fixture
def scan(tmp_path) -> Path:
    """A scanned company_a application: its page is a picture, with no text layer."""
    return pdf_factory.scanned_pdf(tmp_path / "scan.pdf", pdf_factory.text_pdf(tmp_path / "typed.pdf"))


def test_auto_reads_only_the_pages_without_a_text_layer(tmp_path, tesseract):
    typed = pdf_factory.lines_pdf(tmp_path / "typed.pdf", [["Typed page one"], ["Scanned page two"]])
    scanned = pdf_factory.scanned_pdf(tmp_path / "scanned.pdf", typed)
    writer = PdfWriter()
    writer.add_page(PdfReader(typed).pages[0])
    writer.add_page(PdfReader(scanned).pages[1])
    writer.write(tmp_path / "mixed.pdf")

    result = run(PdfTextAction, tmp_path / "mixed.pdf")
    assert result["text"] == "Typed page one\fScanned page two"
    assert result["pages"] == 2 and result["ocr_pages"] == [2]


def test_a_blank_page_needs_no_ocr_so_no_tesseract(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract anywhere
    blank = pdf_factory.lines_pdf(tmp_path / "blank.pdf", [[]])
    assert run(PdfTextAction, blank) == {"text": "", "pages": 1, "source": "blank.pdf", "ocr_pages": []}


def test_always_reads_a_typed_page_too(tmp_path, tesseract):
    typed = pdf_factory.lines_pdf(tmp_path / "typed.pdf", [["Read by Tesseract anyway"]])
    assert run(PdfTextAction, typed, ocr="always") == {
        "text": "Read by Tesseract anyway", "pages": 1, "source": "typed.pdf", "ocr_pages": [1]}


def test_never_on_a_scan_says_no_text_layer_was_found(scan):
    assert str(failure(PdfTextAction, scan, ocr="never")) == (
        "pdf_text: no text layer was found in scan.pdf and ocr is 'never' "
        "(set ocr to auto to read scanned pages with Tesseract)")
    assert str(failure(ExtractPDFDataAction, scan, ocr="never")) == (
        "cannot read PDF scan.pdf: no text layer was found (ocr is 'never')")


def test_a_scan_gives_the_same_fields_as_the_typed_application(tmp_path, scan, tesseract):
    typed = run(ExtractPDFDataAction, tmp_path / "typed.pdf")
    scanned = run(ExtractPDFDataAction, scan)
    assert scanned["extracted_data"] == typed["extracted_data"] == nested(VALID["company_a"])
    assert (scanned["template"], scanned["method"], scanned["ocr_pages"], scanned["missing"]) == (
        "company_a", "ocr", [1], [])
    assert (typed["method"], typed["ocr_pages"]) == ("text", [])


@pytest.mark.parametrize("action_type", [PdfTextAction, ExtractPDFDataAction])
def test_without_tesseract_the_step_says_how_to_install_it(scan, monkeypatch, action_type):
    monkeypatch.setenv("PATH", str(scan.parent))
    error = str(failure(action_type, scan))
    assert error == (f"{action_type.type}: page 1 of scan.pdf has no text layer and needs OCR, but Tesseract is not "
                     "installed: apt-get install tesseract-ocr (Debian, Ubuntu), dnf install tesseract, "
                     "or brew install tesseract")


def test_a_language_tesseract_lacks_names_its_package(scan, tesseract):
    error = str(failure(PdfTextAction, scan, {"OCR_LANGUAGES": "eng+xyz"}))
    assert error == ("pdf_text: Tesseract has no data for xyz (OCR_LANGUAGES=eng+xyz), needed for page 1 of "
                     "scan.pdf: apt-get install tesseract-ocr-xyz")


def test_more_pages_than_the_setting_allows_fail_naming_it(tmp_path, tesseract):
    typed = pdf_factory.lines_pdf(tmp_path / "typed.pdf", [["one"], ["two"]])
    scanned = pdf_factory.scanned_pdf(tmp_path / "two.pdf", typed)
    assert str(failure(PdfTextAction, scanned, {"WORKFLOW_MAX_OCR_PAGES": 1})) == (
        "pdf_text: two.pdf needs OCR on more than 1 pages (WORKFLOW_MAX_OCR_PAGES); split the PDF or raise the "
        "setting")


def test_tesseract_is_stopped_at_the_step_timeout(scan, tesseract):
    error = str(failure(PdfTextAction, scan, {"step_timeout": 0.01}))
    assert error == "pdf_text: OCR of page 1 of scan.pdf passed the step timeout (0.01 s); Tesseract was stopped"


def test_a_cancelled_run_stops_tesseract(scan, tesseract):
    action = PdfTextAction("read", file=str(scan))
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(scan.parent)})
    threading.Timer(0.3, action.context.cancel_event.set).start()
    with pytest.raises(ActionError, match=r"^pdf_text: cancelled during OCR of page 1 of scan.pdf$"):
        action.execute({})


@pytest.mark.parametrize("action_type", [PdfTextAction, ExtractPDFDataAction])
def test_the_ocr_option_is_checked_when_given_and_when_rendered(tmp_path, action_type):
    with pytest.raises(ValueError, match=r"ocr must be auto, always or never, got 'sometimes'"):
        action_type("read", file="a.pdf", ocr="sometimes")
    action = action_type("read", file=str(tmp_path / "a.pdf"), ocr="{{ inputs.ocr }}")
    action.ocr = "sometimes"  # as rendered
    pdf_factory.text_pdf(tmp_path / "a.pdf")
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(tmp_path)})
    with pytest.raises(ActionError, match=rf"^{action_type.type}: ocr must be auto, always or never"):
        action.execute({})


def test_ocr_languages_setting():
    assert load_settings({})["OCR_LANGUAGES"] == "eng"
    assert load_settings({"OCR_LANGUAGES": "eng, deu"})["OCR_LANGUAGES"] == "eng+deu"
    assert load_settings({"OCR_LANGUAGES": "chi_sim+script/Latin"})["OCR_LANGUAGES"] == "chi_sim+script/Latin"
    with pytest.raises(ConfigError, match=r"OCR_LANGUAGES must be Tesseract language names .* got 'eng; rm'"):
        load_settings({"OCR_LANGUAGES": "eng; rm"})


def test_a_definition_with_an_unknown_ocr_mode_is_refused_naming_the_step(client):
    response = client.post("/api/workflows", json={"name": "scans", "steps": [
        {"name": "read", "type": "pdf_text", "config": {"file": "{{ inputs.file }}", "ocr": "sometimes"}}]})
    assert response.status_code == 422
    [problem] = response.get_json()["error"]["details"]
    assert problem["path"].startswith("steps[0]")
    assert "ocr must be auto, always or never, got 'sometimes'" in problem["message"]
