"""Benchmark: what do runs waiting at once cost? Threads, memory, and the time to park and to wake them.

Run as ``python bench/parked.py [--runs 1000]``; prints one JSON object. Starts ``--runs`` runs of a
workflow whose first step is ``wait_for_event`` on the JSON store (a temporary folder), waits until all
are ``waiting``, counts the process's threads and its peak RSS, then publishes the one event they wait for
and times until all succeeded. Target: threads do not grow with the number of waiting runs.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(entry for entry in sys.path if Path(entry or ".").resolve() != HERE)]

from app.core.config import load_settings  # noqa: E402
from app.core.runtime import Runtime  # noqa: E402
from app.runs import RunStatus  # noqa: E402


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 1000
    with tempfile.TemporaryDirectory() as folder:
        settings = {**load_settings({}), "WORKFLOW_STORAGE_PATH": f"{folder}/data",
                    "WORKFLOW_KEY_FILE": f"{folder}/key", "WORKFLOW_MODULES": ()}
        runtime = Runtime(settings)
        runtime.start()
        try:
            runtime.create_definition({"name": "parks", "steps": [
                {"name": "signal", "type": "wait_for_event", "config": {"event": "go", "timeout": 3600}},
                {"name": "after", "type": "log", "config": {"message": "went"}}]})
            before = threading.active_count()
            started = time.perf_counter()
            for _ in range(runs):
                runtime.submit("parks", {})
            while len(runtime.store.find_run_ids({RunStatus.WAITING.value})) < runs:
                time.sleep(0.05)
            parked_s = time.perf_counter() - started
            time.sleep(6)  # idle slot threads end after 5 s
            waiting_threads = threading.active_count()
            started = time.perf_counter()
            answer = runtime.publish({"id": "go", "type": "go", "data": {}, "key": None, "at": "", "depth": 0})
            while len(runtime.store.find_run_ids({RunStatus.SUCCEEDED.value})) < runs:
                time.sleep(0.05)
            woken_s = time.perf_counter() - started
        finally:
            runtime.shutdown(timeout=5)
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"runs": runs, "threads_before": before, "threads_while_waiting": waiting_threads,
                      "resumed": len(answer["resumed"]), "park_s": round(parked_s, 2),
                      "wake_and_finish_s": round(woken_s, 2), "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main()
