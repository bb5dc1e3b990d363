"""The web dashboard: pages at /, run metrics at /api/metrics and /metrics."""

from app.dashboard import (  # noqa: F401  (their views attach to the blueprint)
    admin,
    approvals,
    controls,
    designer,
    login,
    pages,
    secrets,
)
from app.dashboard.blueprint import bp, init_app

__all__ = ["bp", "init_app"]
