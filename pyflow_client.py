"""A Python client for PyFlow's REST API (DESIGN section 14); it needs requests and nothing of PyFlow.

    from pyflow_client import Client, PyFlowAPIError
    client = Client()   # WORKFLOW_API_URL and WORKFLOW_API_TOKEN
    run = client.execute_workflow("notification_flow", inputs={"message": "Backup done"})
    run = client.wait_for_completion(run["id"], timeout=300, on_step_complete=lambda step: print(step["name"]))

Every method answers the API's JSON (a Run or a workflow Summary, docs/api.md) and raises
PyFlowAPIError, with ``status``, ``code`` and ``message``, for an error answer or a failed connection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

DEFAULT_URL = "http://127.0.0.1:5001"
# A run in one of these states has stopped for good (paused and waiting runs go on later).
FINISHED_RUN = frozenset({"succeeded", "failed", "cancelled"})
# A step in one of these states has finished: on_step_complete is told once.
FINISHED_STEP = frozenset({"succeeded", "failed", "skipped", "cancelled"})

Json = dict[str, Any]


class PyFlowAPIError(Exception):
    """An error answer of the API, or no answer at all (``status`` None).

    ``code`` is the API's slug (``not_found``, ``conflict``, ``invalid_input``...) or, without an
    answer, ``connection_error`` or ``timeout``; ``details`` lists a 422's problems with their paths,
    or is the mapping a 409 of an update with ``if_version`` carries (``version``, ``diff``, ``definition``).
    """

    def __init__(self, status: int | None, code: str, message: str, *, method: str = "", url: str = "",
                 details: list | dict | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        self.details = details or []
        where = f"{method} {url}".strip()
        answered = f"{status} {code}" if status is not None else code
        super().__init__(f"{where}: {answered}: {message}" if where else f"{answered}: {message}")


class Client:
    """PyFlow's REST API as methods; one requests.Session, so connections are kept alive."""

    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0):
        base = base_url or os.environ.get("WORKFLOW_API_URL") or DEFAULT_URL
        self.base_url = base.rstrip("/")
        token = token if token is not None else os.environ.get("WORKFLOW_API_TOKEN", "")
        # Seconds one HTTP request may take; wait_for_completion has its own timeout.
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- workflows ----------------------------------------------------------------------------------
    def list_workflows(self) -> list[Json]:
        """Every workflow's Summary."""
        return self.request("GET", "/api/workflows")["workflows"]

    def get_workflow(self, name: str) -> Json:
        """One workflow's Summary, with its ``definition`` when it is declarative."""
        return self.request("GET", f"/api/workflows/{_part(name)}")

    def create_workflow(self, definition: Mapping[str, Any] | str | None = None, *, name: str | None = None,
                        template: str | None = None) -> Json:
        """Create a declarative workflow: ``definition`` (a mapping, or YAML text), or a copy of ``template``.

        ``template`` names a served declarative workflow (a shipped one such as ``notification_flow``)
        whose definition is copied under ``name``; ``name`` also renames a mapping ``definition``.
        Secret values in a template show as "***" and are copied so: give them on the copy.
        """
        if (definition is None) == (template is None):
            raise ValueError("create_workflow takes a definition or a template (with name=...), not both or neither")
        if template is not None:
            if not name:
                raise ValueError(f"create_workflow(template={template!r}) needs the new workflow's name=...")
            definition = self.get_workflow(template).get("definition")
            if not isinstance(definition, Mapping):
                raise PyFlowAPIError(None, "not_declarative", f"workflow {template!r} has no definition to copy "
                                     "(it is written in Python)", method="GET",
                                     url=self._url(f"/api/workflows/{_part(template)}"))
        if name is not None:
            if not isinstance(definition, Mapping):
                raise ValueError("name=... renames a definition given as a mapping; put the name in the YAML text")
            definition = {**definition, "name": name}
        return self.request("POST", "/api/workflows", **_definition_body(definition))

    def update_workflow(self, name: str, definition: Mapping[str, Any] | str, if_version: int | None = None) -> Json:
        """A new version of an API-made workflow; runs already started keep theirs.

        With ``if_version`` it is stored only while that version is the newest (``If-Match``); otherwise
        PyFlowAPIError 409 whose ``details`` hold the newest ``version``, its ``definition`` and the YAML ``diff``.
        """
        body = _definition_body(definition)
        if if_version is not None:
            body["headers"] = {**body.get("headers", {}), "If-Match": f'"{if_version}"'}
        return self.request("PUT", f"/api/workflows/{_part(name)}", **body)

    def validate(self, definition: Mapping[str, Any] | str) -> bool:
        """True when POST /api/workflows would take ``definition``; PyFlowAPIError 422 listing its problems else."""
        return self.request("POST", "/api/workflows/validate", **_definition_body(definition))["valid"] is True

    def versions(self, name: str) -> list[Json]:
        """The stored versions of an API-made workflow, newest first: ``[{"version", "saved_at"}]``."""
        return self.request("GET", f"/api/workflows/{_part(name)}/versions")["versions"]

    def get_version(self, name: str, version: int) -> Json:
        """The definition of one stored version, secrets as "***"."""
        return self.request("GET", f"/api/workflows/{_part(name)}/versions/{_part(str(version))}")["definition"]

    def delete_workflow(self, name: str) -> None:
        """Delete an API-made workflow."""
        self.request("DELETE", f"/api/workflows/{_part(name)}")

    # -- runs -----------------------------------------------------------------------------------------
    def execute_workflow(self, name: str, inputs: Mapping[str, Any] | None = None,
                         idempotency_key: str | None = None) -> Json:
        """Start a run with ``inputs`` as its trigger data; the Run, queued or running.

        A repeated call with the same ``idempotency_key`` answers the first run and starts nothing.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", f"/api/workflows/{_part(name)}/runs", json={"inputs": dict(inputs or {})},
                          headers=headers)

    def get_execution_status(self, run_id: str) -> Json:
        """The Run as it stands: ``status``, ``steps``, ``progress``, ``error``..."""
        return self.request("GET", f"/api/runs/{_part(run_id)}")

    def wait_for_completion(self, run_id: str, timeout: float = 300, on_step_complete: Callable[[Json], Any] | None
                            = None, poll: float = 0.5) -> Json:
        """The Run once it succeeded, failed or was cancelled, polling every ``poll`` seconds.

        ``on_step_complete(step)`` is called once for each step that finished (succeeded, failed,
        skipped or cancelled) while waiting, in the order the steps finished: by ``finished_at``,
        then by position for steps that finished at the same time or were seen by the same poll
        without a time; a step that finished before the call is reported at the first poll. A
        paused or waiting run is waited for. PyFlowAPIError with code ``timeout`` (status None)
        when the run has not finished after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        reported: set[str] = set()
        while True:
            run = self.get_execution_status(run_id)
            if on_step_complete is not None:
                for step in _newly_finished(run, reported):
                    on_step_complete(step)
            if run.get("status") in FINISHED_RUN:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise PyFlowAPIError(None, "timeout", f"run {run_id} is still {run.get('status')} after "
                                     f"{timeout:g} s", method="GET", url=self._url(f"/api/runs/{_part(run_id)}"))
            time.sleep(min(poll, left))

    def pause_execution(self, run_id: str) -> Json:
        """Pause a queued or running run: the current step finishes, the next does not start."""
        return self._control(run_id, "pause")

    def resume_execution(self, run_id: str) -> Json:
        """Resume a paused run from its first unfinished step."""
        return self._control(run_id, "resume")

    def cancel_execution(self, run_id: str) -> Json:
        """Cancel a queued, running, paused or waiting run."""
        return self._control(run_id, "cancel")

    def retry_step(self, run_id: str, step: str | None = None) -> Json:
        """Retry a failed or cancelled run: it continues from its first unfinished step, keeping finished results.

        With ``step``, the run is first checked: PyFlowAPIError (409) unless that step failed or was
        cancelled, so a script never retries a run for a step that did not fail. The REST API retries
        the run as a whole (every failed step of a parallel graph runs again).
        """
        if step is not None:
            run = self.get_execution_status(run_id)
            found = next((item for item in run.get("steps", []) if item.get("name") == step), None)
            if found is None or found.get("status") not in ("failed", "cancelled"):
                state = "no such step" if found is None else f"it is {found.get('status')}"
                raise PyFlowAPIError(409, "conflict", f"step {step!r} of run {run_id} cannot be retried: {state}",
                                     method="POST", url=self._url(f"/api/runs/{_part(run_id)}/retry"))
        return self._control(run_id, "retry", {"step": step} if step is not None else None)

    def skip_step(self, run_id: str, step: str) -> Json:
        """Mark a failed run's failed ``step`` skipped and let the run go on."""
        return self._control(run_id, "skip", {"step": step})

    def approve(self, run_id: str, step: str | None = None, comment: str | None = None) -> Json:
        """Approve the run's waiting approval step (``step`` when several wait)."""
        return self._answer(run_id, "approve", step, comment)

    def reject(self, run_id: str, step: str | None = None, comment: str | None = None) -> Json:
        """Reject the run's waiting approval step: it fails with "rejected by <who>: <comment>"."""
        return self._answer(run_id, "reject", step, comment)

    # -- events ---------------------------------------------------------------------------------------
    def emit_event(self, type: str, data: Mapping[str, Any] | None = None, key: str | None = None,
                   id: str | None = None) -> Json:
        """Publish an event: ``{"event": {"id", "type"}, "duplicate", "started", "runs", "resumed"}`` (run ids).

        ``key`` correlates it with waiting runs; a repeated ``id`` does nothing twice. A ``run.*`` type
        raises PyFlowAPIError 422 naming ``type``: PyFlow publishes those itself when runs end.
        """
        body: Json = {"type": type, "data": dict(data or {})}
        if key is not None:
            body["key"] = key
        if id is not None:
            body["id"] = id
        return self.request("POST", "/api/events", json=body)

    # -- plumbing -------------------------------------------------------------------------------------
    def _control(self, run_id: str, operation: str, body: Json | None = None) -> Json:
        return self.request("POST", f"/api/runs/{_part(run_id)}/{operation}", json=body or {})

    def _answer(self, run_id: str, operation: str, step: str | None, comment: str | None) -> Json:
        body = {key: value for key, value in (("step", step), ("comment", comment)) if value is not None}
        return self.request("POST", f"/api/runs/{_part(run_id)}/{operation}", json=body)

    def _url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any endpoint (``GET /api/runs``, a trigger's ``/start``, an upload): its JSON answer, None for a 204.

        ``path`` starts with ``/api``; ``kwargs`` go to requests (params, json, data, files, headers,
        timeout). An error answer or a failed connection raises PyFlowAPIError naming the URL.
        """
        url = self._url(path)
        shown, server = _without_credentials(url), _without_credentials(self.base_url)
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.Timeout:
            raise PyFlowAPIError(None, "timeout", f"no answer within {kwargs['timeout']} s", method=method,
                                 url=shown) from None
        except requests.RequestException as error:
            raise PyFlowAPIError(None, "connection_error", f"cannot reach PyFlow at {server} "
                                 f"({type(error).__name__}); is it running?", method=method, url=shown) from None
        with response:
            if response.status_code == 204:
                return None
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code >= 400:
                raise _error(response, body, method, shown)
            if body is None:
                raise PyFlowAPIError(response.status_code, "not_json", f"the answer is not JSON; is {server} a "
                                     "PyFlow server?", method=method, url=shown)
            return body


def _error(response: requests.Response, body: Any, method: str, url: str) -> PyFlowAPIError:
    """PyFlowAPIError from an error answer: the API's ``{"error": {"code", "message"}}``, else the HTTP reason."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return PyFlowAPIError(response.status_code, str(error.get("code") or "error"),
                              str(error.get("message") or response.reason), method=method, url=url,
                              details=error.get("details") if isinstance(error.get("details"), (list, dict)) else None)
    text = " ".join(response.text.split())[:200]
    return PyFlowAPIError(response.status_code, f"http_{response.status_code}",
                          f"{response.reason}" + (f": {text}" if text else ""), method=method, url=url)


def _newly_finished(run: Json, reported: set[str]) -> list[Json]:
    """The run's finished steps not yet reported, in the order they finished; marks them reported."""
    fresh = [(step.get("finished_at") or "\uffff", index, step) for index, step in enumerate(run.get("steps") or [])
             if step.get("status") in FINISHED_STEP and step.get("name") not in reported]
    fresh.sort(key=lambda item: item[:2])
    reported.update(step.get("name") for _, _, step in fresh)
    return [step for _, _, step in fresh]


def _definition_body(definition: Mapping[str, Any] | str) -> Json:
    """requests keywords posting a definition: JSON for a mapping, YAML for text."""
    if isinstance(definition, str):
        return {"data": definition.encode("utf-8"), "headers": {"Content-Type": "application/yaml"}}
    return {"json": dict(definition)}


def _part(value: str) -> str:
    """A name or run id as one path segment."""
    return quote(str(value), safe="")


def _without_credentials(url: str) -> str:
    """``url`` without a user:password part, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
