"""Demo 1: insurance applications, driven through PyFlow's REST API with pyflow_client.py.

Start the server in one terminal (no mail server needed: replies go to the outbox folder):

    python run.py

then, in another:

    python demo_1.py              # upload the two sample applications
    python demo_1.py --watch      # then also watch the mailbox live (needs IMAP_HOST and friends on the server)

The demo uploads samples/application_company_a.pdf (complete) and
samples/application_company_b_invalid.pdf (three mistakes) to the
insurance_application workflow and prints what was read, whether it is valid
and where the reply went. When the server has IMAP_* settings, the demo also
starts the mailbox-watching workflow and says how to stop it.
WORKFLOW_API_URL says where the server is (default http://127.0.0.1:5001), WORKFLOW_API_TOKEN its token.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from demo_client import FINISHED, DemoError, call, require_server, steps_of
from pyflow_client import Client

WORKFLOW = "insurance_application"
SAMPLES = Path(__file__).resolve().parent / "samples"
REPLY_TO = "applicant@example.org"
WAIT_SECONDS = 30
POLL_EVERY = 1.0


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested extracted data as dotted paths, the keys of the template's labels."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def show_summary(summary: dict) -> None:
    """Print what the workflow does and whether its mailbox can be watched."""
    print(f"Workflow {summary['name']}: {summary['description']}")
    print(f"  steps: {', '.join(action['name'] + ' (' + action['type'] + ')' for action in summary['actions'])}")
    if summary.get("error"):
        print(f"  e-mail trigger: not configured ({summary['error']});")
        print("  uploads work all the same. Set IMAP_HOST, IMAP_USER and IMAP_PASSWORD on the server to read mail.")
    else:
        trigger = summary["trigger"]
        # The Summary shows the trigger as the workflow wrote it: unset options mean "from the IMAP_* settings".
        mailbox = (f"{trigger['user']} at {trigger['host']}:{trigger['port']}, folder {trigger['folder']}"
                   if trigger.get("host") else "the server's IMAP_* mailbox")
        print(f"  e-mail trigger: {mailbox}, checked every {summary.get('check_interval'):g} s; "
              f"status {summary['status']}")


def show_extract(result: dict) -> None:
    """Print the template, how the fields were read, and each field with its label."""
    labels = result.get("labels") or {}
    values = flatten(result.get("extracted_data") or {})
    print(f"  template: {result.get('template')} ({result.get('method')} fields of {result.get('source')})")
    print("  extracted data:")
    for path in labels or values:
        print(f"    {labels.get(path, path + ':'):<15} {values.get(path, '(not found)')}")


def show_validation(result: dict, extracted: dict) -> None:
    """Print success or failure and every problem, in the order of the form."""
    labels = extracted.get("labels") or {}
    values = flatten(extracted.get("extracted_data") or {})
    order = {path: index for index, path in enumerate(labels)}
    print(f"  validation: {result.get('validation_result')}")
    for error in sorted(result.get("errors") or [], key=lambda error: order.get(error["path"], len(order))):
        path = error["path"]
        wrote = f" (you wrote {values[path]})" if path in values else ""
        print(f"    - {labels.get(path, path).rstrip(':')}: {error['message']}{wrote}")


def show_reply(step: dict | None) -> None:
    """Print where the reply went: SMTP, the outbox file, skipped or failed."""
    if step is None or step["status"] in ("pending", "running"):
        print("  reply: not sent (the run stopped before it)")
    elif step["status"] == "skipped":
        print("  reply: skipped (no reply_to input and no sender)")
    elif step["status"] != "succeeded":
        print(f"  reply: {step['status']}: {step.get('error')}")
    else:
        result = step["result"] or {}
        print(f"  reply: \"{result.get('subject')}\" to {result.get('recipient')}")
        if result.get("delivery") == "outbox":
            print(f"    written to the outbox (no SMTP_HOST set): {result.get('path')}")
        else:
            print(f"    sent over SMTP, Message-ID {result.get('message_id')}")


def submit(client: Client, sample: Path) -> dict:
    """Upload one sample as a multipart form and print the finished run."""
    path = f"/api/workflows/{WORKFLOW}/runs?wait={WAIT_SECONDS}"
    print(f"\nUploading {sample.name} (POST {path}, reply_to {REPLY_TO}) ...")
    with sample.open("rb") as handle:
        files = {"file": (sample.name, handle, "application/pdf")}
        data = {"inputs": json.dumps({"reply_to": REPLY_TO})}
        run = call(client, "POST", path, files=files, data=data, timeout=WAIT_SECONDS + 10)
    print(f"  run {run['id']}: {run['status']}")
    if run["status"] not in FINISHED:  # 202: still running after the wait
        print(f"  still running after {WAIT_SECONDS} s; see GET /api/runs/{run['id']}")
        return run
    steps = steps_of(run)
    extracted = steps["extract"]["result"] or {}
    if steps["extract"]["status"] == "succeeded":
        show_extract(extracted)
    if steps["validate"]["status"] == "succeeded":
        show_validation(steps["validate"]["result"] or {}, extracted)
    show_reply(steps.get("notify"))
    if run["status"] == "failed" and steps["notify"]["status"] != "failed":
        print(f"  the run failed: {run.get('error')}")
    return run


def watch(client: Client) -> None:
    """Start the workflow, print each run the mailbox starts, and stop it on Ctrl-C."""
    call(client, "POST", f"/api/workflows/{WORKFLOW}/start")
    print(f"\nStarted {WORKFLOW} (POST /api/workflows/{WORKFLOW}/start): the server now reads the mailbox.")
    print("Send an e-mail with a PDF application to it. Stop with Ctrl-C here (which stops the workflow),")
    print(f"or with POST {client.base_url}/api/workflows/{WORKFLOW}/stop.", flush=True)
    body = call(client, "GET", "/api/runs", params={"workflow": WORKFLOW, "limit": 50})
    seen = {run["id"] for run in body["runs"]}
    try:
        while True:
            time.sleep(POLL_EVERY)
            summary = call(client, "GET", f"/api/workflows/{WORKFLOW}")
            body = call(client, "GET", "/api/runs", params={"workflow": WORKFLOW, "limit": 20})
            for run in reversed(body["runs"]):
                if run["id"] not in seen and run["status"] in FINISHED:
                    seen.add(run["id"])
                    notify = steps_of(run).get("notify") or {}
                    outcome = (notify.get("result") or {}).get("subject") or notify.get("status")
                    sender = run["trigger_data"].get("from") or "an upload"
                    print(f"  {run['id']} from {sender}: {run['status']}, reply: {outcome}", flush=True)
            if summary["status"] != "running":
                print(f"\n{WORKFLOW} was stopped (POST .../stop); done watching.")
                return
    except KeyboardInterrupt:
        summary = call(client, "POST", f"/api/workflows/{WORKFLOW}/stop")
        print(f"\nStopped {WORKFLOW} (POST /api/workflows/{WORKFLOW}/stop): status {summary['status']}.")


def start_watching(client: Client) -> None:
    """IMAP is configured on the server: start the mailbox-watching workflow and say how to stop it."""
    summary = call(client, "POST", f"/api/workflows/{WORKFLOW}/start")
    every = summary.get("check_interval")
    print(f"\nThe mailbox is configured, so {WORKFLOW} is now started: the server checks it every {every:g} s")
    print("and replies to each e-mail with a PDF application. It stays started across restarts; stop it with")
    print(f"  curl -X POST {client.base_url}/api/workflows/{WORKFLOW}/stop")
    print("or watch it handle mail with: python demo_1.py --watch (Ctrl-C there stops it).")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 on success, 1 when the server is missing or refuses something."""
    parser = argparse.ArgumentParser(description="Demo 1: insurance applications through PyFlow's REST API.")
    parser.add_argument("--watch", action="store_true",
                        help="after the uploads, start the workflow so it reads the mailbox (needs IMAP_* settings)")
    args = parser.parse_args(argv)
    with Client(timeout=10) as client:
        if not require_server(client):
            return 1
        try:
            summary = call(client, "GET", f"/api/workflows/{WORKFLOW}")
            show_summary(summary)
            submit(client, SAMPLES / "application_company_a.pdf")
            submit(client, SAMPLES / "application_company_b_invalid.pdf")
            if summary.get("error"):
                if args.watch:
                    print(f"\nCannot watch the mailbox: {summary['error']}")
            elif args.watch:
                watch(client)
            else:
                start_watching(client)
        except DemoError as error:
            print(f"demo_1.py: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
