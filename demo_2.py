"""Demo 2: the uptime monitor, driven through PyFlow's REST API with pyflow_client.py.

Start the server in one terminal; a short interval makes the demo lively:

    UPTIME_INTERVAL=5 python run.py

then, in another:

    python demo_2.py              # or: python demo_2.py --wait 15

The demo shows the uptime_monitor workflow, runs one check right away, starts
the monitor so the server checks on its own every UPTIME_INTERVAL seconds,
prints each scheduled check as it lands, and stops the monitor again.
WORKFLOW_API_URL says where the server is (default http://127.0.0.1:5001), WORKFLOW_API_TOKEN its token.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime

from demo_client import FINISHED, DemoError, call, require_server, steps_of
from pyflow_client import Client

WORKFLOW = "uptime_monitor"
MAX_DEFAULT_WAIT = 20.0
POLL_EVERY = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: --wait SECONDS."""
    parser = argparse.ArgumentParser(description="Demo 2: PyFlow's uptime monitor through the REST API.")
    parser.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS",
        help=f"how long to watch scheduled checks (default: 3 intervals, at most {MAX_DEFAULT_WAIT:g} s)",
    )
    args = parser.parse_args(argv)
    if args.wait is not None and not 0 <= args.wait < math.inf:
        parser.error(f"--wait must be a number of seconds >= 0, got {args.wait:g}")
    return args


def local_time(stamp: str | None) -> str:
    """An API timestamp (UTC, ISO 8601 with Z) as local HH:MM:SS."""
    if not stamp:
        return "--:--:--"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")


def describe_alert(step: dict | None) -> str:
    """What became of the alert step: skipped, sent over SMTP, written to the outbox, or failed."""
    if step is None or step["status"] in ("pending", "running"):
        return "not decided yet"
    if step["status"] == "skipped":
        return "skipped (the check was ok)"
    if step["status"] != "succeeded":
        return f"{step['status']}: {step.get('error')}"
    result = step["result"] or {}
    if result.get("delivery") == "outbox":
        return f"sent to the outbox (no SMTP_HOST set): {result.get('path')}"
    return f"sent by SMTP to {result.get('recipient')}"


def alert_word(step: dict | None) -> str:
    """The alert step in a word or two, for a one-line run."""
    if step is None or step["status"] in ("pending", "running"):
        return "-"
    if step["status"] == "succeeded":
        return f"sent ({(step['result'] or {}).get('delivery')})"
    return step["status"]


def describe_check(result: dict | None) -> str:
    """The check step's result: status code, latency, ok, and the problem if any."""
    if not result:
        return "no check result"
    status = result.get("status_code") if result.get("status_code") is not None else "no answer"
    text = f"status {status}, {result.get('latency_ms')} ms, ok={result.get('ok')}"
    return text if result.get("ok") else f"{text} ({result.get('error')})"


def run_line(run: dict) -> str:
    """One readable line per run: time, status, status code, latency, alert."""
    steps = steps_of(run)
    check = (steps.get("check") or {}).get("result") or {}
    code = check.get("status_code") if check.get("status_code") is not None else "---"
    latency = f"{check['latency_ms']} ms" if check.get("latency_ms") is not None else "-"
    alert = alert_word(steps.get("alert"))
    problem = f"  ({check['error']})" if check.get("error") else ""
    return f"  {local_time(run['created_at'])}  {run['status']:<9}  {code!s:>4}  {latency:>7}  {alert}{problem}"


def show_summary(summary: dict) -> None:
    """Print what the workflow is and how it is triggered."""
    trigger = summary["trigger"]
    print(f"Workflow {summary['name']}: {summary['description']}")
    seconds = trigger.get("seconds")
    if isinstance(seconds, str) and "{" in seconds:
        # The Summary shows the workflow as written: the interval is a template over a setting.
        seconds = "UPTIME_INTERVAL"
    print(f"  trigger: {trigger['type']}, every {seconds} seconds")
    print("  It checks the server's UPTIME_URL (a run may pass another URL as input 'url');")
    print("  both settings are read from the environment when run.py starts.")
    print(f"  steps: {', '.join(action['name'] + ' (' + action['type'] + ')' for action in summary['actions'])}")
    print(f"  status: {summary['status']}")


