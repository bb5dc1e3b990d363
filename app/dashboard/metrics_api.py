"""Run metrics over HTTP: JSON at GET /api/metrics, Prometheus text at GET /metrics."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.metrics import collect_metrics

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

# Where init_app keeps the app's own CollectorRegistry.
REGISTRY_KEY = "pyflow_metrics_registry"


@bp.get("/api/metrics")
def api_metrics() -> Response:
    """Per workflow: runs, success rate and p50/p95 duration over the last 24 hours and 7 days."""
    return jsonify(collect_metrics(current_app.extensions["pyflow"]))


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """The same data for Prometheus to scrape."""
    registry = current_app.extensions[REGISTRY_KEY]
    return Response(generate_latest(registry), mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST})
