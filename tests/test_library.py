"""The functions of workflows/library/ that the shipped templates call."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from tests.server import REPO
from workflows.library.analysis import analyse_text, parse_amount
from workflows.library.records import split_valid
from workflows.library.sqlite_store import insert_document, load_rows
from workflows.registry import module_names


def test_the_library_is_plain_python_and_no_workflow_module():
    code = ("import sys, workflows.library.analysis, workflows.library.records, workflows.library.sqlite_store; "
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('flask', 'app')))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert imported.stdout.strip() == "[]"
    assert not [name for name in module_names("workflows") if name.startswith("workflows.library")]


def test_analysis_finds_each_kind_once_and_keeps_them_apart():
    text = ("Invoice INV-2024-0042 of 2024-03-15, due 15/04/2024 or March 3, 2024.\n"
            "Mail jane.doe@example.com or billing+ops@acme.co.uk, again jane.doe@example.com.\n"
            "Call +1 555 010 0199 or (030) 1234-5678. Order 12345.\n"
            "Total $1,250.00, tax EUR 99.50 and 1.234,56 EUR.")
    result = analyse_text(text)
    assert result["word_count"] == len(text.split())
    assert result["emails"] == ["jane.doe@example.com", "billing+ops@acme.co.uk"]
    # The invoice number, the order number and the dates are not phone numbers.
    assert result["phone_numbers"] == ["+1 555 010 0199", "(030) 1234-5678"]
    assert result["dates"] == ["2024-03-15", "15/04/2024", "March 3, 2024"]
    assert result["amounts"] == [
        {"text": "$1,250.00", "currency": "USD", "value": 1250.0},
        {"text": "EUR 99.50", "currency": "EUR", "value": 99.5},
        {"text": "1.234,56 EUR", "currency": "EUR", "value": 1234.56},
    ]


def test_analysis_of_nothing():
    assert analyse_text("") == {"word_count": 0, "emails": [], "phone_numbers": [], "dates": [], "amounts": []}


@pytest.mark.parametrize(("written", "value"), [
    ("1,234.56", 1234.56), ("1.234,56", 1234.56), ("1 234", 1234.0), ("1'234.5", 1234.5), ("1,234", 1234.0),
    ("99", 99.0),
])
def test_amounts_in_local_spellings(written, value):
    assert parse_amount(written) == value


def test_split_valid_rows_by_validation_errors():
    rows = [{"id": 1}, {"id": "x"}, {"id": 3}, {}]
    errors = [{"path": "1.id", "message": "must be a whole number"}, {"path": "3.id", "message": "is required"}]
    result = split_valid(rows, errors)
    assert result["rows"] == [{"id": 1}, {"id": 3}]
    assert (result["valid"], result["invalid"]) == (2, 2)
    assert result["rejected"][0] == {"index": 1, "row": {"id": "x"}, "errors": [{"path": "id",
                                                                                  "message": "must be a whole number"}]}


def test_a_problem_with_the_whole_list_is_an_error():
    with pytest.raises(ValueError, match=r"the data as a whole is invalid: \(top\) must be a list"):
        split_valid([], [{"path": "", "message": "must be a list"}])


def test_load_rows_adds_new_columns_and_keeps_types(tmp_path):
    db = tmp_path / "sub" / "out.sqlite3"
    load_rows(str(db), "items", [{"id": 1, "tags": ["a"]}])
    result = load_rows(str(db), "items", [{"id": 2, "extra": True}])
    assert result == {"table": "items", "mode": "append", "inserted": 1, "total": 2}
    with closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("SELECT id, tags, extra FROM items ORDER BY id").fetchall()
    assert rows == [(1, '["a"]', None), (2, None, 1)]


def test_a_failed_replace_keeps_the_old_rows(tmp_path):
    db = str(tmp_path / "out.sqlite3")
    load_rows(db, "order", [{"group": 1}])  # SQL keywords work as names
    with pytest.raises(sqlite3.ProgrammingError):
        load_rows(db, "order", [{"group": 2}, {"group": {3}}], mode="replace")
    assert load_rows(db, "order", [])["total"] == 1


@pytest.mark.parametrize(("call", "message"), [
    (lambda db: load_rows(db, "x; DROP TABLE y", []), "table must be a plain name"),
    (lambda db: load_rows(db, "t", [{"a b": 1}]), "column must be a plain name"),
    (lambda db: load_rows(db, "t", [], mode="upsert"), "mode must be one of append, replace"),
    (lambda db: insert_document(db, "a.pdf", "", analysis="x"), "analysis must be a mapping"),
])
def test_refused_arguments(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(str(tmp_path / "x.sqlite3"))
