"""The queue WORKFLOW_EXECUTOR names, made from the settings; its library is imported only then."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.dispatch.base import Queue
from app.errors import ConfigError


def open_queue(settings: Mapping[str, Any]) -> Queue | None:
    """None for ``local`` (threads of this process); else the procrastinate or celery queue, not yet started."""
    executor = settings.get("WORKFLOW_EXECUTOR") or "local"
    if executor == "local":
        return None
    database_url = settings.get("WORKFLOW_DATABASE_URL")
    if not database_url:
        raise ConfigError(f"WORKFLOW_EXECUTOR={executor} needs WORKFLOW_DATABASE_URL: its workers share runs "
                          "through the PostgreSQL store (docs/distributed.md)")
    queue = settings.get("WORKFLOW_QUEUE") or "pyflow"
    try:
        if executor == "procrastinate":
            from app.dispatch.procrastinate import ProcrastinateDispatcher

            return ProcrastinateDispatcher(database_url, queue=queue)
        if executor == "celery":
            broker = settings.get("CELERY_BROKER_URL")
            if not broker:
                raise ConfigError("WORKFLOW_EXECUTOR=celery needs CELERY_BROKER_URL: redis://host:6379/0 or "
                                  "amqp://user:password@host:5672//")
            from app.dispatch.celery import CeleryDispatcher

            return CeleryDispatcher(broker, queue=queue)
    except ImportError as error:
        raise ConfigError(f"WORKFLOW_EXECUTOR={executor} but {error.name or executor} is not installed: "
                          "pip install -r requirements-distributed.txt") from None
    raise ConfigError(f"setting WORKFLOW_EXECUTOR must be local, procrastinate or celery, got {executor!r}")
