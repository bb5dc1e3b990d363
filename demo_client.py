"""The small REST client both demos use: calls with one-line errors, and a liveness check."""

from __future__ import annotations

import os
import sys
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:5001"
FINISHED = ("succeeded", "failed", "cancelled")


class DemoError(Exception):
    """Something the user has to fix; the message says what."""


def call(session: requests.Session, base: str, method: str, path: str, **kwargs: Any) -> tuple[int, dict]:
    """One API call; (status, JSON body). DemoError with the server's message on an error answer."""
    kwargs.setdefault("timeout", 10)
    try:
        response = session.request(method, base + path, **kwargs)
    except requests.Timeout:
        raise DemoError(f"PyFlow at {base} did not answer {method} {path} within {kwargs['timeout']} s") from None
    except requests.RequestException:
        raise DemoError(f"lost the connection to PyFlow at {base}; is it still running?") from None
    with response:
        try:
            body = response.json()
        except ValueError:
            body = {}
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        message = (error or {}).get("message") or response.reason
        raise DemoError(f"{method} {path} answered {response.status_code}: {message}")
    return response.status_code, body


def is_running(session: requests.Session, base: str) -> bool:
    """True when a PyFlow server answers GET /api/health at ``base``."""
    try:
        with session.get(f"{base}/api/health", timeout=3) as response:
            return response.status_code == 200
    except requests.RequestException:
        return False


def steps_of(run: dict) -> dict[str, dict]:
    """A run's steps by name."""
    return {step["name"]: step for step in run.get("steps", [])}


def api_base() -> str:
    """Where the server is: WORKFLOW_API_URL, else the default."""
    return os.environ.get("WORKFLOW_API_URL", DEFAULT_URL).rstrip("/")


def require_server(session: requests.Session, base: str) -> bool:
    """True when PyFlow answers at ``base``; else say how to start it, on stderr."""
    if is_running(session, base):
        return True
    print(f"PyFlow is not running at {base} — start it with: python run.py", file=sys.stderr)
    return False
