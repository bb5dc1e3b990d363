"""The web dashboard: pages at /, run metrics at /api/metrics and /metrics."""

from app.dashboard import admin, approvals, controls, login, pages, secrets  # noqa: F401  (their views attach to the blueprint)
from app.dashboard.blueprint import bp, init_app

__all__ = ["bp", "init_app"]
