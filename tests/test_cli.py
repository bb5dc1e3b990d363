"""run.py's commands as a user types them: list, run, the seed's spellings and bad arguments."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.server import REPO, server_env

pytestmark = pytest.mark.slow  # runs run.py in processes of its own

# Real processes, each with its own storage folder, all running at once: start-up costs a second or two.
COMMANDS = {
    "list": ["list"],
    "seed_list": ["--log-level", "DEBUG", "--list"],
    "run_echo": ["run", "echo", "--input", '{"text": "hi"}'],
    "seed_run": ["--workflow", "echo", "--context", '{"text": "x"}'],
    "run_failing": ["run", "failing"],
    "run_unknown": ["run", "nope"],
}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    """Every command in COMMANDS, run to the end."""
    root = tmp_path_factory.mktemp("cli")
    processes = {}
    try:
        for name, args in COMMANDS.items():
            processes[name] = subprocess.Popen(
                [sys.executable, "run.py", *args],
                cwd=REPO,
                env=server_env(root / name),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        outputs = {}
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=60)
            outputs[name] = Result(process.returncode, stdout, stderr)
        return outputs
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.mark.parametrize("command", ["list", "seed_list"])
def test_list_prints_every_workflow(results, command):
    result = results[command]

    assert result.code == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    expected = {"uptime_monitor", "echo", "failing", "slow", "tick", "flaky", "typed_inputs"}
    assert expected <= set(names)
    assert names == sorted(names)
    echo = next(line for line in result.stdout.splitlines() if line.startswith("echo "))
    assert "manual" in echo and "Echoes the posted text." in echo
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("command", "text"), [("run_echo", "hi"), ("seed_run", "x")])
def test_run_prints_the_finished_run_as_json(results, command, text):
    result = results[command]

    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["workflow"] == "echo"
    assert run["status"] == "succeeded"
    assert run["trigger_data"] == {"text": text}
    assert [step["result"]["value"] for step in run["steps"]] == [text, text.upper()]
    assert run["id"].startswith("run_")
    assert run["finished_at"].endswith("Z")


def test_a_failed_run_exits_1_and_names_the_step(results):
    result = results["run_failing"]

    assert result.code == 1
    run = json.loads(result.stdout)
    assert run["status"] == "failed"
    assert "boom" in run["error"] and "this step always fails" in run["error"]
    assert "Traceback" not in result.stderr


def test_an_unknown_workflow_exits_2_with_one_clear_line(results):
    result = results["run_unknown"]

    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr == "run.py: no workflow named 'nope'\n"


def test_list_logs_only_warnings_unless_asked(results):
    assert results["list"].stderr == ""
    # seed_list ran with --log-level DEBUG.
    assert results["seed_list"].code == 0
    assert " DEBUG " in results["seed_list"].stderr


@pytest.fixture
def main(tmp_path, monkeypatch):
    """run.py's main() in this process, on a store under tmp_path (quicker than a process per bad argument)."""
    for name, value in server_env(tmp_path / "data").items():
        monkeypatch.setenv(name, value)
    import run

    # main() quiets APScheduler's and procrastinate's loggers; keep that from leaking into other tests.
    quieted = [logging.getLogger(name) for name in ("apscheduler", "procrastinate")]
    levels = [logger.level for logger in quieted]
    yield run.main
    for logger, level in zip(quieted, levels, strict=True):
        logger.setLevel(level)


def test_a_console_showing_warnings_makes_no_record_of_procrastinates_info_lines(main):
    assert main(["list"]) == 0  # the console's default level: WARNING
    # Two INFO lines per job a worker takes, which no run's log receives: not made at all, whatever the root's level.
    assert logging.getLogger("procrastinate").level == logging.WARNING


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "echo", "--input", "[1]"], "run.py: --input must be a JSON object, got list"),
        (["run", "echo", "--input", "{bad"],
         "run.py: --input is not valid JSON: Expecting property name enclosed in double quotes at column 2"),
        (["--workflow", "echo", "--context", '"text"'], "run.py: --context must be a JSON object, got str"),
        (["--workflow", "echo", "--context", "{bad"],
         "run.py: --context is not valid JSON: Expecting property name enclosed in double quotes at column 2"),
        (["run", "typed_inputs", "--input", '{"count": "three"}'],
         "run.py: invalid inputs for 'typed_inputs': count: 'three' is not of type 'integer'"),
        (["--log-level", "LOUD", "list"], "run.py: --log-level must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(main, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(args))

    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == message + "\n"


def test_a_control_command_with_a_malformed_api_url_names_the_setting(main, capsys, monkeypatch):
    """WORKFLOW_API_URL without http:// is a setting error, not a requests exception's class name."""
    monkeypatch.setenv("WORKFLOW_API_URL", "localhost:5001")

    assert main(["pause", "run_x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("run.py: setting WORKFLOW_API_URL must be an http:// or https:// URL such as "
                   "http://127.0.0.1:5001, got 'localhost:5001'\n")


def test_an_unknown_command_shows_usage(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: run.py" in err
    assert "invalid choice: 'frobnicate'" in err


def test_a_reader_that_went_away_ends_the_command_without_a_traceback(tmp_path):
    # `python run.py list | head -1` whose head exited before run.py wrote: the pipe is closed.
    process = subprocess.Popen([sys.executable, "run.py", "list"], cwd=REPO, env=server_env(tmp_path / "data"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
