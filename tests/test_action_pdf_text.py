"""PdfTextAction on PDFs written by tests/pdf_factory.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.base import ActionError, RunContext
from actions.pdf_text import PdfTextAction
from tests import pdf_factory
from workflows.catalog import action_types

# The test's tmp_path, which these tests make WORKFLOW_FILES_ROOT: the action reads only inside it.
ROOT: list[Path] = []


@pytest.fixture(autouse=True)
def files_root(tmp_path):
    ROOT[:] = [tmp_path]
    return tmp_path


def read(file) -> dict:
    action = PdfTextAction("text", file=file)
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(ROOT[0])})
    return action.execute({})


def test_every_page_in_order(tmp_path):
    path = pdf_factory.lines_pdf(tmp_path / "two.pdf", [["First page", "second line"], ["Second page"]])
    result = read(str(path))
    assert result["pages"] == 2
    assert result["source"] == "two.pdf"
    first, second = result["text"].split("\f")
    assert first.splitlines() == ["First page", "second line"]
    assert second == "Second page"


def test_the_first_pdf_attachment_is_read(tmp_path):
    path = pdf_factory.lines_pdf(tmp_path / "upload-1.pdf", [["Uploaded"]])
    attachments = [{"filename": "notes.txt", "content_type": "text/plain", "path": str(tmp_path / "notes.txt")},
                   {"filename": "scan.pdf", "content_type": "application/pdf", "path": str(path)}]
    assert read(attachments) == {"text": "Uploaded", "pages": 1, "source": "scan.pdf", "ocr_pages": []}


def test_a_page_without_text_is_empty(tmp_path):
    path = pdf_factory.lines_pdf(tmp_path / "blank.pdf", [[]])
    assert read(str(path)) == {"text": "", "pages": 1, "source": "blank.pdf", "ocr_pages": []}


@pytest.mark.parametrize(("make", "words"), [
    (pdf_factory.not_a_pdf, ["not a PDF"]),
    (pdf_factory.empty_file, ["empty"]),
    (lambda path: path, ["no such file"]),
])
def test_unreadable_files_are_not_retried(tmp_path, make, words):
    path = make(tmp_path / "bad.pdf")
    with pytest.raises(ActionError) as caught:
        read(str(path))
    assert caught.value.retryable is False
    assert all(word in str(caught.value) for word in words)


@pytest.mark.parametrize("file", [None, "", []])
def test_nothing_to_read(file):
    action = PdfTextAction("text", file="{{ inputs.file }}")
    action.file = file  # as the engine leaves it when the template found nothing
    with pytest.raises(ActionError, match="no file to read") as caught:
        action.execute({})
    assert caught.value.retryable is False


def test_registered_as_pdf_text():
    assert action_types().get("pdf_text") is PdfTextAction