def check_once(client: Client) -> dict:
    """Run one check now and print it."""
    print("\nChecking once right away (POST /api/workflows/uptime_monitor/runs?wait=30) ...")
    run = call(client, "POST", f"/api/workflows/{WORKFLOW}/runs?wait=30", json={}, timeout=40)
    steps = steps_of(run)
    check = (steps.get("check") or {}).get("result") or {}
    print(f"  run {run['id']}: {run['status']}")
    if run["status"] not in FINISHED:  # 202: still running after the wait
        print(f"  still running after 30 s; see GET /api/runs/{run['id']}")
        return run
    print(f"  url:     {check.get('url')}")
    print(f"  check:   {describe_check(check)}")
    print(f"  alert:   {describe_alert(steps.get('alert'))}")
    if run.get("error"):
        print(f"  error:   {run['error']}")
    return run


def default_wait(summary: dict) -> float:
    """Three intervals, at most MAX_DEFAULT_WAIT seconds; the most when the interval is not a number."""
    try:
        interval = float(summary["trigger"].get("seconds"))
    except (TypeError, ValueError):
        return MAX_DEFAULT_WAIT  # the Summary shows the template, "{{ settings.UPTIME_INTERVAL }}"
    return min(3 * interval, MAX_DEFAULT_WAIT)


def recent_runs(client: Client, limit: int = 50) -> list[dict]:
    """The newest runs of the workflow, newest first."""
    body = call(client, "GET", "/api/runs", params={"workflow": WORKFLOW, "limit": limit})
    return body["runs"]


def watch(client: Client, seconds: float, seen: set[str]) -> int:
    """Print each new finished run for ``seconds``; the number printed."""
    printed = 0
    deadline = time.monotonic() + seconds
    while True:
        for run in reversed(recent_runs(client, 20)):
            if run["id"] not in seen and run["status"] in FINISHED:
                seen.add(run["id"])
                print(run_line(run), flush=True)
                printed += 1
        if time.monotonic() >= deadline:
            return printed
        time.sleep(min(POLL_EVERY, max(deadline - time.monotonic(), 0)))


def monitor(client: Client, seconds: float, was_running: bool) -> None:
    """Start the monitor, show scheduled checks for ``seconds``, then stop it (unless it was running before)."""
    seen = {run["id"] for run in recent_runs(client)}
    call(client, "POST", f"/api/workflows/{WORKFLOW}/start")
    print(f"\nStarted {WORKFLOW} (POST /api/workflows/{WORKFLOW}/start): the server now checks on its own.")
    print(f"Watching its scheduled checks for {seconds:g} s:")
    print("  time      status     code  latency  alert")
    printed = 0
    try:
        printed = watch(client, seconds, seen)
    except KeyboardInterrupt:
        print("  interrupted")
    finally:
        if was_running:
            print(f"\n{WORKFLOW} was already running before the demo, so it is left running.")
        else:
            summary = call(client, "POST", f"/api/workflows/{WORKFLOW}/stop")
            print(f"\nStopped {WORKFLOW} (POST /api/workflows/{WORKFLOW}/stop): status {summary['status']}.")
    if printed == 0:
        print("No scheduled check finished in that time. The server checks every UPTIME_INTERVAL seconds")
        print("(60 by default); restart it with UPTIME_INTERVAL=5 python run.py for a lively demo.")
    else:
        print(f"{printed} scheduled check(s) shown.")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 on success, 1 when the server is missing or refuses something."""
    args = parse_args(argv)
    with Client(timeout=10) as client:
        if not require_server(client):
            return 1
        try:
            summary = call(client, "GET", f"/api/workflows/{WORKFLOW}")
            show_summary(summary)
            check_once(client)
            seconds = args.wait if args.wait is not None else default_wait(summary)
            monitor(client, seconds, was_running=summary["status"] == "running")
        except DemoError as error:
            print(f"demo_2.py: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
