"""ExtractPDFDataAction and the PDF templates it reads, on PDFs written by tests/pdf_factory.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from actions.base import ActionError, RunContext
from actions.extract_pdf_data import ExtractPDFDataAction
from actions.pdf_templates import DEFAULT_TEMPLATES_DIR, TemplateError, load_templates
from tests import pdf_factory
from tests.pdf_factory import VALID, nested

COMPANIES = ["company_a", "company_b"]


# The test's tmp_path, which these tests make WORKFLOW_FILES_ROOT: the action reads only inside it.
ROOT: list[Path] = []


@pytest.fixture(autouse=True)
def files_root(tmp_path):
    ROOT[:] = [tmp_path]
    return tmp_path


def extract(file, **config) -> dict:
    """Run the action once, as the engine would after rendering its config."""
    action = ExtractPDFDataAction("extract", file=file, **config)
    action.context = RunContext(settings={"WORKFLOW_FILES_ROOT": str(ROOT[0])})
    return action.execute({})


def assert_complete(result: dict, company: str, method: str = "text") -> None:
    assert result["template"] == company
    assert result["method"] == method
    assert result["extracted_data"] == nested(VALID[company])
    assert result["missing"] == []


def assert_unreadable(excinfo: pytest.ExceptionInfo, *words: str) -> None:
    message = str(excinfo.value)
    assert excinfo.value.retryable is False
    assert "\n" not in message
    for word in words:
        assert word in message


# --- text PDFs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", pdf_factory.LAYOUTS)
@pytest.mark.parametrize("company", COMPANIES)
def test_text_layouts_detect_the_template_and_read_every_field(tmp_path, company, layout):
    path = pdf_factory.text_pdf(tmp_path / "application.pdf", company, layout=layout)
    result = extract(str(path))
    assert_complete(result, company)
    assert result["source"] == "application.pdf"


@pytest.mark.parametrize(("layout", "pages"), [("lines", 3), ("next_line", 7), ("two_column", 4)])
@pytest.mark.parametrize("company", COMPANIES)
def test_fields_spread_over_pages(tmp_path, company, layout, pages):
    path = pdf_factory.text_pdf(tmp_path / "long.pdf", company, layout=layout, pages=pages)
    assert_complete(extract(str(path)), company)


def test_value_on_the_next_page(tmp_path):
    path = pdf_factory.lines_pdf(
        tmp_path / "split.pdf",
        [
            ["Company A Insurance Application", "Full Name: Jane Doe", "Date of Birth: 1985-03-15", "Address:"],
            ["12 Main Street, Springfield", "Phone Number: +1 555 0100", "Email: jane.doe@example.com"],
        ],
    )
    assert_complete(extract(str(path)), "company_a")


def test_labels_in_any_case_and_spacing(tmp_path):
    path = pdf_factory.lines_pdf(
        tmp_path / "shouty.pdf",
        [
            [
                "COMPANY A INSURANCE APPLICATION",
                "FULL NAME:   Jane Doe",
                "date of  birth: 1985-03-15",
                "Address: 12 Main Street, Springfield",
                "Phone number: +1 555 0100",
                "EMAIL: jane.doe@example.com",
            ]
        ],
    )
    assert_complete(extract(str(path)), "company_a")


def test_the_first_answer_wins_over_a_later_repeat(tmp_path):
    path = pdf_factory.lines_pdf(
        tmp_path / "repeat.pdf",
        [
            ["Company A Insurance Application", "Full Name: Jane Doe", "Email: jane.doe@example.com"],
            ["Summary", "Full Name: Someone Else", "Email: other@example.com"],
        ],
    )
    data = extract(str(path))["extracted_data"]
    assert (data["full_name"], data["email"]) == ("Jane Doe", "jane.doe@example.com")


def test_dates_are_kept_as_written(tmp_path):
    path = pdf_factory.text_pdf(tmp_path / "a.pdf", overrides={"date_of_birth": "15/03/1985"})
    assert extract(str(path))["extracted_data"]["date_of_birth"] == "15/03/1985"


@pytest.mark.parametrize("layout", ["lines", "next_line"])
def test_absent_and_empty_fields_are_missing(tmp_path, layout):
    # address is printed with no answer, email is not printed at all
    path = pdf_factory.text_pdf(tmp_path / "a.pdf", overrides={"address": "", "email": None}, layout=layout)
    result = extract(str(path))
    assert result["missing"] == ["address", "email"]
    assert set(result["extracted_data"]) == {"full_name", "date_of_birth", "phone_number"}


def test_missing_nested_fields_leave_their_group_out(tmp_path):
    overrides = {"insuranceInfo.policyNumber": None, "insuranceInfo.policyType": None}
    path = pdf_factory.text_pdf(tmp_path / "b.pdf", "company_b", overrides)
    result = extract(str(path))
    assert "insuranceInfo" not in result["extracted_data"]
    assert result["missing"] == ["insuranceInfo.policyNumber", "insuranceInfo.policyType"]


# --- AcroForm PDFs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("company", COMPANIES)
def test_form_fields_come_first(tmp_path, company):
    path = pdf_factory.form_pdf(tmp_path / "form.pdf", company)
    assert_complete(extract(str(path)), company, method="form")


@pytest.mark.parametrize("company", COMPANIES)
def test_a_form_with_empty_fields_is_read_as_unanswered_not_from_the_printed_labels(tmp_path, company):
    # Read as text, the last label would take the "Submit" caption below it as its answer.
    path = pdf_factory.form_pdf(tmp_path / "blank.pdf", company, filled=False)
    result = extract(str(path))
    assert result["method"] == "form"
    assert result["extracted_data"] == {}
    assert result["missing"] == [out for out, _, _ in pdf_factory.FORMS[company][1]]


def test_a_partly_filled_form_reports_the_empty_fields(tmp_path):
    path = pdf_factory.form_pdf(tmp_path / "form.pdf", "company_b", {"personalInfo.email": ""})
    result = extract(str(path))
    assert result["method"] == "form"
    assert result["missing"] == ["personalInfo.email"]


# --- choosing the template ---------------------------------------------------------------------------


def test_explicit_company_is_used_even_without_a_header(tmp_path):
    path = pdf_factory.form_pdf(tmp_path / "form.pdf", "company_b", header=False)
    assert_complete(extract(str(path), company="company_b"), "company_b", method="form")


def test_explicit_company_wins_over_the_header(tmp_path):
    path = pdf_factory.text_pdf(tmp_path / "a.pdf", "company_a")
    result = extract(str(path), company="company_b")
    assert result["template"] == "company_b"
    # Only the labels both forms share are found.
    assert result["extracted_data"] == {
        "personalInfo": {"dateOfBirth": "1985-03-15", "phoneNumber": "+1 555 0100", "email": "jane.doe@example.com"}
    }
    assert "personalInfo.firstName" in result["missing"]


@pytest.mark.parametrize("company", ["", None])
def test_empty_company_means_detect(tmp_path, company):
    path = pdf_factory.text_pdf(tmp_path / "b.pdf", "company_b")
    assert extract(str(path), company=company)["template"] == "company_b"


def test_unknown_company(tmp_path):
    path = pdf_factory.text_pdf(tmp_path / "a.pdf")
    with pytest.raises(ActionError) as excinfo:
        extract(str(path), company="company_z")
    assert_unreadable(excinfo, "'company_z'", "company_a, company_b")


def test_no_template_matches(tmp_path):
    path = pdf_factory.text_pdf(tmp_path / "anonymous.pdf", header=False)
    with pytest.raises(ActionError) as excinfo:
        extract(str(path))
    assert str(excinfo.value) == "no template matches anonymous.pdf; known templates: company_a, company_b"
    assert excinfo.value.retryable is False


# --- files that cannot be read -----------------------------------------------------------------------


def test_encrypted_with_an_empty_password_is_read(tmp_path):
    path = pdf_factory.encrypted_pdf(tmp_path / "locked.pdf")
    assert_complete(extract(str(path)), "company_a")


def test_encrypted_with_a_password_is_refused(tmp_path):
    path = pdf_factory.encrypted_pdf(tmp_path / "locked.pdf", user_password="secret")
    with pytest.raises(ActionError) as excinfo:
        extract(str(path))
    assert_unreadable(excinfo, "cannot read PDF locked.pdf", "password")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (pdf_factory.corrupt_pdf, ""),
        (pdf_factory.empty_file, "empty"),
        (pdf_factory.not_a_pdf, "not a PDF"),
    ],
)
def test_unreadable_files(tmp_path, make, reason):
    path = make(tmp_path / "application.pdf")
    with pytest.raises(ActionError) as excinfo:
        extract(str(path))
    assert_unreadable(excinfo, "cannot read PDF application.pdf: ", reason)


def test_missing_file(tmp_path):
    with pytest.raises(ActionError) as excinfo:
        extract(str(tmp_path / "gone.pdf"))
    assert_unreadable(excinfo, "cannot read PDF gone.pdf", "no such file")


# --- attachments -------------------------------------------------------------------------------------


def attachment(path: Path, filename: str, content_type: str) -> dict:
    return {"filename": filename, "content_type": content_type, "size": path.stat().st_size, "path": str(path)}


def test_an_attachment_reports_its_original_filename(tmp_path):
    path = pdf_factory.text_pdf(tmp_path / "upload-3f2a", "company_b")
    result = extract(attachment(path, "application.pdf", "application/pdf"))
    assert result["source"] == "application.pdf"
    assert_complete(result, "company_b")


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("scan.PDF", "application/octet-stream"), ("scan", "application/pdf; name=scan")],
)
def test_the_first_pdf_of_a_list_is_read(tmp_path, filename, content_type):
    note = tmp_path / "note.txt"
    note.write_text("hello", encoding="utf-8")
    first = pdf_factory.text_pdf(tmp_path / "first", "company_b")
    second = pdf_factory.text_pdf(tmp_path / "second.pdf", "company_a")
    attachments = [
        attachment(note, "note.txt", "text/plain"),
        attachment(first, filename, content_type),
        attachment(second, "second.pdf", "application/pdf"),
    ]
    result = extract(attachments)
    assert (result["template"], result["source"]) == ("company_b", filename)


def test_a_list_without_a_pdf(tmp_path):
    files = []
    for name, content_type in [("a.txt", "text/plain"), ("b.png", "image/png")]:
        (tmp_path / name).write_bytes(b"x")
        files.append(attachment(tmp_path / name, name, content_type))
    with pytest.raises(ActionError) as excinfo:
        extract(files)
    assert str(excinfo.value) == "no PDF attachment among: a.txt, b.png"
    assert excinfo.value.retryable is False


def test_an_empty_list(tmp_path):
    with pytest.raises(ActionError, match="no PDF attachment"):
        extract([])


@pytest.mark.parametrize("file", [None, "", "  ", 42, b"a.pdf"])
def test_constructor_refuses_a_bad_file(file):
    with pytest.raises(ValueError, match="file must be"):
        ExtractPDFDataAction("extract", file=file)


def test_constructor_refuses_a_bad_company():
    with pytest.raises(ValueError, match="company must be"):
        ExtractPDFDataAction("extract", file="a.pdf", company=["company_a"])


def test_type_name():
    assert ExtractPDFDataAction.type == "extract_pdf_data"


# --- templates ---------------------------------------------------------------------------------------


@pytest.fixture
def templates_dir(tmp_path) -> Path:
    """A copy of the shipped templates to change."""
    folder = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, folder)
    return folder


def test_shipped_templates():
    templates = load_templates()
    assert list(templates) == COMPANIES
    assert templates["company_a"].match == "Company A Insurance Application"
    assert templates["company_b"].fields["insuranceInfo.policyType"].field == "policy_type"
    assert templates["company_b"].schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_a_company_is_added_by_adding_a_file(tmp_path, templates_dir):
    template = json.loads((templates_dir / "company_a.json").read_text(encoding="utf-8"))
    template.update(id="company_c", match="Company C Application Form")
    (templates_dir / "company_c.json").write_text(json.dumps(template), encoding="utf-8")
    path = pdf_factory.lines_pdf(
        tmp_path / "c.pdf", [["Company C Application Form", "Full Name: Ada Lovelace", "Email: ada@example.com"]]
    )
    result = extract(str(path), templates_dir=str(templates_dir))
    assert result["template"] == "company_c"
    assert result["extracted_data"] == {"full_name": "Ada Lovelace", "email": "ada@example.com"}


def test_an_edited_template_is_reloaded(templates_dir):
    assert load_templates(templates_dir)["company_a"].match == "Company A Insurance Application"
    path = templates_dir / "company_a.json"
    template = json.loads(path.read_text(encoding="utf-8"))
    template["match"] = "Company A Application (revised)"
    path.write_text(json.dumps(template), encoding="utf-8")
    assert load_templates(templates_dir)["company_a"].match == "Company A Application (revised)"


BROKEN = [
    ("{not json", "cannot read template"),
    ("[]", "must be a JSON object"),
    ({"id": ""}, "key 'id'"),
    ({"match": None}, "key 'match'"),
    ({"fields": {}}, "key 'fields'"),
    ({"fields": {"full name": {"field": "a", "label": "A:"}}}, "key 'fields.full name'"),
    ({"fields": {"full_name": {"field": "full_name"}}}, "key 'fields.full_name.label'"),
    ({"fields": {"a": {"field": "a", "label": "A:"}, "a.b": {"field": "b", "label": "B:"}}}, "key 'fields.a'"),
    ({"fields": {"a": {"field": "a", "label": "Name:"}, "b": {"field": "b", "label": "name:"}}}, "share a label"),
    ({"schema": {"type": "strnig"}}, "key 'schema.type'"),
    ({"schema": {"$schema": "https://example.org/my-draft"}}, "key 'schema'"),
    ({"schema": {"properties": {"since": {"format": "duration"}}}},
     "key 'schema.properties.since.format': format 'duration' is not checked"),
    ({"id": "company_b"}, "already used by company_a.json"),
]


@pytest.mark.parametrize(("change", "words"), BROKEN, ids=[words for _, words in BROKEN])
def test_a_broken_template_names_the_file_and_key(tmp_path, templates_dir, change, words):
    path = templates_dir / "company_a.json"
    if isinstance(change, str):
        path.write_text(change, encoding="utf-8")
    else:
        template = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**template, **change}), encoding="utf-8")
    with pytest.raises(TemplateError) as excinfo:
        load_templates(templates_dir)
    assert "company_a.json" in str(excinfo.value)
    assert words in str(excinfo.value)

    # The action reports the same message and does not retry.
    pdf = pdf_factory.text_pdf(tmp_path / "a.pdf")
    with pytest.raises(ActionError) as excinfo:
        extract(str(pdf), templates_dir=str(templates_dir))
    assert_unreadable(excinfo, "company_a.json", words)


def test_a_missing_templates_folder(tmp_path):
    pdf = pdf_factory.text_pdf(tmp_path / "a.pdf")
    with pytest.raises(ActionError) as excinfo:
        extract(str(pdf), templates_dir=str(tmp_path / "nowhere"))
    assert_unreadable(excinfo, "nowhere", "does not exist")


def test_an_empty_templates_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TemplateError, match="holds no"):
        load_templates(tmp_path / "empty")
