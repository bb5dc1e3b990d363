"""What both demos share on top of pyflow_client: one-line errors, a liveness check, steps by name."""

from __future__ import annotations

import sys
from typing import Any

from pyflow_client import FINISHED_RUN, Client, PyFlowAPIError

FINISHED = tuple(sorted(FINISHED_RUN))


class DemoError(Exception):
    """Something the user has to fix; the message says what."""


def call(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    """One API call through the client; its JSON answer, or DemoError with the server's message."""
    kwargs.setdefault("timeout", 10)
    try:
        return client.request(method, path, **kwargs)
    except PyFlowAPIError as error:
        if error.status is None:
            raise DemoError(f"{method} {path}: {error.message}") from None
        raise DemoError(f"{method} {path} answered {error.status}: {error.message}") from None


def is_running(client: Client) -> bool:
    """True when a PyFlow server answers GET /api/health."""
    try:
        client.request("GET", "/api/health", timeout=3)
    except PyFlowAPIError:
        return False
    return True


def steps_of(run: dict) -> dict[str, dict]:
    """A run's steps by name."""
    return {step["name"]: step for step in run.get("steps", [])}


def require_server(client: Client) -> bool:
    """True when PyFlow answers; else say how to start it, on stderr."""
    if is_running(client):
        return True
    print(f"PyFlow is not running at {client.base_url} — start it with: python run.py", file=sys.stderr)
    return False
