"""Workflows bench/scale.py runs, here and on ``run.py worker`` processes (WORKFLOW_MODULES=bench.scale_workflows).

The benchmark serves ``GET /wait?ms=N`` on loopback; each run's inputs name that server
(``base``) and the wait (``ms``), since its port is only known once it listens.
"""

from actions.http_request import HttpRequestAction
from workflows.base import Workflow


def _wait(number: int) -> HttpRequestAction:
    # The run id and step number let the server time each run's first request (enqueue-to-first-step latency).
    url = "{{ inputs.base }}/wait?ms={{ inputs.ms }}&run={{ run.id }}&step=" + str(number)
    return HttpRequestAction(f"wait{number}", url=url, timeout=10)


class ThreeWaits(Workflow):
    name = "three_waits"
    description = "Three steps that each wait on the scale benchmark's HTTP server (bench/scale.py)."
    actions = [_wait(1), _wait(2), _wait(3)]
    max_retries = 0  # a failed request fails the run at once: the benchmark counts failures, it does not hide them
