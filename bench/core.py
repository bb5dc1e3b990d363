"""Benchmark of the core: engine overhead per step, durable step cost, runs/s, HTTP, listing, RSS.

Run as ``python bench/core.py`` (``--quick`` for a shorter run); prints one JSON object.
Every figure that has a baseline measured in the same run reports the ratio, since
this machine is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import json
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

from app.core.binding import BoundWorkflow  # noqa: E402
from app.core.config import load_settings  # noqa: E402
from app.core.engine import Engine  # noqa: E402
from app.core.templating import Renderer  # noqa: E402
from app.runs import new_run, new_run_id, new_step  # noqa: E402
from app.storage.json.store import JsonStore  # noqa: E402
from app.storage.memory import MemoryStore  # noqa: E402
from bench.noop_workflows import NoopAction, SyncedNoopAction, ThreeNoops, chain  # noqa: E402

HELLO_APP = """
import sys
from flask import Flask
from waitress import create_server
app = Flask(__name__)

@app.post("/hello")
def hello():
    return {"status": "ok"}

server = create_server(app, host="127.0.0.1", port=0, threads=8)
print(f"serving on http://127.0.0.1:{server.effective_port}", flush=True)
server.run()
"""


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _engine(store, settings=None) -> tuple[Engine, Renderer, dict]:
    settings = settings or load_settings({})
    renderer = Renderer()
    return Engine(store, settings, renderer), renderer, settings


def engine_overhead(store_factory, steps: int, rounds: int, action: type[NoopAction] = NoopAction) -> dict:
    """µs per step of a long chain of no-op steps, minus the no-op calls themselves."""
    engine, renderer, settings = _engine(store_factory())
    bound = BoundWorkflow.bind(chain(steps, action), settings, renderer)
    per_step = []
    for _ in range(rounds):
        start = time.perf_counter()
        run, _ = engine.submit(bound, {})
        engine.wait(run["id"], 600)
        per_step.append((time.perf_counter() - start) / steps)
    action = NoopAction("bare")
    start = time.perf_counter()
    for _ in range(steps):
        action.execute({})
    bare = (time.perf_counter() - start) / steps
    engine.shutdown(1)
    engine.store.close()  # its flush timer must not write into a folder being removed
    return {"us_per_step": round((_median(per_step[1:] or per_step) - bare) * 1e6, 1), "steps": steps}


def fsync_append_us(folder: Path, count: int = 300) -> float:
    """µs of one fsync'd append of a step-sized line: the floor of a durable step."""
    line = json.dumps({"seq": 1, "step": 3, "record": {"name": "step", "status": "succeeded", "result": {}}})
    fd = os.open(folder / "baseline.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, line.encode() + b"\n")
            os.fsync(fd)
        return (time.perf_counter() - start) / count * 1e6
    finally:
        os.close(fd)


def runs_per_second(store_factory, runs: int) -> float:
    """3-step no-op runs per second, submitted at once, in this process."""
    engine, renderer, settings = _engine(store_factory())
    bound = BoundWorkflow.bind(ThreeNoops, settings, renderer)
    start = time.perf_counter()
    ids = [engine.submit(bound, {})[0]["id"] for _ in range(runs)]
    for run_id in ids:
        engine.wait(run_id, 600)
    elapsed = time.perf_counter() - start
    engine.shutdown(1)
    engine.store.close()  # its flush timer must not write into a folder being removed
    return runs / elapsed


def _start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"on (http://[\d.]+:\d+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise RuntimeError(f"{command} did not start")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def _load(url: str, clients: int, seconds: float) -> float:
    """Requests per second from ``clients`` threads POSTing to ``url`` for ``seconds``."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                response = session.post(url, json={}, timeout=30)
                response.raise_for_status()
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - start)


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def http(seconds: float, clients: int = 8) -> dict:
    """POST ?wait runs/s against run.py beside a bare Flask app served by waitress the same way."""
    with tempfile.TemporaryDirectory() as storage:
        env = {**os.environ, "PORT": "0", "WORKFLOW_STORAGE_PATH": storage, "WORKFLOW_MODULES": "bench.noop_workflows",
               "PYTHONPATH": str(ROOT), "WORKFLOW_MAX_CONCURRENT": "8"}
        server, base = _start([sys.executable, "run.py", "--log-level", "WARNING"], env)
        try:
            time.sleep(1.0)
            idle_rss = _rss_mb(server.pid)
            pyflow = _load(f"{base}/api/workflows/three_noops/runs?wait=10", clients, seconds)
            loaded_rss = _rss_mb(server.pid)
        finally:
            _stop(server)
    hello, base = _start([sys.executable, "-c", HELLO_APP], {**os.environ})
    try:
        bare = _load(f"{base}/hello", clients, seconds)
    finally:
        _stop(hello)
    return {
        "pyflow_runs_per_s": round(pyflow, 1),
        "bare_flask_per_s": round(bare, 1),
        "ratio": round(pyflow / bare, 3),
        "target_ratio": 0.4,
        "clients": clients,
        "idle_rss_mb": round(idle_rss, 1),
        "rss_after_load_mb": round(loaded_rss, 1),
        "target_idle_rss_mb": 80,
    }


def _fill(root: Path, count: int) -> None:
    """Store ``count`` finished runs in the JSON store's layout, quickly (no fsync per run)."""
    runs, index = root / "runs", []
    runs.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        run = new_run("three_noops", [new_step("s1", "noop")], {"n": number}, "bench")
        run["id"] = new_run_id()
        run.update(status="succeeded", started_at=run["created_at"], finished_at=run["created_at"], progress=100)
        (runs / f"{run['id']}.json").write_text(json.dumps({"seq": 0, "run": run}))
        index.append(json.dumps({key: run[key] for key in ("id", "workflow", "status", "created_at", "started_at",
                                                            "finished_at")}))
    (root / "index.jsonl").write_text("\n".join(index) + "\n")


def listing(count: int) -> dict:
    """ms to list the newest 50 runs with ``count`` stored: first call (loads the index) and warm."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _fill(root, count)
        store = JsonStore(root)
        start = time.perf_counter()
        store.list_runs(limit=50)
        first = time.perf_counter() - start
        warm = []
        for _ in range(20):
            start = time.perf_counter()
            runs, _ = store.list_runs(limit=50)
            warm.append(time.perf_counter() - start)
        filtered = []
        for _ in range(5):
            start = time.perf_counter()
            store.list_runs(limit=50, status="succeeded", workflow="three_noops")
            filtered.append(time.perf_counter() - start)
        assert len(runs) == 50
    return {"runs_stored": count, "first_call_ms": round(first * 1000, 1), "warm_ms": round(_median(warm) * 1000, 2),
            "filtered_warm_ms": round(_median(filtered) * 1000, 2), "target_ms": 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a shorter HTTP load")
    args = parser.parse_args()
    rounds, http_seconds, runs = (3, 3.0, 200) if args.quick else (7, 8.0, 600)
    # HTTP first: on ext4 a folder's new files are slow to create for a while after many deletions
    # (the inode allocator skips recently freed inodes), and the phases below delete thousands.
    served = http(http_seconds)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        memory = engine_overhead(MemoryStore, 500, rounds)
        # Steps that must not run twice: each step's end is fsync'd before the next starts (the engine's worst case).
        durable = engine_overhead(lambda: JsonStore(tempfile.mkdtemp(dir=tmp)), 200, rounds, SyncedNoopAction)
        baseline = fsync_append_us(tmp)
        memory_rps = runs_per_second(MemoryStore, runs)
        durable_rps = runs_per_second(lambda: JsonStore(tempfile.mkdtemp(dir=tmp)), runs // 2)
    result = {
        "benchmark": "core",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "engine_overhead_memory": {**memory, "target_us": 20},
        "engine_overhead_durable": {
            **durable,
            "fsync_append_us": round(baseline, 1),
            "ratio_to_fsync_append": round(durable["us_per_step"] / baseline, 2),
            "target_ratio": 2.0,
        },
        "runs_per_s_3_noop_steps": {"memory_store": round(memory_rps, 1), "json_store": round(durable_rps, 1),
                                    "target": 300},
        "http": served,
        "listing": [listing(10_000), listing(100_000)],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
