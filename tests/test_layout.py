"""The rooms' imports point one way: api/dashboard -> core -> storage, dispatch; workflows -> actions, triggers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (``from app import x`` counts as app.x)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file: module`` for each import under ``folder`` of a module in (or below) ``forbidden``."""
    found = []
    for path in modules(folder):
        for name in sorted(imported(path)):
            if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("app/core", ("app.api", "app.dashboard", "flask", "werkzeug")),
    ("app/storage", ("app.api", "app.dashboard", "app.core", "flask", "werkzeug")),
    ("app/dispatch", ("app.api", "app.dashboard", "app.core", "flask", "werkzeug")),
    ("actions", ("app", "flask", "werkzeug")),
    ("triggers", ("app", "flask", "werkzeug")),
    ("workflows", ("app", "flask", "werkzeug")),
])
def test_imports_point_one_way(folder, forbidden):
    assert modules(folder), f"{folder} holds no module"
    assert offenders(folder, forbidden) == []


@pytest.mark.parametrize("leaf", ["app/errors.py", "app/runs.py"])
def test_the_leaves_of_app_import_nothing_of_the_project(leaf):
    project = ("app", "actions", "triggers", "workflows", "flask", "werkzeug")
    names = imported(ROOT / leaf)
    assert [name for name in names if name.split(".")[0] in project] == []
