"""A refused setting is reported at its own field, so the designer marks that field.

A step's config setting at steps[i].config.<key>, a trigger's setting at trigger.<key>, and an option
written on the step beside its config (a shell step's limits) at steps[i].<key>.
"""

from __future__ import annotations

import re

import pytest

from actions.base import SettingError
from triggers.interval import IntervalTrigger
from triggers.poll import PollTrigger
from triggers.webhook import WebhookTrigger
from workflows.declarative import DefinitionError, build_workflow

# (type, config, the field refused, the action's message): one bad value per field an action checks on its own.
REFUSED = {
    "approval to": ("approval", {"to": 5}, "to",
                    "action 's': to must be an address or a list of addresses, got 5"),
    "approval on_timeout": ("approval", {"on_timeout": "ignore"}, "on_timeout",
                            "action 's': on_timeout must be one of reject, approve, got 'ignore'"),
    "approval timeout": ("approval", {"timeout": "soon"}, "timeout",
                         "action 's': approval: timeout must be a number of seconds > 0, got 'soon'"),
    "condition": ("condition", {"condition": {"type": "near", "left": 1, "right": 2}}, "condition",
                  "action 's': condition: type must be one of eq, ne, gt, ge, lt, le, contains, matches, in, "
                  "exists, got 'near'"),
    "extract_pdf_data file": ("extract_pdf_data", {"file": " "}, "file",
                              "file must be a path, an attachment dict or a list of attachments, got ' '"),
    "extract_pdf_data company": ("extract_pdf_data", {"file": "a.pdf", "company": 5}, "company",
                                 "company must be a template id or None, got 5"),
    "extract_pdf_data ocr": ("extract_pdf_data", {"file": "a.pdf", "ocr": "sometimes"}, "ocr",
                             "action 's': ocr must be auto, always or never, got 'sometimes'"),
    "file operation": ("file", {"operation": "shred", "path": "a.txt"}, "operation",
                       "action 's': file: operation must be one of read, write, append, copy, move, delete, list, "
                       "glob, got 'shred'"),
    "file path": ("file", {"operation": "read", "path": ""}, "path", "action 's': file read: 'path' is required"),
    "file destination": ("file", {"operation": "copy", "path": "a.txt", "destination": ""}, "destination",
                         "action 's': file copy: 'destination' is required"),
    "file content": ("file", {"operation": "write", "path": "a.txt", "content": None}, "content",
                     "action 's': file write: 'content' is required"),
    "http_check url": ("http_check", {"url": "ftp://a.example"}, "url",
                       "action 's': http_check: url must be an http:// or https:// URL, got 'ftp://a.example'"),
    "http_check expected_status": ("http_check", {"url": "https://a.example", "expected_status": 700},
                                   "expected_status",
                                   "action 's': http_check: expected_status must be an HTTP status code, got 700"),
    "http_check max_latency_ms": ("http_check", {"url": "https://a.example", "max_latency_ms": 0}, "max_latency_ms",
                                  "action 's': http_check: max_latency_ms must be a number > 0, got 0"),
    "http_check request_timeout": ("http_check", {"url": "https://a.example", "request_timeout": "x"},
                                   "request_timeout",
                                   "action 's': http_check: request_timeout must be a number > 0, got 'x'"),
    "http_check method": ("http_check", {"url": "https://a.example", "method": "GET /"}, "method",
                          "action 's': http_check: method must be an HTTP method such as GET, got 'GET /'"),
    "llm response_format": ("llm", {"prompt": "hi", "response_format": "yaml"}, "response_format",
                            "action 's': response_format must be one of json_schema, json_object, none, got 'yaml'"),
    "llm output_schema": ("llm", {"prompt": "hi", "output_schema": [1]}, "output_schema",
                          "action 's': output_schema must be a JSON Schema object, got [1]"),
    "log level": ("log", {"message": "hi", "level": "loud"}, "level",
                  "action 's': log: level must be one of debug, info, warning, error, got 'loud'"),
    "loop steps": ("loop", {"items": [1], "steps": "say"}, "steps",
                   "action 's': steps must be a non-empty list of step definitions, got 'say'"),
    "notify format": ("notify", {"urls": "json://a.example", "body": "hi", "format": "rtf"}, "format",
                      "action 's': format must be one of text, markdown, html, got 'rtf'"),
    "notify urls": ("notify", {"urls": 5, "body": "hi"}, "urls",
                    "action 's': urls must be an Apprise URL or a list of them, got 5"),
    "pdf_text file": ("pdf_text", {"file": ""}, "file", "action 's': file must be a path or an attachment, got ''"),
    "pdf_text ocr": ("pdf_text", {"file": "a.pdf", "ocr": "maybe"}, "ocr",
                     "action 's': ocr must be auto, always or never, got 'maybe'"),
    "send_email to": ("send_email", {"to": 5}, "to",
                      "action 's': to must be an address or a list of addresses, got 5"),
    "send_email cc": ("send_email", {"to": "a@example.org", "cc": {"a": 1}}, "cc",
                      "action 's': cc must be an address or a list of addresses, got {'a': 1}"),
    "send_email bcc": ("send_email", {"to": "a@example.org", "bcc": 7}, "bcc",
                       "action 's': bcc must be an address or a list of addresses, got 7"),
    "shell command": ("shell", {"command": ""}, "command",
                      "action 's': command must be a string or a list of arguments, got ''"),
    "shell limits": ("shell", {"command": "true", "limits": {"wall": 5}}, "limits",
                     "action 's': limits.wall is not a limit; known: cpu_seconds, memory_mb, output_kb, processes"),
    "transform operation": ("transform", {"operation": "pivot", "data": []}, "operation",
                            "action 's': transform: operation must be one of csv_to_json, json_to_csv, filter, map, "
                            "sort, group, aggregate, dedupe, got 'pivot'"),
    "transform data": ("transform", {"operation": "sort", "data": None, "by": "a"}, "data",
                       "action 's': transform sort: 'data' is required"),
    "transform key that does not apply": ("transform", {"operation": "sort", "data": [], "by": "a", "keep": True},
                                          "keep", "action 's': transform sort: key 'keep' does not apply "
                                                  "(it takes data, by, reverse)"),
    "validate_data template": ("validate_data", {"data": {}, "template": 5}, "template",
                               "action 's': template must be a template id, got 5"),
    "wait seconds": ("wait", {"seconds": -1}, "seconds", "action 's': wait: seconds must be a number >= 0, got -1"),
    "wait_for_event event": ("wait_for_event", {"event": " "}, "event",
                             "action 's': event must be an event type such as 'order.paid', got ' '"),
    "wait_for_event on_timeout": ("wait_for_event", {"event": "order.paid", "on_timeout": "retry"}, "on_timeout",
                                  "action 's': on_timeout must be one of fail, continue, got 'retry'"),
    "wait_for_event timeout": ("wait_for_event", {"event": "order.paid", "timeout": 0}, "timeout",
                               "action 's': wait_for_event: timeout must be a number of seconds > 0, got 0"),
    "workflow": ("workflow", {"workflow": ""}, "workflow", "action 's': workflow must be a workflow name, got ''"),
}


