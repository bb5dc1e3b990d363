"""PyFlow's entry point: serve (default), list, run.

    python run.py                       serve the API on HOST:PORT with waitress
    python run.py worker                execute queued runs (WORKFLOW_EXECUTOR=procrastinate or celery)
    python run.py list                  list registered workflows
    python run.py run NAME --input '{"url": "http://127.0.0.1:5001/api/health"}'
    python run.py validate FILE...      check workflow definitions (YAML or JSON)
    python run.py secrets set NAME      store a secret, its value read from standard input (list, delete NAME,
                                        rotate-key)
    python run.py cancel|pause|resume|retry RUN_ID   (skip RUN_ID STEP) on the running server
    python run.py audit verify          check the audit log's hash chain (exit 1 naming the first broken entry)

The seed's spellings work too: --list, --workflow NAME --context JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from app.core.config import load_settings, parse_setting
from app.errors import ConfigError, PyFlowError
from app.runs import RunStatus

EXIT_FAILED_RUN = 1
EXIT_USAGE = 2
CONTROL_OPERATIONS = ("cancel", "pause", "resume", "retry", "skip")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="PyFlow: trigger/action workflows on Flask.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default INFO for serve)")
    parser.add_argument("--list", action="store_true", help="same as the list command")
    parser.add_argument("--workflow", metavar="NAME", help="same as: run NAME")
    parser.add_argument("--context", metavar="JSON", help="inputs for --workflow (same as --input)")
    _address_options(parser, None)
    commands = parser.add_subparsers(dest="command")
    _address_options(commands.add_parser("serve", help="serve the REST API (the default)"), argparse.SUPPRESS)
    commands.add_parser("worker", help="execute the runs of a queue's jobs (WORKFLOW_EXECUTOR=procrastinate|celery)")
    commands.add_parser("list", help="list the registered workflows")
    run = commands.add_parser("run", help="run a workflow once in this process and print the run as JSON")
    run.add_argument("name", help="the workflow's name")
    run.add_argument("--input", default=None, metavar="JSON", help="the run's inputs as a JSON object")
    validate = commands.add_parser("validate", help="check workflow definition files (YAML or JSON)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    secrets = commands.add_parser("secrets", help="manage the encrypted secrets templates read as {{ secrets.NAME }}")
    actions = secrets.add_subparsers(dest="action", required=True)
    put = actions.add_parser("set", help="store a secret; its value is read from standard input, never argv")
    put.add_argument("name")
    actions.add_parser("list", help="list the secrets' names and times (never their values)")
    delete = actions.add_parser("delete", help="forget a secret")
    delete.add_argument("name")
    actions.add_parser("rotate-key", help="re-encrypt every secret with a new key (docs/security/secrets.md)")

    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_commands.add_parser("verify", help="check the hash chain; exit 1 naming the first broken entry")
    for operation in CONTROL_OPERATIONS:
        control = commands.add_parser(operation, help=f"{operation} a run of the server at WORKFLOW_API_URL")
        control.add_argument("run_id")
        if operation == "skip":
            control.add_argument("step", help="the failed step to skip")
    return parser


def _address_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--host`` and ``--port`` of serve (before or after the word: serve is the default command)."""
    # SUPPRESS on the subcommand: its own default would overwrite a value given before the word "serve".
    parser.add_argument("--host", default=default, help="the address to serve on (overrides HOST; default 127.0.0.1)")
    parser.add_argument("--port", default=default,
                        help="the port to serve on (overrides PORT; default 5001, 0 picks a free one)")


def _use_address(host: str | None, port: str | None) -> None:
    """Give serve's ``--host``/``--port`` to the settings it and the app read (HOST and PORT)."""
    for option, name, value in (("--host", "HOST", host), ("--port", "PORT", port)):
        if value is None:
            continue
        try:
            parse_setting(name, value)
        except ConfigError as error:
            raise PyFlowError(f"{option}: {error.message}") from None
        os.environ[name] = value


