"""The designer's pages: /designer (a new workflow) and /designer/<name> (open one); the bundle does the rest."""

from __future__ import annotations

import logging

from flask import render_template, request

from app.api.auth import may
from app.api.routes import runtime
from app.dashboard.blueprint import bp

logger = logging.getLogger(__name__)


@bp.get("/designer")
@bp.get("/designer/<name>")
def designer(name: str | None = None) -> str:
    """The page the designer's bundle mounts on; opening an unknown workflow is a 404 page."""
    summary = None
    if name is not None:
        # A stored definition that no longer loads opens too: the designer marks what is wrong, a save fixes it.
        summary = runtime().catalog.unloaded_summary(name) or runtime().summary(name)
    return render_template(
        "designer.html", name=name or "", summary=summary,
        # Viewers see; only those who may change definitions (admins) save.
        can_save=may("api.create_workflow") and may("api.update_workflow"),
        api=f"{request.script_root}/api", dashboard=request.script_root,
    )
