"""Benchmark: how long a cold ``python run.py list`` and ``python run.py run NAME`` take, against importing Flask.

Run as ``python bench/cold_start.py [--rounds 15]``; prints one JSON object. Each round starts, in
turn, a fresh interpreter for ``python -c "import flask"`` (the baseline), ``python run.py list`` and
``python run.py run three_noops`` (bench/noop_workflows.py: three steps that do nothing, on a store in
a temporary folder), so the machine's load drifts over all three alike; the figures are medians of
wall-clock seconds, and ``ratio`` is each command's median over the baseline's (target <= 2).
Bytecode is written and one warm-up round is thrown away, as on a machine where PyFlow has run before.
``imports`` counts the modules each command imported and names the heavy packages among them
(a listing or a run of a workflow that reads no PDF should need neither Flask nor pypdf).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Packages a listing or a no-op run should not need; the benchmark reports which were imported anyway.
HEAVY = ("flask", "werkzeug", "waitress", "pypdf", "requests", "jsonschema", "apscheduler", "PIL", "fontTools")
TARGET_RATIO = 2.0


def _commands() -> dict[str, list[str]]:
    python = sys.executable
    return {
        "import_flask": [python, "-c", "import flask"],
        "list": [python, "run.py", "list"],
        "run_noop": [python, "run.py", "run", "three_noops"],
    }


def _env(storage: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WORKFLOW_", "PYTHON"))}
    env.update(WORKFLOW_STORAGE_PATH=str(storage), WORKFLOW_MODULES="bench.noop_workflows",
               SMTP_HOST="", IMAP_HOST="")
    return env


def _time(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def _imports(command: list[str], env: dict[str, str]) -> dict:
    """How many modules ``command`` imported, and which of the HEAVY packages."""
    traced = [command[0], "-X", "importtime", *command[1:]]
    stderr = subprocess.run(traced, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True).stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")]
    modules = [name for name in modules if name and name != "imported package"]
    return {"modules": len(modules), "heavy": sorted({name.split(".")[0] for name in modules} & set(HEAVY))}


def measure(rounds: int) -> dict:
    """Median seconds of each command over ``rounds`` interleaved rounds, and the ratios to the baseline."""
    commands = _commands()
    with tempfile.TemporaryDirectory(prefix="pyflow-cold-") as tmp:
        env = _env(Path(tmp) / "data")
        for command in commands.values():  # warm-up: bytecode written, files in the page cache
            _time(command, env)
        timings: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, command in commands.items():
                timings[name].append(_time(command, env))
        imports = {name: _imports(command, env) for name, command in commands.items()}
    medians = {name: statistics.median(values) for name, values in timings.items()}
    baseline = medians["import_flask"]
    return {
        "rounds": rounds,
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "min_s": {name: round(min(values), 4) for name, values in timings.items()},
        "ratio": {name: round(medians[name] / baseline, 2) for name in ("list", "run_noop")},
        "target_ratio": TARGET_RATIO,
        "imports": imports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    args = parser.parse_args()
    print(json.dumps({"cold_start": measure(args.rounds)}, indent=2))


if __name__ == "__main__":
    main()
