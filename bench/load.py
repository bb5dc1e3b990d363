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
import multiprocessing
import os
import re
import statistics
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


def _group(url: str, clients: int, start_at: float, stop_at: float) -> tuple[int, dict[int, int], int]:
    """One client process: ``clients`` threads POSTing back to back between two wall-clock times."""
    counts = [0] * clients
    statuses: dict[int, int] = {}
    errors = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        with requests.Session() as session:
            time.sleep(max(start_at - time.time(), 0))
            while time.time() < stop_at:
                try:
                    response = session.post(url, json={}, timeout=120)
                except requests.RequestException:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                counts[index] += response.status_code == 200

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), statuses, errors[0]


def load(url: str, clients: int, seconds: float, processes: int = 4) -> dict:
    """``clients`` clients, spread over ``processes`` (one Python's GIL would be the bottleneck): runs/s."""
    start_at = time.time() + 3.0  # every process has started its threads by then
    stop_at = start_at + seconds
    shares = [clients // processes + (index < clients % processes) for index in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        groups = pool.starmap(_group, [(url, share, start_at, stop_at) for share in shares])
    elapsed = max(time.time() - start_at, seconds)  # the last requests end after ``seconds``: they count too
    statuses: dict[int, int] = {}
    for _, answered, _ in groups:
        for status, count in answered.items():
            statuses[status] = statuses.get(status, 0) + count
    return {"clients": clients, "runs_per_s": round(sum(group[0] for group in groups) / elapsed, 1),
            "answers": statuses, "errors": sum(group[2] for group in groups), "seconds": round(elapsed, 1)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(rounds: list[dict], cpu: list[float]) -> dict:
    statuses: dict[int, int] = {}
    for measured in rounds:
        for status, count in measured["answers"].items():
            statuses[status] = statuses.get(status, 0) + count
    answered = sum(statuses.values())
    return {"clients": rounds[0]["clients"], "runs_per_s": statistics.median(r["runs_per_s"] for r in rounds),
            "rounds_runs_per_s": [r["runs_per_s"] for r in rounds], "answers": statuses,
            "errors": sum(r["errors"] for r in rounds),
            "server_cpu_ms_per_request": round(sum(cpu) * 1000 / answered, 2) if answered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    args = parser.parse_args()
    rounds, seconds = (2, 4.0) if args.quick else (3, 10.0)
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": "0", "WORKFLOW_STORAGE_PATH": str(Path(folder) / "data"),
               "WORKFLOW_MODULES": "bench.noop_workflows", "PYTHONPATH": str(ROOT), "WORKFLOW_API_TOKEN": "",
               "WORKFLOW_MAX_CONCURRENT": "8"}
        server, base, stderr = _start(env)
        measured: dict[int, list[dict]] = {50: [], 200: []}
        cpu: dict[int, list[float]] = {50: [], 200: []}
        try:
            url = f"{base}/api/workflows/three_noops/runs?wait=60"
            load(url, 8, 2.0)  # warm-up: imports, first files
            # Alternating rounds, medians compared: this machine is shared and its speed drifts.
            for _ in range(rounds):
                for clients in (50, 200):
                    before = _cpu_seconds(server.pid)
                    measured[clients].append(load(url, clients, seconds))
                    cpu[clients].append(_cpu_seconds(server.pid) - before)
        finally:
            exit_code = _stop(server)
        queue_lines = stderr.read_text(errors="replace").count("Task queue depth")
    fifty, two_hundred = _summary(measured[50], cpu[50]), _summary(measured[200], cpu[200])
    result = {
        "benchmark": "load",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "workflow": "three_noops (3 no-op steps), POST ?wait=60, one keep-alive connection per client",
        "client_processes": 4,
        "rounds": rounds,
        "seconds_per_round": seconds,
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