def problems_of(step_type: str, config: dict) -> list[dict[str, str]]:
    """The problems the definition checker lists for a one-step workflow."""
    with pytest.raises(DefinitionError) as caught:
        build_workflow({"name": "x", "steps": [{"name": "s", "type": step_type, "config": config}]}, "test")
    return caught.value.problems


@pytest.mark.parametrize(("step_type", "config", "key", "message"), list(REFUSED.values()), ids=list(REFUSED))
def test_a_refused_setting_is_reported_at_its_field(step_type, config, key, message):
    assert problems_of(step_type, config) == [{"path": f"steps[0].config.{key}", "message": message}]


def test_the_llm_names_why_an_output_schema_is_not_valid_at_its_field():
    [problem] = problems_of("llm", {"prompt": "hi", "output_schema": {"type": "integr"}})
    assert problem["path"] == "steps[0].config.output_schema"
    assert problem["message"].startswith("action 's': output_schema is not a valid JSON Schema: 'integr' is not valid")


def test_a_refused_apprise_url_is_reported_at_urls():
    [problem] = problems_of("notify", {"urls": ["json://a.example", "nope://b"], "body": "hi"})
    assert problem["path"] == "steps[0].config.urls"
    assert problem["message"].startswith("action 's': urls[1]: ")


# Problems of two settings together, or of a setting the config does not hold, stay at the config.
AT_THE_CONFIG = {
    "http_request json and data": ("http_request", {"url": "https://a.example", "json": {}, "data": "x"},
                                   "action 's': give json or data, not both"),
    "validate_data schema and template": ("validate_data", {"data": {}},
                                          "action 's': give exactly one of schema and template"),
    "file path not given": ("file", {"operation": "read"}, "action 's': file read: 'path' is required"),
    "transform data not given": ("transform", {"operation": "dedupe"},
                                 "action 's': transform dedupe: 'data' is required"),
}


