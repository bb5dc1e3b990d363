"""GET /api/audit: the audit log, newest first, filtered by action, actor and target, a page at a time."""

from __future__ import annotations

import logging

from flask import Response, jsonify, request

from app.api.routes import MAX_PAGE, _number_arg, bp, page_cursor, runtime
from app.errors import BadRequest

logger = logging.getLogger(__name__)


@bp.get("/audit")
def list_audit() -> Response:
    limit = int(_number_arg("limit", 50, 1, MAX_PAGE) or 50)
    cursor = page_cursor()
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise BadRequest(f"query parameter cursor (or next) must be an entry id from a previous page's next, "
                         f"got {cursor!r}")
    filters = {key: request.args.get(key) or None for key in ("action", "actor", "target")}
    entries, next_cursor = runtime().store.list_audit(**filters, limit=limit,
                                                      before=int(cursor) if cursor else None)
    return jsonify(entries=entries, next=next_cursor)
