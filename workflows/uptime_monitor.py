"""uptime_monitor: checks a URL on an interval and e-mails an alert when it is down or slow."""

from actions.http_check import HttpCheckAction
from actions.send_email import SendEmailAction
from triggers.interval import IntervalTrigger
from workflows.base import Workflow

ALERT_BODY = """\
{{ steps.check.url }} is not healthy.

Problem:   {{ steps.check.error }}
Status:    {{ steps.check.status_code if steps.check.status_code is not none else "no answer" }}
Latency:   {{ steps.check.latency_ms }} ms (limit {{ inputs.max_latency_ms or 2000 }} ms)
Checked:   {{ trigger_data.fired_at or run.id }}

Run {{ run.id }} of PyFlow's uptime_monitor recorded this check.
"""


class UptimeMonitor(Workflow):
    """Demo 2: an HTTP GET every UPTIME_INTERVAL seconds; an alert e-mail when it fails."""

    name = "uptime_monitor"
    description = "Checks UPTIME_URL every UPTIME_INTERVAL seconds and e-mails an alert when it is down or slow."
    trigger = IntervalTrigger("every", seconds="{{ settings.UPTIME_INTERVAL }}")
    inputs_schema = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "pattern": "^https?://"},
            "expected_status": {"type": "integer", "minimum": 100, "maximum": 599},
            "max_latency_ms": {"type": "number", "exclusiveMinimum": 0},
            "alert_to": {"type": "string", "format": "email"},
        },
    }
    actions = [
        HttpCheckAction(
            "check",
            url="{{ inputs.url or settings.UPTIME_URL }}",
            expected_status="{{ inputs.expected_status or 200 }}",
            max_latency_ms="{{ inputs.max_latency_ms or 2000 }}",
        ),
        SendEmailAction(
            "alert",
            to="{{ inputs.alert_to or settings.UPTIME_ALERT_TO or settings.MAIL_FROM }}",
            subject="DOWN: {{ steps.check.url }} ({{ steps.check.error }})",
            body=ALERT_BODY,
            when="{{ not steps.check.ok }}",
        ),
    ]