@pytest.mark.parametrize(("step_type", "config", "message"), list(AT_THE_CONFIG.values()), ids=list(AT_THE_CONFIG))
def test_a_problem_of_no_single_given_field_is_reported_at_the_config(step_type, config, message):
    assert problems_of(step_type, config) == [{"path": "steps[0].config", "message": message}]


def test_the_validate_endpoint_reports_a_refused_setting_at_its_field(client):
    response = client.post("/api/workflows/validate", json={"name": "probe", "steps": [
        {"name": "ok", "type": "log", "config": {"message": "hi"}},
        {"name": "s", "type": "http_check", "config": {"url": "https://a.example", "max_latency_ms": -5}}]})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "steps[1].config.max_latency_ms",
         "message": "action 's': http_check: max_latency_ms must be a number > 0, got -5"}]


# -- triggers: trigger.<key> ---------------------------------------------------------------------------------
# (trigger, the field refused, the trigger's message): one bad value per field a trigger checks on its own.
TRIGGER_REFUSED = {
    "cron schedule": ({"type": "cron", "schedule": "every day"}, "schedule",
                      "trigger 'x': schedule must be a cron expression of five fields (minute hour day-of-month "
                      "month day-of-week), such as '0 8 * * 1-5', got 'every day'"),
    "cron schedule that never matches": ({"type": "cron", "schedule": "0 0 30 2 *"}, "schedule",
                                         "trigger 'x': schedule '0 0 30 2 *' never matches a date"),
    "cron timezone": ({"type": "cron", "schedule": "0 8 * * *", "timezone": "Mars/Olympus"}, "timezone",
                      "trigger 'x': timezone must be an IANA time zone name such as 'Europe/Berlin', "
                      "got 'Mars/Olympus'"),
    "cron timezone not a string": ({"type": "cron", "schedule": "0 8 * * *", "timezone": 5}, "timezone",
                                   "trigger 'x': timezone must be an IANA time zone name such as "
                                   "'Europe/Berlin', got 5"),
    "cron misfire": ({"type": "cron", "schedule": "0 8 * * *", "misfire": "catch_up"}, "misfire",
                     "trigger 'x': misfire must be one of skip, run_once, got 'catch_up'"),
    "email security": ({"type": "email", "security": "tls"}, "security",
                       "email trigger 'x': security must be one of ssl, starttls, none, got 'tls'"),
    "email poll_interval": ({"type": "email", "poll_interval": "often"}, "poll_interval",
                            "email trigger 'x': poll_interval must be a number of seconds, got 'often'"),
    "email port": ({"type": "email", "port": "imaps"}, "port", "email trigger 'x': port must be a port number, "
                   "got 'imaps'"),
    "email port range": ({"type": "email", "port": 70000}, "port",
                         "email trigger 'x': port must be a port number, got 70000"),
    "event event": ({"type": "event", "event": " "}, "event",
                    "trigger 'x': event must be an event type such as 'ticket.created' or 'run.*', got ' '"),
    "event filter": ({"type": "event", "event": "ticket.created", "filter": "priority == 'high'"}, "filter",
                     "trigger 'x': filter must be one template over event, such as "
                     "\"{{ event.data.priority == 'high' }}\", got \"priority == 'high'\""),
    "file folder": ({"type": "file", "folder": ""}, "folder", "trigger 'x': folder must be a path, got ''"),
    "file pattern": ({"type": "file", "folder": "inbox", "pattern": "a/*.pdf"}, "pattern",
                     "trigger 'x': pattern must be a file name pattern such as '*.pdf', got 'a/*.pdf'"),
    "file settle_seconds": ({"type": "file", "folder": "inbox", "settle_seconds": "soon"}, "settle_seconds",
                            "trigger 'x': settle_seconds must be a number of seconds, got 'soon'"),
    "file settle_seconds below 0": ({"type": "file", "folder": "inbox", "settle_seconds": -1}, "settle_seconds",
                                    "trigger 'x': settle_seconds must be 0 or more, got -1"),
    "file poll_interval": ({"type": "file", "folder": "inbox", "poll_interval": 0}, "poll_interval",
                           "trigger 'x': poll_interval must be greater than 0, got 0"),
    "interval seconds": ({"type": "interval", "seconds": "hourly"}, "seconds",
                         "trigger 'x': seconds must be a number of seconds, got 'hourly'"),
    "interval seconds not above 0": ({"type": "interval", "seconds": 0}, "seconds",
                                     "trigger 'x': seconds must be greater than 0, got 0"),
    "poll condition": ({"type": "poll", "condition": "ready"}, "condition",
                       "trigger 'x': condition must be callable, got 'ready'"),
    # A fake clock is for tests written in Python; a definition (maybe posted by anyone) cannot hold a callable.
    "cron clock": ({"type": "cron", "schedule": "0 8 * * *", "clock": "{{ 0 }}"}, "clock",
                   "a Python callable: only a workflow written in Python can set 'clock'"),
    "file clock": ({"type": "file", "folder": "inbox", "clock": "time.time"}, "clock",
                   "a Python callable: only a workflow written in Python can set 'clock'"),
    "webhook secret": ({"type": "webhook", "secret": 5}, "secret",
                       "trigger 'x': secret must be a non-empty string or None, got int"),
    "webhook signature_style": ({"type": "webhook", "signature_style": "gitlab"}, "signature_style",
                                "trigger 'x': signature_style must be one of github, stripe, slack, "
                                "got 'gitlab'"),
    "webhook signature_header": ({"type": "webhook", "signature_header": "X Sig"}, "signature_header",
                                 "trigger 'x': signature_header must be an HTTP header name, got 'X Sig'"),
    "webhook allow_uploads": ({"type": "webhook", "allow_uploads": "yes"}, "allow_uploads",
                              "trigger 'x': allow_uploads must be true or false, got 'yes'"),
    "webhook response": ({"type": "webhook", "response": "sync"}, "response",
                         "trigger 'x': response must be one of accepted, result, got 'sync'"),
    "webhook response_step": ({"type": "webhook", "response": "result", "response_step": ""}, "response_step",
                              "trigger 'x': response_step must be a step name or None, got ''"),
}


