"""OpenTelemetry traces of runs (DESIGN section 13): one span per execution of a run, a child per step.

Loaded only when OTEL_EXPORTER_OTLP_ENDPOINT is set (``observer_for``); without it the engine's
observer is None and no OpenTelemetry module is imported. Spans carry ids, names and statuses
(``pyflow.run_id``, ``pyflow.workflow``, ``pyflow.step``, ``pyflow.status``...) and the run's or
step's error, which the engine has already scrubbed of secrets; never inputs, configs or results.

A run that executes more than once (resumed after a restart or a pause, taken over by another
worker) gets a new run span each time, all in one trace: the trace id is derived from the run id,
so a tracing backend shows every execution of a run together. ``pyflow.resumed`` marks the later ones.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from app.errors import ConfigError

logger = logging.getLogger(__name__)

SETTING = "OTEL_EXPORTER_OTLP_ENDPOINT"
INSTALL = "pip install -r requirements-tracing.txt"
# The trace id wanted for the run span being started (read by the id generator on the same thread).
_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("pyflow_trace_id", default=None)


class RunObserver(Protocol):
    """What the engine tells an observer; each method returns quickly and never raises."""

    def run_started(self, run: dict) -> None:
        """The run starts (or resumes) executing in this process."""

    def step_started(self, run: dict, step: dict) -> None:
        """An attempt of ``step`` starts (``step["attempts"]`` counts it)."""

    def step_ended(self, run: dict, step: dict) -> None:
        """``step`` ended: succeeded, failed, skipped or cancelled."""

    def run_ended(self, run: dict) -> None:
        """The run stopped executing here: finished, paused, cancelled, handed to another process or stalled."""

    def shutdown(self) -> None:
        """Send what is buffered; called when the runtime shuts down."""


def trace_id_of(run_id: str) -> int:
    """The trace id of every span of run ``run_id``: 128 bits of its SHA-256 (never 0)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big") or 1


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL for OTEL_EXPORTER_OTLP_ENDPOINT (the base URL, as OpenTelemetry defines it)."""
    return endpoint.rstrip("/") + "/v1/traces"


def make_provider(processor: Any, service: str = "pyflow") -> Any:
    """A TracerProvider sending spans to ``processor``, with run-derived trace ids."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunIds(RandomIdGenerator):
        """Random span ids; a run span's trace id comes from its run id."""

        def generate_trace_id(self) -> int:
            wanted = _trace_id.get()
            return wanted if wanted is not None else super().generate_trace_id()

    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=RunIds())
    provider.add_span_processor(processor)
    return provider


def observer_for(settings: Mapping[str, Any]) -> RunObserver | None:
    """The span exporter the settings ask for, or None (OTEL_EXPORTER_OTLP_ENDPOINT unset: nothing loaded)."""
    endpoint = str(settings.get(SETTING) or "").strip()
    if not endpoint:
        return None
    if not endpoint.startswith(("http://", "https://")):
        # The value is not echoed: like a database URL it may carry a password.
        raise ConfigError(f"setting {SETTING} must be an http:// or https:// URL (OTLP/HTTP), "
                          f"got one starting {endpoint.split(':', 1)[0][:20]!r}")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise ConfigError(f"{SETTING} is set but the OpenTelemetry packages are not installed "
                          f"(no module {error.name or 'opentelemetry'}): {INSTALL}") from None
    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
    return SpanObserver(make_provider(BatchSpanProcessor(exporter)))


