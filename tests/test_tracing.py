"""Traces: spans of runs and steps in the SDK's in-memory exporter, and once over OTLP/HTTP to a local receiver."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from app import create_app, start_app
from app.core.tracing import SpanObserver, make_provider, observer_for, trace_id_of
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.waiting import wait_until

SECRET = "tok-s3cret-8410"
TRACED = {
    "name": "traced",
    "steps": [
        {"name": "hello", "type": "log", "config": {"message": "hi {{ inputs.who }}"}},
        {"name": "never", "type": "log", "depends_on": [], "when": "{{ false }}", "config": {"message": "no"}},
        {"name": "broken", "type": "file", "depends_on": ["hello"],
         "config": {"operation": "read", "path": "missing-{{ secrets.API_TOKEN }}.txt"}},
    ],
}


@pytest.fixture
def spans(runtime):
    """The runtime's engine reporting to an in-memory exporter (what OTEL_EXPORTER_OTLP_ENDPOINT sets up, in memory)."""
    exporter = InMemorySpanExporter()
    runtime.engine.observer = SpanObserver(make_provider(SimpleSpanProcessor(exporter)))
    yield exporter
    runtime.engine.observer.shutdown()


def _attributes(span) -> dict:
    return dict(span.attributes or {})


def test_a_run_is_a_span_with_a_child_per_step_and_its_failure_recorded_without_secrets(runtime, spans):
    runtime.secrets.set("API_TOKEN", SECRET)
    runtime.create_definition(TRACED)
    run = runtime.run_sync("traced", {"who": "Ada"})
    assert run["status"] == "failed"

    finished = wait_until(lambda: spans.get_finished_spans() if len(spans.get_finished_spans()) == 4 else None)
    by_name = {span.name: span for span in finished}
    root = by_name["run traced"]
    assert root.parent is None and root.context.trace_id == trace_id_of(run["id"])
    assert _attributes(root) == {"pyflow.run_id": run["id"], "pyflow.workflow": "traced", "pyflow.source": "cli",
                                 "pyflow.resumed": False, "pyflow.status": "failed"}
    assert root.status.status_code == StatusCode.ERROR
    for name, status in (("hello", "succeeded"), ("never", "skipped"), ("broken", "failed")):
        step = by_name[f"step {name}"]
        assert step.parent.span_id == root.context.span_id and step.context.trace_id == root.context.trace_id
        attributes = _attributes(step)
        assert (attributes["pyflow.run_id"], attributes["pyflow.workflow"]) == (run["id"], "traced")
        assert (attributes["pyflow.step"], attributes["pyflow.status"]) == (name, status)
    assert by_name["step hello"].status.status_code == StatusCode.OK
    never = by_name["step never"]  # docs/tracing.md: a skipped step is a span of no duration
    assert never.start_time == never.end_time
    broken = by_name["step broken"]
    assert broken.status.status_code == StatusCode.ERROR and "not found" in broken.status.description
    event = next(event for event in broken.events if event.name == "exception")
    assert "missing-***.txt" in event.attributes["exception.message"]
    # The secret appears nowhere: attributes, events, statuses of every span.
    for span in finished:
        shown = repr([_attributes(span), span.status.description, [dict(each.attributes) for each in span.events]])
        assert SECRET not in shown


def test_a_run_executed_again_is_a_new_span_in_the_same_trace(runtime, spans):
    runtime.secrets.set("API_TOKEN", SECRET)
    runtime.create_definition(TRACED)
    run = runtime.run_sync("traced", {})
    runtime.control(run["id"], "retry")

    def roots():
        found = [span for span in spans.get_finished_spans() if span.name == "run traced"]
        return found if len(found) == 2 else None

    roots = wait_until(roots, message="the retried run's span ended")
    assert runtime.get_run(run["id"])["status"] == "failed"
    assert {span.context.trace_id for span in roots} == {trace_id_of(run["id"])}
    assert sorted(_attributes(span)["pyflow.resumed"] for span in roots) == [False, True]
    assert roots[0].context.span_id != roots[1].context.span_id


def test_without_the_setting_nothing_is_loaded(runtime):
    assert observer_for({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}) is None
    assert runtime.engine.observer is None
    with pytest.raises(ConfigError, match="must be an http:// or https:// URL") as refused:
        observer_for({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://user:pw@collector:4317"})
    assert "pw" not in str(refused.value)


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: keeps each POST /v1/traces body, decoded."""

    requests: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.received.append(request)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_spans_reach_an_otlp_http_receiver(tmp_path, receiver):
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                                "WORKFLOW_KEY_FILE": str(tmp_path / "key"), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}))
    runtime = app.extensions["pyflow"]
    try:
        runtime.secrets.set("API_TOKEN", SECRET)
        runtime.create_definition(TRACED)
        run = runtime.run_sync("traced", {"who": "Ada"})
    finally:
        runtime.shutdown(timeout=2)  # flushes the batch of spans

    def spans():
        found = [(span, resource.resource) for request in receiver.received for resource in request.resource_spans
                 for scope in resource.scope_spans for span in scope.spans]
        return found if len(found) == 4 else None

    received = wait_until(spans, timeout=10, message="4 spans at the receiver")
    by_name = {span.name: span for span, _ in received}
    root = by_name["run traced"]
    service = {item.key: item.value.string_value for item in received[0][1].attributes}["service.name"]
    assert service == "pyflow"

    def attributes(span) -> dict:
        return {item.key: getattr(item.value, item.value.WhichOneof("value")) for item in span.attributes}

    assert int.from_bytes(root.trace_id, "big") == trace_id_of(run["id"]) and root.parent_span_id == b""
    assert attributes(root)["pyflow.run_id"] == run["id"] and attributes(root)["pyflow.status"] == "failed"
    broken = by_name["step broken"]
    assert broken.parent_span_id == root.span_id
    assert attributes(broken) == {"pyflow.run_id": run["id"], "pyflow.workflow": "traced", "pyflow.step": "broken",
                                  "pyflow.step_type": "file", "pyflow.status": "failed", "pyflow.attempts": 1}
    assert broken.status.code == broken.status.STATUS_CODE_ERROR
    assert SECRET.encode() not in b"".join(request.SerializeToString() for request in receiver.received)