def trigger_problems(trigger: dict) -> list[dict[str, str]]:
    """The problems the definition checker lists for a one-step workflow with ``trigger``."""
    with pytest.raises(DefinitionError) as caught:
        build_workflow({"name": "x", "trigger": trigger,
                        "steps": [{"name": "s", "type": "log", "config": {"message": "hi"}}]}, "test")
    return caught.value.problems


@pytest.mark.parametrize(("trigger", "key", "message"), list(TRIGGER_REFUSED.values()), ids=list(TRIGGER_REFUSED))
def test_a_refused_trigger_setting_is_reported_at_its_field(trigger, key, message):
    assert trigger_problems(trigger) == [{"path": f"trigger.{key}", "message": message}]


def test_a_problem_of_two_trigger_settings_is_reported_at_the_trigger():
    assert trigger_problems({"type": "webhook", "signature_style": "slack", "signature_header": "X-Sig"}) == [
        {"path": "trigger", "message": "trigger 'x': signature_header applies to signature_style github only; "
                                       "the slack style has fixed headers"}]


@pytest.mark.parametrize(("seconds", "message"), [
    (0, "seconds must be greater than 0, got 0"),
    (-5, "seconds must be greater than 0, got -5"),
    (float("nan"), "seconds must be greater than 0, got nan"),
    ("soon", "seconds must be a number of seconds, got 'soon'"),
    (None, "seconds must be a number of seconds, got None"),
    (True, "seconds must be a number of seconds, got True"),
    ("inf", "seconds must be a finite number of seconds, got 'inf'"),
])
def test_a_python_workflows_interval_trigger_refuses_seconds_that_are_no_positive_number(seconds, message):
    # A workflow written in Python is trusted with intervals under a second, not with these.
    with pytest.raises(SettingError, match=rf"^trigger 't': {re.escape(message)}$") as caught:
        IntervalTrigger("t", seconds=seconds)
    assert caught.value.key == "seconds"
    assert IntervalTrigger("t", seconds=0.2).interval == 0.2