class SpanObserver:
    """Turns the engine's events into spans; safe to call from a run's branch threads."""

    def __init__(self, provider: Any):
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import Status, StatusCode

        self._trace, self._root, self._status, self._code = trace, Context, Status, StatusCode
        self.provider = provider
        self.tracer = provider.get_tracer("pyflow")
        self._lock = threading.Lock()
        self._runs: dict[str, Any] = {}  # run id -> its open run span
        self._steps: dict[tuple[str, str], Any] = {}  # (run id, step name) -> its open step span

    def run_started(self, run: dict) -> None:
        try:
            with self._lock:
                if run["id"] in self._runs:
                    return  # a timed-out step handed the run to a fresh thread: the same execution
                token = _trace_id.set(trace_id_of(run["id"]))
                try:
                    span = self.tracer.start_span(
                        f"run {run['workflow']}", context=self._root(),
                        attributes={"pyflow.run_id": run["id"], "pyflow.workflow": run["workflow"],
                                    "pyflow.source": str(run.get("source") or ""),
                                    "pyflow.resumed": run.get("started_at") is not None})
                finally:
                    _trace_id.reset(token)
                self._runs[run["id"]] = span
        except Exception:
            logger.warning("tracing: run %s: cannot start its span", run.get("id"), exc_info=True)

    def step_started(self, run: dict, step: dict) -> None:
        try:
            with self._lock:
                parent = self._runs.get(run["id"])
                if parent is None:
                    return
                key = (run["id"], step["name"])
                span = self._steps.get(key)
                if span is None:
                    self._steps[key] = self.tracer.start_span(
                        f"step {step['name']}", context=self._trace.set_span_in_context(parent),
                        attributes={"pyflow.run_id": run["id"], "pyflow.workflow": run["workflow"],
                                    "pyflow.step": step["name"], "pyflow.step_type": str(step.get("type") or "")})
                else:  # another attempt of the same step: the error of the one before is already scrubbed
                    span.add_event("retry", {"pyflow.attempt": step["attempts"],
                                             "pyflow.previous_error": str(step.get("error") or "")})
        except Exception:
            logger.warning("tracing: run %s: cannot start a step span", run.get("id"), exc_info=True)

    def step_ended(self, run: dict, step: dict) -> None:
        try:
            with self._lock:
                parent = self._runs.get(run["id"])
                if parent is None:
                    return
                span = self._steps.pop((run["id"], step["name"]), None)
                instant = None
                if span is None:  # skipped without an attempt: a span all the same, so the trace shows every step
                    instant = time.time_ns()  # of no duration: nothing executed
                    span = self.tracer.start_span(
                        f"step {step['name']}", context=self._trace.set_span_in_context(parent), start_time=instant,
                        attributes={"pyflow.run_id": run["id"], "pyflow.workflow": run["workflow"],
                                    "pyflow.step": step["name"], "pyflow.step_type": str(step.get("type") or "")})
                self._end(span, "step", step["status"], step.get("error"), {"pyflow.attempts": step.get("attempts", 0)},
                          end_time=instant)
        except Exception:
            logger.warning("tracing: run %s: cannot end a step span", run.get("id"), exc_info=True)

    def run_ended(self, run: dict) -> None:
        try:
            with self._lock:
                span = self._runs.pop(run["id"], None)
                if span is None:
                    return
                # Steps under way when a run pauses or stops here end with it, as the run left them.
                for key in [key for key in self._steps if key[0] == run["id"]]:
                    step = next((each for each in run["steps"] if each["name"] == key[1]), {})
                    self._end(self._steps.pop(key), "step", step.get("status", "pending"), step.get("error"), {})
                self._end(span, "run", run["status"], run.get("error"), {})
        except Exception:
            logger.warning("tracing: run %s: cannot end its span", run.get("id"), exc_info=True)

    def _end(self, span: Any, kind: str, status: str, error: str | None, attributes: dict[str, Any],
             end_time: int | None = None) -> None:
        """Set the span's pyflow.status; a failure is an ERROR status with an exception event (scrubbed)."""
        span.set_attributes({"pyflow.status": str(status), **attributes})
        if status == "failed":
            message = str(error or "failed")
            span.add_event("exception", {"exception.type": f"pyflow.{kind}_failed", "exception.message": message})
            span.set_status(self._status(self._code.ERROR, message))
        elif status == "succeeded":
            span.set_status(self._status(self._code.OK))
        span.end(end_time=end_time)

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()  # flushes the batch processor
        except Exception:
            logger.warning("tracing: the last spans could not be sent", exc_info=True)
