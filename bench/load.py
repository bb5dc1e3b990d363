"""Benchmark under load: POST ?wait runs/s against a real run.py at 50 and at 200 concurrent clients.

Run as ``python bench/load.py`` (``--quick`` for a shorter run); prints one JSON object.
The figure that matters is the ratio of the two throughputs (target >= 0.8): more
clients must queue, not collapse the server (waitress's old limit of 100
connections left half of 200 clients unanswered). Every request must be answered:
the errors count is part of the result. Not a test: timings belong here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    """run.py serving, its base URL, and the file its stderr goes to (for the queue-depth lines)."""
    stderr = Path(env["WORKFLOW_STORAGE_PATH"]).parent / "stderr.txt"
    with stderr.open("w") as errors:
        process = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=errors, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"on (http://[\d.]+:\d+)", process.stdout.readline())
        if match:
            return process, match.group(1), stderr
    process.kill()
    raise RuntimeError("run.py did not start")


def _stop(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


def load(url: str, clients: int, seconds: float) -> dict:
    """``clients`` threads POSTing back to back for ``seconds``: runs/s, answers and errors."""
    counts = [0] * clients
    errors: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    stop = [0.0]

    def client(index: int) -> None:
        with requests.Session() as session:
            ready.wait()
            while time.monotonic() < stop[0]:
                try:
                    response = session.post(url, json={}, timeout=120)
                except requests.RequestException as error:
                    with lock:
                        errors.append(type(error).__name__)
                    continue
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    counts[index] += 1

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    stop[0] = time.monotonic() + seconds
    ready.wait()
    start = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start  # the last requests end after ``seconds``: they count too
    return {"clients": clients, "runs_per_s": round(sum(counts) / elapsed, 1), "answers": statuses,
            "errors": len(errors), "seconds": round(elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a shorter load per level")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 15.0
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": "0", "WORKFLOW_STORAGE_PATH": str(Path(folder) / "data"),
               "WORKFLOW_MODULES": "bench.noop_workflows", "PYTHONPATH": str(ROOT), "WORKFLOW_API_TOKEN": "",
               "WORKFLOW_MAX_CONCURRENT": "8"}
        server, base, stderr = _start(env)
        try:
            url = f"{base}/api/workflows/three_noops/runs?wait=60"
            load(url, 8, 2.0)  # warm-up: imports, first files
            fifty = load(url, 50, seconds)
            two_hundred = load(url, 200, seconds)
        finally:
            exit_code = _stop(server)
        queue_lines = stderr.read_text(errors="replace").count("Task queue depth")
    result = {
        "benchmark": "load",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "workflow": "three_noops (3 no-op steps), POST ?wait=60, one keep-alive connection per client",
        "at_50": fifty,
        "at_200": two_hundred,
        "ratio_200_to_50": round(two_hundred["runs_per_s"] / fifty["runs_per_s"], 3) if fifty["runs_per_s"] else None,
        "target_ratio": 0.8,
        "queue_depth_log_lines": queue_lines,
        "exit_code_after_sigterm": exit_code,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