def test_a_poll_trigger_refuses_its_interval_as_that_setting():
    # A definition cannot give a callable condition, so the interval check is reached from Python only.
    with pytest.raises(SettingError, match=r"^trigger 't': interval must be greater than 0, got 0$") as caught:
        PollTrigger("t", condition=lambda: True, interval=0)
    assert caught.value.key == "interval"


def test_a_webhook_secret_that_is_no_settings_reference_is_refused_as_that_setting():
    with pytest.raises(SettingError) as caught:
        WebhookTrigger("t", secret="{{ inputs.key }}").setup({})
    assert caught.value.key == "secret"
    assert str(caught.value) == "trigger 't': secret may only be a plain string or '{{ settings.NAME }}'"


# -- options written on the step beside its config: steps[i].<key> ----------------------------------------------
def test_a_refused_limit_written_on_the_step_is_reported_at_the_steps_limits():
    with pytest.raises(DefinitionError) as caught:
        build_workflow({"name": "x", "steps": [
            {"name": "s", "type": "shell", "config": {"command": "true"}, "limits": {"wall": 5}}]}, "test")
    assert caught.value.problems == [
        {"path": "steps[0].limits",
         "message": "action 's': limits.wall is not a limit; known: cpu_seconds, memory_mb, output_kb, processes"}]


def test_the_validate_endpoint_reports_a_trigger_setting_and_a_step_option_at_their_fields(client):
    response = client.post("/api/workflows/validate", json={
        "name": "probe", "trigger": {"type": "cron", "schedule": "0 8 * * *", "timezone": "Mars/Olympus"},
        "steps": [{"name": "ok", "type": "log", "config": {"message": "hi"}},
                  {"name": "s", "type": "shell", "config": {"command": "true"}, "limits": {"memory_mb": -1}}]})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "trigger.timezone",
         "message": "trigger 'probe': timezone must be an IANA time zone name such as 'Europe/Berlin', "
                    "got 'Mars/Olympus'"},
        {"path": "steps[1].limits", "message": "action 's': limits.memory_mb must be a number > 0, got -1"}]


def test_the_validate_endpoint_reports_a_posted_interval_under_a_second_at_trigger_seconds(client):
    # Refused for a definition (untrusted), though the trigger itself takes it (a Python workflow may).
    response = client.post("/api/workflows/validate", json={
        "name": "probe", "trigger": {"type": "interval", "seconds": 0.25},
        "steps": [{"name": "ok", "type": "log", "config": {"message": "hi"}}]})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "trigger.seconds", "message": "0.25 is less than 1 s, the shortest interval a definition's trigger "
                                              "fires at"}]
