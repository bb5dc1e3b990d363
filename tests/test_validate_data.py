"""ValidateDataAction: every problem listed, dotted paths, plain words; bad schemas are step errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from actions.base import ActionError, RunContext
from actions.extract_pdf_data import ExtractPDFDataAction
from actions.pdf_templates import DEFAULT_TEMPLATES_DIR
from actions.validate_data import ValidateDataAction
from tests import pdf_factory
from tests.pdf_factory import VALID, nested

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


# The test's tmp_path, which these tests make WORKFLOW_FILES_ROOT: the action reads only inside it.
ROOT: list[Path] = []


@pytest.fixture(autouse=True)
def files_root(tmp_path):
    ROOT[:] = [tmp_path]
    return tmp_path


def context() -> RunContext:
    return RunContext(settings={"WORKFLOW_FILES_ROOT": str(ROOT[0])})


def validate(data, **config) -> dict:
    """Run the action once, as the engine would after rendering its config."""
    action = ValidateDataAction("validate", data=data, **config)
    action.context = context()
    return action.execute({})


def company_b(**changes) -> dict:
    """Valid company B data with some dotted paths replaced (None removes the value)."""
    flat = {**VALID["company_b"], **changes}
    return nested({path: value for path, value in flat.items() if value is not None})


@pytest.mark.parametrize("company", ["company_a", "company_b"])
def test_valid_data(company):
    assert validate(nested(VALID[company]), template=company) == {"validation_result": "success", "errors": []}


def test_every_problem_is_listed_with_a_dotted_path_and_plain_words():
    data = company_b(
        **{
            "personalInfo.dateOfBirth": "15/03/1985",
            "personalInfo.email": "john.smith(at)example",
            "personalInfo.phoneNumber": None,
            "personalInfo.firstName": "",
            "insuranceInfo.policyType": "car",
        }
    )
    assert validate(data, template="company_b") == {
        "validation_result": "failure",
        "errors": [
            {"path": "insuranceInfo.policyType", "message": "must be one of: life, health, disability"},
            {"path": "personalInfo.dateOfBirth", "message": "must be a date written as YYYY-MM-DD"},
            {"path": "personalInfo.email", "message": "must be a valid e-mail address"},
            {"path": "personalInfo.firstName", "message": "must not be empty"},
            {"path": "personalInfo.phoneNumber", "message": "is required"},
        ],
    }


def test_each_missing_property_is_named():
    result = validate({"full_name": "Jane Doe"}, template="company_a")
    assert result["errors"] == [
        {"path": path, "message": "is required"} for path in ["address", "date_of_birth", "email", "phone_number"]
    ]


def test_missing_groups_are_named():
    result = validate({}, template="company_b")
    assert [error["path"] for error in result["errors"]] == ["insuranceInfo", "personalInfo"]


WRITTEN_AS = "must be a date written as YYYY-MM-DD"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1985-03-15", None),
        ("2025-02-30", "2025-02-30 is not a valid date: day is out of range for month"),  # no such day
        ("2021-13-01", "2021-13-01 is not a valid date: month must be in 1..12"),
        ("19850315", WRITTEN_AS),  # ISO basic form: Python reads it as a date, the pattern does not
        ("15/03/1985", WRITTEN_AS),
        ("1985-3-15", WRITTEN_AS),
    ],
)
def test_a_date_is_written_as_yyyy_mm_dd_and_exists(value, message):
    result = validate(nested({**VALID["company_a"], "date_of_birth": value}), template="company_a")
    assert result["errors"] == ([{"path": "date_of_birth", "message": message}] if message else [])


@pytest.mark.parametrize("email", ["jane.doe", "jane@", "jane doe@example.com", "@example.com"])
def test_bad_email_addresses(email):
    result = validate(nested({**VALID["company_a"], "email": email}), template="company_a")
    assert result["errors"] == [{"path": "email", "message": "must be a valid e-mail address"}]


SCHEMA = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$", "maxLength": 3},
        "name": {"type": "string", "minLength": 2},
        "flag": {"type": ["boolean", "null"]},
        "kind": {"const": "x"},
        "extra": {"type": "string", "multipleOf": 2},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ([], [("", "must be a group of fields")]),
        ({"items": [1, "two", 0]}, [("items.1", "must be a whole number"), ("items.2", "must be at least 1")]),
        (
            {"code": "abcd"},
            [("code", "does not have the expected form (^[A-Z]{3}$)"), ("code", "must be at most 3 characters long")],
        ),
        ({"name": "J"}, [("name", "must be at least 2 characters long")]),
        ({"flag": "yes"}, [("flag", "must be true or false or empty")]),
        ({"kind": "y"}, [("kind", "must be x")]),
        ({"score": 0}, [("score", "must be more than 0")]),
        ({"score": 10.5}, [("score", "must be at most 10")]),
        ({"surprise": 1}, [("", "Additional properties are not allowed ('surprise' was unexpected)")]),
    ],
)
def test_messages_for_a_schema_given_directly(data, errors):
    result = validate(data, schema=SCHEMA)
    assert result["validation_result"] == "failure"
    assert [(error["path"], error["message"]) for error in result["errors"]] == errors


FORMATS = {
    "type": "object",
    "properties": {
        "site": {"format": "uri"},
        "at": {"format": "date-time"},
        "opens": {"format": "time"},
        "host": {"format": "hostname"},
        "pointer": {"format": "json-pointer"},
        "link": {"format": "uri-template"},
        "day": {"format": "date"},
    },
}


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"site": "https://example.org/a?b=1", "at": "2024-02-29T10:30:00Z", "opens": "09:00:00+02:00",
          "host": "mail.example.org", "pointer": "/a/0", "link": "https://example.org/{id}", "day": "2024-02-29"}, []),
        ({"site": "not a uri"}, [("site", "must be a full address with its scheme, such as https://example.org/")]),
        ({"site": "/relative/path"}, [("site", "must be a full address with its scheme, such as https://example.org/")]),
        ({"at": "2024-02-29 10:30"},
         [("at", "must be a date and time written as YYYY-MM-DDTHH:MM:SS with a time zone (Z or +02:00)")]),
        ({"at": "2021-02-30T10:30:00Z"}, [("at", "2021-02-30T10:30:00Z is not a valid date: day is out of range "
                                                 "for month")]),
        ({"opens": "9 o'clock"}, [("opens", "must be a time written as HH:MM:SS with a time zone (Z or +02:00)")]),
        ({"host": "-bad-.example"}, [("host", "must be a host name")]),
        ({"pointer": "a/b"}, [("pointer", "must be a JSON pointer such as /a/b")]),
        ({"link": "https://example.org/{id"}, [("link", "must be an address template (RFC 6570)")]),
        ({"day": "2023-02-29"}, [("day", "2023-02-29 is not a valid date: day is out of range for month")]),
    ],
)
def test_the_standard_formats_are_checked(data, errors):
    result = validate(data, schema=FORMATS)
    assert [(error["path"], error["message"]) for error in result["errors"]] == errors


@pytest.mark.parametrize(("schema", "words"), [
    ({"properties": {"a": {"format": "duration"}}}, "format 'duration' is not checked"),
    ({"properties": {"a": {"format": "phone-number"}}}, "format 'phone-number' is not checked"),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "properties": {"a": {"format": "date"}}},
     "format 'date' is not checked, so any text would pass; formats checked (draft 4)"),
])
def test_a_format_nothing_checks_is_refused_naming_its_path(schema, words):
    with pytest.raises(ActionError) as excinfo:
        validate({"a": "anything"}, schema=schema)
    assert words in str(excinfo.value)
    assert "(at properties.a.format)" in str(excinfo.value)


def test_list_indexes_sort_as_numbers():
    schema = {"type": "array", "items": {"type": "string"}}
    result = validate([0] * 12, schema=schema)
    assert [error["path"] for error in result["errors"]] == [str(index) for index in range(12)]


def test_the_schemas_own_draft_is_used():
    # A draft-04 schema: exclusiveMaximum is a boolean there, and a 2020-12 validator would refuse it.
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "age": {"type": "integer", "maximum": 120, "exclusiveMaximum": True},
            "email": {"format": "email"},
        },
    }
    result = validate({"age": 120, "email": "nobody"}, schema=schema)
    assert result["errors"] == [
        {"path": "age", "message": "must be less than 120"},
        {"path": "email", "message": "must be a valid e-mail address"},
    ]


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "strnig"}, "invalid JSON Schema in the step's schema"),
        ({"$schema": "https://example.org/not-a-draft"}, "names no JSON Schema draft"),
        ({"$ref": "https://example.org/elsewhere.json"}, "$ref 'https://example.org/elsewhere.json' points outside"),
        ({"properties": {"a": {"$ref": "file:///etc/passwd"}}}, "never fetches a remote or file $ref"),
        ({"pattern": "(unclosed"}, "invalid JSON Schema in the step's schema"),
        ("{{ not rendered }}", "schema must be a JSON Schema object, got str"),
    ],
)
def test_a_bad_schema_is_a_step_error(schema, words):
    with pytest.raises(ActionError) as excinfo:
        validate({}, schema=schema)
    assert words in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    assert excinfo.value.retryable is False


def test_unknown_template():
    with pytest.raises(ActionError) as excinfo:
        validate({}, template="company_z")
    assert str(excinfo.value) == "unknown template 'company_z'; known templates: company_a, company_b"
    assert excinfo.value.retryable is False


def test_a_broken_templates_folder_is_a_step_error(tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, folder)
    (folder / "company_b.json").write_text('{"id": "company_b"', encoding="utf-8")
    with pytest.raises(ActionError) as excinfo:
        validate({}, template="company_a", templates_dir=str(folder))
    assert "company_b.json" in str(excinfo.value)
    assert excinfo.value.retryable is False


def test_a_template_from_another_folder(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    template = json.loads((DEFAULT_TEMPLATES_DIR / "company_a.json").read_text(encoding="utf-8"))
    template["schema"]["properties"]["phone_number"]["pattern"] = "^[0-9 +]+$"
    (folder / "company_a.json").write_text(json.dumps(template), encoding="utf-8")
    result = validate(
        nested({**VALID["company_a"], "phone_number": "call me"}), template="company_a", templates_dir=folder
    )
    assert result["errors"] == [{"path": "phone_number", "message": "does not have the expected form (^[0-9 +]+$)"}]


@pytest.mark.parametrize(
    "config", [{}, {"schema": {}, "template": "company_a"}, {"template": ["company_a"]}], ids=["none", "both", "list"]
)
def test_constructor_wants_exactly_one_schema_or_template(config):
    with pytest.raises(ValueError):
        ValidateDataAction("validate", data={}, **config)


def test_type_name():
    assert ValidateDataAction.type == "validate_data"


# --- extract, then validate, as the insurance_application workflow does -----------------------------


def extract_then_validate(path: Path) -> tuple[dict, dict]:
    # A shipped sample is put where the action may read it.
    copy = path if path.is_relative_to(ROOT[0]) else Path(shutil.copy(path, ROOT[0]))
    extract = ExtractPDFDataAction("extract", file=str(copy))
    extract.context = context()
    extracted = extract.execute({})
    return extracted, validate(extracted["extracted_data"], template=extracted["template"])


def test_the_valid_sample():
    extracted, result = extract_then_validate(SAMPLES / "application_company_a.pdf")
    assert extracted["template"] == "company_a"
    assert result == {"validation_result": "success", "errors": []}


def test_the_invalid_sample():
    extracted, result = extract_then_validate(SAMPLES / "application_company_b_invalid.pdf")
    assert extracted["template"] == "company_b"
    assert extracted["missing"] == []
    assert result["errors"] == [
        {"path": "insuranceInfo.policyType", "message": "must be one of: life, health, disability"},
        {"path": "personalInfo.dateOfBirth", "message": "must be a date written as YYYY-MM-DD"},
        {"path": "personalInfo.email", "message": "must be a valid e-mail address"},
    ]


def test_a_field_missing_from_the_pdf_is_required(tmp_path):
    path = pdf_factory.form_pdf(tmp_path / "form.pdf", "company_b", {"insuranceInfo.policyNumber": ""})
    _, result = extract_then_validate(path)
    assert result["errors"] == [{"path": "insuranceInfo.policyNumber", "message": "is required"}]
