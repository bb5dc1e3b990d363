"""Settings, read from the environment when the app or runtime is created."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

# DEFAULT_HTTP_DENY (link-local and cloud metadata addresses) lives beside the check that uses it.
from actions.http_policy import DEFAULT_HTTP_DENY
from app.errors import ConfigError


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:  # "nan" and "inf" parse as floats
        raise ValueError
    return number


def _non_negative_int(value: str) -> int:
    number = _non_negative_float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def _positive_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError
    return number


def _http_url(value: str) -> str:
    """An http:// or https:// URL with a host, such as http://127.0.0.1:5001."""
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    parts.port  # noqa: B018 (a port out of 0-65535 raises ValueError here)
    return url


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _security(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in ("starttls", "ssl", "none"):
        raise ValueError
    return lowered


def _executor(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in EXECUTORS:
        raise ValueError
    return lowered


def _queue_name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > 100 or not all(char.isalnum() or char in "._-" for char in name):
        raise ValueError
    return name


def _languages(value: str) -> str:
    """Tesseract's language list, "eng+deu"; commas are taken as "+" too."""
    names = [part.strip() for part in re.split(r"[+,]", value)]
    if not names or not all(re.fullmatch(r"[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)?", name) for name in names):
        raise ValueError
    return "+".join(names)


#: WORKFLOW_EXECUTOR's values: threads of the serving process, or workers behind a queue (DESIGN section 11).
EXECUTORS = ("local", "procrastinate", "celery")


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _networks(value: str) -> tuple[str, ...]:
    """Comma-separated CIDR ranges or addresses; kept as text, checked here."""
    names = _names(value)
    for name in names:
        ipaddress.ip_network(name, strict=False)  # ValueError for a malformed range
    return names


# name -> (default, parser, what a valid value looks like)
SETTINGS: dict[str, tuple[Any, Callable[[str], Any] | None, str]] = {
    "HOST": ("127.0.0.1", None, ""),
    "PORT": (5001, _port, "a port number 0-65535"),
    "WORKFLOW_STORAGE_PATH": ("./data", None, ""),
    "WORKFLOW_MAX_CONCURRENT": (5, _positive_int, "a positive integer"),
    "WORKFLOW_STEP_TIMEOUT": (300.0, _positive_float, "a number of seconds > 0"),
    "WORKFLOW_RETRY_COUNT": (3, _non_negative_int, "an integer >= 0"),
    "WORKFLOW_RETRY_DELAY": (5.0, _non_negative_float, "a number of seconds >= 0"),
    "WORKFLOW_MAX_UPLOAD_MB": (25.0, _positive_float, "a number of megabytes > 0"),
    "WORKFLOW_RETENTION_DAYS": (30.0, _positive_float, "a number of days > 0"),
    "WORKFLOW_API_URL": ("http://127.0.0.1:5001", _http_url, "an http:// or https:// URL such as http://127.0.0.1:5001"),
    "WORKFLOW_MODULES": ((), _names, "comma-separated module names"),
    "WORKFLOW_DEFINITIONS_PATH": ("", None, ""),
    "WORKFLOW_ALLOW_SHELL": (False, _bool, "true or false"),
    "WORKFLOW_PYTHON_MODULES": ((), _names, "comma-separated module names"),
    "WORKFLOW_FILES_ROOT": ("", None, ""),
    "WORKFLOW_ENV_ALLOWLIST": ((), _names, "comma-separated variable names"),
    "WORKFLOW_SECRET_KEY": ("", None, ""),  # signs dashboard session cookies; random per process if unset
    "WORKFLOW_API_TOKEN": ("", None, ""),  # when set: Bearer token for /api, login for the dashboard
    "WORKFLOW_PUBLIC_URL": ("", None, ""),  # base of the approval links in e-mails; http://HOST:PORT if unset
    "IMAP_HOST": ("", None, ""),
    "IMAP_PORT": (993, _port, "a port number 0-65535"),
    "IMAP_USER": ("", None, ""),
    "IMAP_PASSWORD": ("", None, ""),
    "IMAP_FOLDER": ("INBOX", None, ""),
    "IMAP_SSL": (True, _bool, "true or false"),
    "SMTP_HOST": ("", None, ""),
    "SMTP_PORT": (587, _port, "a port number 0-65535"),
    "SMTP_USER": ("", None, ""),
    "SMTP_PASSWORD": ("", None, ""),
    "SMTP_SECURITY": ("starttls", _security, "starttls, ssl or none"),
    "MAIL_FROM": ("pyflow@localhost", None, ""),
    "EMAIL_POLL_INTERVAL": (30.0, _positive_float, "a number of seconds > 0"),
    "EMAIL_MAX_MB": (50.0, _positive_float, "a number of megabytes > 0"),
    "UPTIME_URL": ("http://127.0.0.1:5001/api/health", None, ""),
    "UPTIME_INTERVAL": (60.0, _positive_float, "a number of seconds > 0"),
    "UPTIME_ALERT_TO": ("", None, ""),
    # The llm step's defaults (actions/llm.py): an OpenAI-compatible server; the key goes only to LLM_BASE_URL.
    "LLM_BASE_URL": ("", None, ""),
    "LLM_API_KEY": ("", None, ""),
    "LLM_MODEL": ("", None, ""),
    # Exposure (DESIGN section 10): who may reach the server and what a posted definition may do.
    "WORKFLOW_TRUSTED_HOSTS": ((), _names, "comma-separated host names"),  # empty: loopback names and HOST
    "WORKFLOW_ALLOW_OPEN": (False, _bool, "true or false"),
    "WORKFLOW_HTTP_DENY": (DEFAULT_HTTP_DENY, _networks, "comma-separated CIDR ranges such as 169.254.0.0/16"),
    "WORKFLOW_SESSION_HOURS": (12.0, _positive_float, "a number of hours > 0"),
    # Bounds on what one request or one step may cost.
    "WORKFLOW_MAX_PARALLEL": (16, _positive_int, "a positive integer"),
    "WORKFLOW_MAX_LOOP_ITEMS": (10000, _positive_int, "a positive integer"),
    "WORKFLOW_MAX_WAIT": (3600.0, _positive_float, "a number of seconds > 0"),
    "WORKFLOW_MAX_STEP_TIMEOUT": (86400.0, _positive_float, "a number of seconds > 0"),
    "WORKFLOW_REGEX_TIMEOUT": (1.0, _positive_float, "a number of seconds > 0"),
    "WORKFLOW_TEMPLATE_TIMEOUT": (2.0, _positive_float, "a number of seconds > 0"),
    "WORKFLOW_MAX_JSON_DEPTH": (64, _positive_int, "a positive integer"),
    "WORKFLOW_POLL_TIMEOUT": (60.0, _positive_float, "a number of seconds > 0"),
    "WORKFLOW_MAX_CONNECTIONS": (1000, _positive_int, "a positive integer"),
    "WORKFLOW_SHUTDOWN_GRACE": (30.0, _positive_float, "a number of seconds > 0"),
    # Pages one pdf_text or extract_pdf_data step may read with Tesseract (a second or two each).
    "WORKFLOW_MAX_OCR_PAGES": (100, _positive_int, "a positive integer"),
    # Tesseract's languages for scanned PDFs; each needs its Debian package (tesseract-ocr-deu, ...).
    "OCR_LANGUAGES": ("eng", _languages, "Tesseract language names joined by '+', such as eng+deu"),
    # Most retries a definition may ask for (max_retries, a step's retries); added with the other bounds.
    "WORKFLOW_MAX_RETRIES": (100, _non_negative_int, "an integer >= 0"),
    # Longest a step's result may be reused (cache: {ttl}); a posted definition asking more is refused.
    "WORKFLOW_MAX_CACHE_TTL": (2_592_000.0, _positive_float, "a number of seconds > 0"),
    # A definition's size (as compact JSON, and a posted body) and its number of steps; the designer shows both.
    "WORKFLOW_MAX_DEFINITION_KB": (512, _positive_int, "a positive integer"),
    "WORKFLOW_MAX_STEPS": (500, _positive_int, "a positive integer"),
    # What a run's results may weigh together as JSON (each step's is at most 64 MB); the step past it fails.
    "WORKFLOW_MAX_RUN_RESULTS_MB": (256.0, _positive_float, "a number of megabytes > 0"),
    # Log lines one run keeps (repeats are folded first); the rest are counted, and the log says how many.
    "WORKFLOW_RUN_LOG_LINES": (1000, _positive_int, "a positive integer"),
    # Unset: the JSON store under WORKFLOW_STORAGE_PATH; postgresql://...: the PostgreSQL store (docs/postgres.md).
    "WORKFLOW_DATABASE_URL": ("", None, ""),
    # Distributed mode (DESIGN section 11, docs/distributed.md): who executes runs, and a worker's claim on one.
    "WORKFLOW_EXECUTOR": ("local", _executor, "local, procrastinate or celery"),
    "CELERY_BROKER_URL": ("", None, ""),
    "WORKFLOW_QUEUE": ("pyflow", _queue_name, "a queue name of letters, digits, '.', '_' or '-'"),
    "WORKFLOW_WORKER_CONCURRENCY": (4, _positive_int, "a positive integer"),
    "WORKFLOW_LEASE_SECONDS": (30.0, _positive_float, "a number of seconds > 0"),
    # Secrets at rest (DESIGN section 10, app/core/secrets.py): the Fernet key, never stored beside them.
    "WORKFLOW_ENCRYPTION_KEY": ("", None, ""),
    "WORKFLOW_KEY_FILE": ("~/.config/pyflow/encryption.key", None, ""),
    "WORKFLOW_NEW_ENCRYPTION_KEY": ("", None, ""),  # what `run.py secrets rotate-key` re-encrypts with
    # Traces (app/core/tracing.py, docs/tracing.md): set, spans of runs and steps go there over OTLP/HTTP.
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("", None, ""),
}

# Settings whose values never leave the process (API answers, templates, logs).
# WORKFLOW_DATABASE_URL and CELERY_BROKER_URL may carry a password (postgresql://user:password@host/db).
SECRET_SETTINGS = frozenset({"IMAP_PASSWORD", "SMTP_PASSWORD", "WORKFLOW_SECRET_KEY", "WORKFLOW_API_TOKEN",
                             "WORKFLOW_DATABASE_URL", "CELERY_BROKER_URL", "WORKFLOW_ENCRYPTION_KEY",
                             "WORKFLOW_NEW_ENCRYPTION_KEY", "LLM_API_KEY"})


def parse_setting(name: str, raw: Any) -> Any:
    """Convert one raw value; ConfigError names the variable and the value."""
    default, parser, expected = SETTINGS[name]
    if parser is None or not isinstance(raw, str):
        return raw
    try:
        return parser(raw)
    except ValueError:
        raise ConfigError(f"setting {name} must be {expected}, got {raw!r}") from None


def load_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting from ``environ`` (default ``os.environ``), else its default."""
    environ = os.environ if environ is None else environ
    settings = {}
    for name, (default, _parser, _expected) in SETTINGS.items():
        raw = environ.get(name)
        settings[name] = default if raw is None or raw == "" else parse_setting(name, raw)
    return settings


def public_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings without secrets: what templates may see."""
    return {key: value for key, value in settings.items() if key not in SECRET_SETTINGS}