def _configure_logging(level: str | None, default: str) -> None:
    name = (level or default).upper()
    if not isinstance(logging.getLevelName(name), int):
        # A usage error like a bad --input: exit 2, one line, no traceback.
        print(f"run.py: --log-level must be DEBUG, INFO, WARNING or ERROR, got {level!r}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(name)
    from app.core.console_log import ConsoleFormatter
    console.setFormatter(ConsoleFormatter())  # a line break in quoted text cannot forge a record
    from app.core.redaction import LOG_FILTER, settings_scrubber
    LOG_FILTER.scrubber = settings_scrubber(os.environ)  # create_app sets it again from its settings
    console.addFilter(LOG_FILTER)  # secret settings' values never reach the console
    # The root logger passes INFO on even when the console shows less: runs keep their own logs.
    logging.basicConfig(level=min(logging.INFO, logging.getLevelName(name)), handlers=[console])
    if logging.getLevelName(name) > logging.DEBUG:
        # APScheduler logs two INFO lines per poll: a flood at one poll a second.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if logging.getLevelName(name) > logging.INFO:
        # A worker's procrastinate logs two INFO lines per job, on its event loop, never inside a run's log:
        # when the console shows less, they are dropped before a record is made (a worker's CPU per run).
        logging.getLogger("procrastinate").setLevel(name)


def _inputs(raw: str | None, option: str = "--input") -> dict[str, Any]:
    """The run's inputs from ``option``'s JSON; errors name the option the user typed."""
    if not raw:
        return {}
    try:
        inputs = json.loads(raw)
    except json.JSONDecodeError as error:
        raise PyFlowError(f"{option} is not valid JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(inputs, dict):
        raise PyFlowError(f"{option} must be a JSON object, got {type(inputs).__name__}")
    return inputs


def serve() -> int:
    """Serve the API with waitress until SIGTERM or Ctrl-C, then shut down cleanly (app/api/server.py)."""
    from app.api.auth import exposure_problem
    from app.api.server import serve as serve_forever

    settings = load_settings()
    if problem := exposure_problem(settings):
        print(f"run.py: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return serve_forever(settings)


def worker() -> int:
    """Execute queued runs until SIGTERM or Ctrl-C; then halt them at a step's end for other workers."""
    import signal
    import threading

    from app.core.leases import process_owner
    from app.core.redaction import install_log_filter
    from app.core.runtime import Runtime

    settings = load_settings()
    install_log_filter(settings)
    runtime = Runtime(settings, worker=True)
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        logging.getLogger("pyflow.worker").info("%s: stopping; runs halt at their step's end",
                                                signal.Signals(signum).name)
        grace = float(settings["WORKFLOW_SHUTDOWN_GRACE"])
        threading.Thread(target=runtime.stop_work, args=(grace,), name="pyflow-stop", daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    logging.getLogger("pyflow.worker").info("worker %s: up to %s runs at once, from %s", process_owner(),
                                            settings["WORKFLOW_WORKER_CONCURRENCY"], settings["WORKFLOW_EXECUTOR"])
    try:
        runtime.work()
    finally:
        runtime.shutdown(timeout=1.0)
    return 0


def list_workflows() -> int:
    """Print one line per registered workflow."""
    from app.core.runtime import Runtime

    runtime = Runtime(load_settings())
    for summary in runtime.summaries():
        print(f"{summary['name']:<28} {summary['trigger']['type']:<9} {summary['description']}")
    return 0


def run_once(name: str, raw_inputs: str | None, option: str = "--input") -> int:
    """Run a workflow in this process, print the run as JSON; non-zero when it failed.

    It holds the store's lock as a server does: beside a running server it is refused (run it
    there: POST /api/workflows/NAME/runs), and no server starts on the store while it runs.
    """
    from app.core.runtime import Runtime
    from app.storage.lock import StoreLock, StoreLocked

    settings = load_settings()
    # This process executes the run itself, whatever executes the server's runs.
    settings["WORKFLOW_EXECUTOR"] = "local"
    inputs = _inputs(raw_inputs, option)
    lock = StoreLock(settings["WORKFLOW_STORAGE_PATH"])
    try:
        lock.acquire()
    except StoreLocked as error:
        raise PyFlowError(f"{error.message}; or start the run on that server: "
                          f"POST /api/workflows/{name}/runs") from None
    try:
        runtime = Runtime(settings)
        try:
            run = runtime.run_sync(name, inputs)
        finally:
            runtime.shutdown(timeout=1.0)
    finally:
        lock.release()
    print(json.dumps(run, indent=2))
    return 0 if run["status"] == RunStatus.SUCCEEDED else EXIT_FAILED_RUN


def validate(files: list[str]) -> int:
    """Check definition files as the server would; one line per file, then each of its problems with its path."""
    from app.core.definitions import checked
    from app.core.plugins import load_plugins
    from app.core.secrets import Placeholders
    from app.core.templating import Renderer
    from workflows.declarative import DefinitionError, read_definition

    settings = load_settings()
    load_plugins()  # plugins' step and trigger types; a broken plugin is logged and skipped
    renderer = Renderer(settings["WORKFLOW_TEMPLATE_TIMEOUT"])
    renderer.provide("secrets", Placeholders())  # the shape is checked here, not the store's secrets
    failed = 0
    for name in files:
        try:
            workflow, _ = checked(read_definition(name), name, settings, renderer)
        except DefinitionError as error:
            failed += 1
            print(f"{name}: invalid")
            for problem in error.problems:
                print(f"  {problem['path'] or '(top)'}: {problem['message']}")
            continue
        print(f"{name}: ok ({workflow.name}: {len(workflow.actions)} steps, {workflow.trigger.type} trigger)")
    return EXIT_FAILED_RUN if failed else 0


def secrets_command(action: str, name: str) -> int:
    """``secrets set|list|delete|rotate-key`` on the store the settings name (a running server sees it at once)."""
    from app.core import audit
    from app.core.runtime import open_store
    from app.core.secrets import Secrets, check_name

    settings = load_settings()
    if action in ("set", "delete"):
        check_name(name, "NAME")
    store = open_store(settings)
    try:
        secrets = Secrets(store, settings)
        secrets.check()
        if action == "set":
            if sys.stdin.isatty():
                import getpass

                value = getpass.getpass(f"value of secret {name} (not shown): ")
            else:
                value = sys.stdin.read().rstrip("\r\n")  # `echo ... |` and files end with a newline
            if not value:
                raise PyFlowError(f"secrets set {name}: the value read from standard input is empty; "
                                  f"pipe it in: printf %s \"$VALUE\" | python run.py secrets set {name}")
            created = secrets.set(name, value)
            audit.record(store, "cli", "secret.set", name)
            print(f"secret {name} {'stored' if created else 'replaced'}")
        elif action == "list":
            for record in secrets.names():
                print(f"{record['name']:<28} created {record['created_at']}  updated {record['updated_at']}")
        elif action == "delete":
            secrets.delete(name)
            audit.record(store, "cli", "secret.delete", name)
            print(f"secret {name} deleted")
        else:
            count = secrets.rotate()
            where = (f"WORKFLOW_KEY_FILE {secrets.key_file}" if not settings.get("WORKFLOW_ENCRYPTION_KEY")
                     else "WORKFLOW_NEW_ENCRYPTION_KEY; now set WORKFLOW_ENCRYPTION_KEY to it on every process")
            print(f"re-encrypted {count} secrets with the new key in {where}")
    finally:
        store.close()
    return 0


def control(operation: str, run_id: str, step: str | None) -> int:
    """Ask the running server to cancel/pause/resume/retry/skip a run; print the run as JSON."""
    import requests

    settings = load_settings()
    base = settings["WORKFLOW_API_URL"].rstrip("/")
    url = f"{base}/api/runs/{run_id}/{operation}"
    # The token the server's settings name, or one of the operator tokens made with POST /api/tokens.
    token = settings["WORKFLOW_API_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.post(url, json={"step": step} if step else None, headers=headers, timeout=30)
    except requests.ConnectionError:
        print(f"run.py: PyFlow is not running at {base}; start it with: python run.py", file=sys.stderr)
        return EXIT_USAGE
    except requests.RequestException as error:
        print(f"run.py: {url}: {type(error).__name__}", file=sys.stderr)
        return EXIT_USAGE
    if response.status_code == 401:
        # A setting to fix on this side, as an unreachable server is: name it, not the HTTP header.
        why = ("refused WORKFLOW_API_TOKEN: set it to the server's token or one made with POST /api/tokens" if token
               else "needs a token: set WORKFLOW_API_TOKEN (the server's, or one made with POST /api/tokens)")
        print(f"run.py: {operation} {run_id}: PyFlow at {base} {why}", file=sys.stderr)
        return EXIT_USAGE
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:200]}}
    if response.ok:
        print(json.dumps(body, indent=2))
        return 0
    print(f"run.py: {operation} {run_id}: {body.get('error', {}).get('message', response.reason)}", file=sys.stderr)
    return EXIT_FAILED_RUN


def audit_verify() -> int:
    """Walk the audit log of the configured store (JSON or PostgreSQL); 0 when the chain holds, 1 naming where not."""
    from app.core.audit import verify
    from app.core.runtime import open_store

    store = open_store(load_settings())
    try:
        checked, broken = verify(store.audit_entries())
    finally:
        store.close()
    if broken is not None:
        print(f"run.py: audit verify: {broken} ({checked} entries before it hold)", file=sys.stderr)
        return EXIT_FAILED_RUN
    print(f"audit log: {checked} entries, the chain holds")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = "list" if args.list else "run" if args.workflow else args.command or "serve"
    _configure_logging(args.log_level, "INFO" if command in ("serve", "worker") else "WARNING")
    try:
        if command != "serve" and (args.host is not None or args.port is not None):
            raise PyFlowError(f"--host and --port are options of serve, not of {command}")
        if command == "serve":
            _use_address(args.host, args.port)
            return serve()
        if command == "worker":
            return worker()
        if command == "list":
            return list_workflows()
        if command == "validate":
            return validate(args.files)
        if command == "secrets":
            return secrets_command(args.action, getattr(args, "name", ""))

        if command == "audit":
            return audit_verify()
        if command in CONTROL_OPERATIONS:
            return control(command, args.run_id, getattr(args, "step", None))
        name = args.workflow or args.name
        if args.workflow:
            return run_once(name, args.context, "--context")
        return run_once(name, args.input)
    except PyFlowError as error:
        print(f"run.py: {error.message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        # Whoever read the output went away (`python run.py run NAME | head`): exit as other commands do,
        # without a traceback, and with nothing more written to the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED_RUN)
