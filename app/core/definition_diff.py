"""A definition as YAML text and the unified diff between two of them (a 409's answer, the designer's history)."""

from __future__ import annotations

import difflib
from typing import Any

import yaml


def yaml_text(definition: Any) -> str:
    """``definition`` as block-style YAML in its own key order; "" for none."""
    if definition is None:
        return ""
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def unified_diff(old: Any, new: Any, old_label: str, new_label: str) -> str:
    """The unified diff of two definitions' YAML, ``old_label`` -> ``new_label`` ("" when they are the same)."""
    lines = difflib.unified_diff(yaml_text(old).splitlines(keepends=True), yaml_text(new).splitlines(keepends=True),
                                 fromfile=old_label, tofile=new_label)
    return "".join(lines)
