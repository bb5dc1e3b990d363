"""The error hierarchy and the JSON error response.

This module depends on nothing else in the project, so every layer may raise
these errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PyFlowError(Exception):
    """Base of every error PyFlow reports to a user."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def to_dict(self) -> dict:
        """The body of an error answer: ``{"error": {"code", "message"}}``."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(PyFlowError):
    """The request body is malformed (not JSON, wrong shape)."""

    status = 400
    code = "bad_request"


class Unauthorized(PyFlowError):
    """A request without valid credentials (a webhook's signature)."""

    status = 401
    code = "unauthorized"


class Forbidden(PyFlowError):
    """The caller's role may not make this call; the message names the role it needs."""

    status = 403
    code = "forbidden"


class NotFound(PyFlowError):
    """An unknown workflow or run."""

    status = 404
    code = "not_found"


class Conflict(PyFlowError):
    """The operation is not allowed in the current state."""

    status = 409
    code = "conflict"


class PayloadTooLarge(PyFlowError):
    """The request body is past a size limit the message names."""

    status = 413
    code = "request_entity_too_large"


class InvalidInput(PyFlowError):
    """Well-formed but invalid input; ``details`` lists the problems."""

    status = 422
    code = "invalid_input"


class UnsupportedMediaType(PyFlowError):
    """The request body has a content type the endpoint does not take."""

    status = 415
    code = "unsupported_media_type"


class TriggerFailed(PyFlowError):
    """Polling a trigger failed (mail server down, login refused)."""

    status = 502
    code = "trigger_failed"


class ConfigError(PyFlowError):
    """A setting or a workflow definition is wrong; raised at start-up."""

    code = "config_error"


class StorageError(PyFlowError):
    """The store could not read or write a file (full or read-only disk)."""

    status = 503
    code = "storage_error"


def storage_error(verb: str, path: Path | str, exc: OSError) -> StorageError:
    """A StorageError naming what could not be done, the path and the cause."""
    reason = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)
    return StorageError(f"cannot {verb} {path}: {reason}")


def error_body(status: int, code: str, message: str) -> dict:
    """A JSON error body for errors that are not PyFlowErrors."""
    return {"error": {"code": code, "message": message}}
