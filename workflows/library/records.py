"""Split a batch of records by the problems a validate_data step found in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def split_valid(rows: Sequence[Any], errors: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The rows without problems, and the rejected ones with theirs.

    ``errors`` come from validate_data run on the whole list, so each path
    starts with the row's index ("3.email"). Returns ``{"rows", "valid",
    "invalid", "rejected": [{"index", "row", "errors"}]}``.
    """
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        raise ValueError(f"rows must be a list, got {type(rows).__name__}")
    problems: dict[int, list[dict[str, str]]] = {}
    for error in errors or []:
        head, _, rest = str(error.get("path", "")).partition(".")
        if not head.isdigit():
            # A problem with the list itself (not a list, too short): no row can be trusted.
            raise ValueError(f"the data as a whole is invalid: {error.get('path') or '(top)'} {error.get('message')}")
        problems.setdefault(int(head), []).append({"path": rest, "message": str(error.get("message", ""))})
    valid = [row for index, row in enumerate(rows) if index not in problems]
    rejected = [{"index": index, "row": rows[index], "errors": found} for index, found in sorted(problems.items())
                if index < len(rows)]
    return {"rows": valid, "valid": len(valid), "invalid": len(rejected), "rejected": rejected}
