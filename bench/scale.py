"""Benchmark of distributed mode: runs/s with 1, 2 and 4 workers, enqueue-to-first-step latency, durable step cost.

Run as ``python bench/scale.py`` from the repository root (``--quick`` for fewer runs, ``--only`` for some
parts); prints one JSON object, in about 2.5 minutes. It needs PostgreSQL (PYFLOW_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres: it creates a database of its own and drops it at the end) and,
for celery, Redis (PYFLOW_TEST_REDIS_URL, default redis://127.0.0.1:6379: it takes an empty database number
among 1-15 and empties it again at the end).

- ``procrastinate.workers_at_concurrency_N``: three_waits runs (bench/scale_workflows.py: three steps,
  each a GET that this process's HTTP server answers after 50 ms) on 1, 2, 4, then again 4, 2 and 1
  ``run.py worker`` processes, each with WORKFLOW_WORKER_CONCURRENCY=N (4, the default, then 1); runs/s
  from the first run's creation to the last one's end in the stored records, the better of the two rounds
  of each count, and the ratio of 4 workers to 1 (target >= 3.5).
  The machine's CPU use and the workers' CPU per run say whether slots or cores were the limit.
- ``latency``: runs created one at a time, about one in flight, on one worker: from the run's
  ``created_at`` to its first step's ``started_at`` (stored records), and from the enqueue call to the
  first step's request reaching the HTTP server (this process's clock); p50 (target <= 25 ms) and p99,
  for procrastinate, celery (Redis broker) and, for comparison, the local executor on PostgreSQL.
- ``durable_postgres``: 3-step no-op runs (bench/noop_workflows.py) one after the other in this process,
  the Engine on PostgresStore, each followed by three bare INSERT+COMMITs of a step-sized row on the same
  server: time per step over one INSERT+COMMIT (target <= 2x); ``local_json`` is the same run on the JSON
  store (local mode). ``durable_postgres.chain_of_200``: what one more step costs, with the run's creation and
  save spread over 200 steps, for idempotent steps (each end committed) and for steps that must not run twice
  (their start committed too, then their end).
- ``machine_cpu_busy_before``: how busy the cores were before it started (other processes: neighbours).
Not a test: timings belong here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.binding import BoundWorkflow  # noqa: E402
from app.core.config import load_settings  # noqa: E402
from app.core.engine import Engine  # noqa: E402
from app.core.templating import Renderer  # noqa: E402
from app.errors import PyFlowError  # noqa: E402
from app.runs import FINISHED_RUN, RunStatus, parse_time  # noqa: E402
from app.storage.json.store import JsonStore  # noqa: E402
from bench.noop_workflows import NoopAction, SyncedNoopAction, ThreeNoops, chain  # noqa: E402

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"
HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""',
}
MODULES = "bench.scale_workflows,bench.noop_workflows"
WAIT_MS = 50
# Runs one worker executes at once. Small on purpose: each slot spends its run waiting on HTTP, so
# N workers have N times the slots, and the ratio measures workers, as long as the cores keep up.
CONCURRENCY = 4
# The scaling is measured at the default and at 1 too: on a small machine 4 workers of 4 slots need
# more cores than it has, while 4 workers of 1 slot fit, showing whether anything but cores limits them.
CONCURRENCIES = (CONCURRENCY, 1)
# Latency: (runs, seconds between them) by --quick. About one run in flight at a time (each waits 3 x 50 ms),
# so a queue builds up only if the worker is starved of CPU, and then the figure says so.
LATENCY_RUNS = {False: (60, 0.15), True: (30, 0.15)}
FINISHED = sorted(status.value for status in FINISHED_RUN)
SERVICE_CLIENTS = ("psycopg", "psycopg_pool", "redis", "kombu", "celery", "procrastinate")
PARTS = ("durable", "local", "procrastinate", "celery")
TARGETS = {"ratio_4_to_1": 3.5, "latency_p50_ms": 25.0, "durable_ratio": 2.0}


class BenchError(Exception):
    """Why the benchmark cannot go on: one line for the user, no traceback."""


# -- the HTTP server the steps wait on ---------------------------------------------------------------------
class WaitServer(ThreadingHTTPServer):
    """``GET /wait?ms=N&run=ID&step=K`` answers after N ms; notes when each run's first step arrived."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WaitHandler)
        self.first_step: dict[str, float] = {}
        self.lock = threading.Lock()
        self.base = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> WaitServer:
        threading.Thread(target=self.serve_forever, name="wait-server", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()


class _WaitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        arrived = time.time()
        query = parse_qs(urlsplit(self.path).query)
        server: WaitServer = self.server  # type: ignore[assignment]
        if query.get("step") == ["1"]:
            with server.lock:
                server.first_step.setdefault(query.get("run", [""])[0], arrived)
        time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the JSON


# -- services --------------------------------------------------------------------------------------------
def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or ''}"


def _cause(error: BaseException) -> str:
    """The first line of a driver's error, without libpq's 'connection ... failed:' prefixes."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return re.sub(r"^(FATAL|ERROR):\s+", "", text.split(" failed: ")[-1])


def _reachable(what: str, url: str, port: int) -> None:
    """BenchError naming the service, where it was looked for and how to start it, unless a TCP connect works."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), timeout=2):
            return
    except OSError as error:
        raise BenchError(f"{what} is not reachable at {parts.hostname}:{parts.port or port} "
                         f"({error.strerror or error}); start it: {HOW_TO_START[what]}") from None


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise BenchError(f"{module} is not installed: pip install -r requirements-distributed.txt") from None


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server of ``admin_url``, dropped afterwards."""
    import psycopg

    _reachable("PostgreSQL", admin_url, 5432)
    name = f"pyflow_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        raise BenchError(f"cannot create a database on PostgreSQL at {_where(admin_url)}: {_cause(error)}") from None
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_database(base_url: str) -> Iterator[str]:
    """A ``redis://host:port/N`` URL of an empty Redis database (15 down to 1), emptied again afterwards."""
    import redis

    _reachable("Redis", base_url, 6379)
    parts = urlsplit(base_url)
    chosen = None
    try:
        for number in range(15, 0, -1):
            client = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=number,
                                 password=parts.password, socket_timeout=5)
            if client.dbsize() == 0:
                chosen = number, client
                break
            client.close()
    except redis.RedisError as error:
        raise BenchError(f"Redis at {_where(base_url)}: {error}") from None
    if chosen is None:
        raise BenchError(f"Redis at {_where(base_url)}: no empty database among 1-15 for the celery broker")
    number, client = chosen
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{number}", "", ""))
    finally:
        client.flushdb()
        client.close()


# -- machine -----------------------------------------------------------------------------------------------
def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_use(out: dict, pids: Callable[[], list[int]] = list) -> Iterator[None]:
    """Fill ``out`` with the machine's busy share (of all its cores) and the given processes' CPU seconds."""
    busy, total = _cpu_times()
    watched = {pid: _process_cpu(pid) for pid in pids()}
    bench = time.process_time()
    yield
    busy_after, total_after = _cpu_times()
    out["machine_cpu_busy"] = round((busy_after - busy) / max(total_after - total, 1), 3)
    out["workers_cpu_s"] = round(sum(_process_cpu(pid) - before for pid, before in watched.items()), 2)
    out["bench_process_cpu_s"] = round(time.process_time() - bench, 2)


def background_busy(seconds: float = 2.0) -> float:
    """The machine's busy share (of all its cores) over ``seconds`` before the benchmark starts: its neighbours."""
    busy, total = _cpu_times()
    time.sleep(seconds)
    busy_after, total_after = _cpu_times()
    return round((busy_after - busy) / max(total_after - total, 1), 3)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _summary_ms(values: list[float]) -> dict:
    return {"p50_ms": round(_percentile(values, 0.5) * 1000, 1), "p99_ms": round(_percentile(values, 0.99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1), "samples": len(values)}


# -- worker processes ---------------------------------------------------------------------------------------
class Workers:
    """``python run.py worker`` processes on one database and executor; their output goes to files."""

    def __init__(self, env: dict[str, str], folder: Path):
        self.env = env
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []

    def add(self, count: int) -> None:
        for _ in range(count):
            log = self.folder / f"worker-{len(self.processes) + 1}.log"
            with log.open("w") as output:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "run.py", "--log-level", "WARNING", "worker"], cwd=ROOT, env=self.env,
                    stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def check(self) -> None:
        """BenchError with a worker's last line when one of them exited."""
        for number, process in enumerate(self.processes, 1):
            if process.poll() is not None:
                raise BenchError(f"worker {number} (pid {process.pid}) exited with {process.returncode}: "
                                 f"{self.last_line(number)}")

    def last_line(self, number: int) -> str:
        lines = (self.folder / f"worker-{number}.log").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def stop(self, keep: int = 0) -> list[int | None]:
        """Stop all but the first ``keep`` (SIGTERM: each finishes what it holds); their exit codes, -9 if killed."""
        stopping = self.processes[keep:]
        for process in stopping:
            if process.poll() is None:
                process.terminate()
        codes: list[int | None] = []
        for process in stopping:
            try:
                codes.append(process.wait(30))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes.append(-9)
        self.processes = self.processes[:keep]
        return codes


def _worker_env(database_url: str, executor: str, storage: Path, concurrency: int = CONCURRENCY,
                broker: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("WORKFLOW_", "CELERY_", "PYTHON"))}
    env.update(
        PYTHONPATH=str(ROOT), WORKFLOW_MODULES=MODULES, WORKFLOW_STORAGE_PATH=str(storage),
        WORKFLOW_DATABASE_URL=database_url, WORKFLOW_EXECUTOR=executor,
        WORKFLOW_WORKER_CONCURRENCY=str(concurrency), WORKFLOW_MAX_CONCURRENT=str(concurrency),
        SMTP_HOST="", IMAP_HOST="",
    )
    if broker:
        env["CELERY_BROKER_URL"] = broker
    return env


# -- runs in the database -------------------------------------------------------------------------------------
class Records:
    """Reads runs straight from the benchmark's database (one connection of its own)."""

    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def finished(self, run_ids: list[str]) -> int:
        return self.conn.execute("SELECT count(*) FROM pyflow_runs WHERE id = ANY(%s) AND status = ANY(%s)",
                                 (run_ids, FINISHED)).fetchone()[0]

    def wait(self, run_ids: list[str], timeout: float, workers: Workers | None = None) -> None:
        """Return once every run has finished; BenchError after ``timeout`` s or when a worker exited."""
        deadline = time.monotonic() + timeout
        while (done := self.finished(run_ids)) < len(run_ids):
            if workers is not None:
                workers.check()
            if time.monotonic() > deadline:
                statuses = dict(self.conn.execute(
                    "SELECT status, count(*) FROM pyflow_runs WHERE id = ANY(%s) GROUP BY status", (run_ids,)))
                said = "".join(f"; worker {number} last said: {workers.last_line(number)}"
                               for number in range(1, len(workers.processes) + 1)) if workers else ""
                raise BenchError(f"{len(run_ids) - done} of {len(run_ids)} runs did not finish within "
                                 f"{timeout:g} s (statuses: {statuses}){said}")
            time.sleep(0.02)

    def rows(self, run_ids: list[str]) -> list[dict]:
        """Each run's status, worker, created_at, finished_at and first step's started_at, as epochs."""
        found = self.conn.execute(
            "SELECT r.id, r.status, r.worker, extract(epoch FROM r.created_at), extract(epoch FROM r.finished_at),"
            " s.record->>'started_at', r.record->>'error'"
            " FROM pyflow_runs r LEFT JOIN pyflow_steps s ON s.run_id = r.id AND s.index = 0 WHERE r.id = ANY(%s)",
            (run_ids,),
        ).fetchall()
        return [{"id": row[0], "status": row[1], "worker": row[2], "created": float(row[3]),
                 "finished": float(row[4]) if row[4] is not None else None,
                 "first_step": parse_time(row[5]) if row[5] else None, "error": row[6]} for row in found]


def _failures(rows: list[dict]) -> dict:
    failed = [row for row in rows if row["status"] != RunStatus.SUCCEEDED]
    return {"failed": len(failed), **({"first_error": failed[0]["error"]} if failed else {})}


# -- distributed figures ----------------------------------------------------------------------------------
class Cluster:
    """This process creating runs (a Runtime of the executor, serving nothing) and the workers executing them."""

    def __init__(self, env: dict[str, str], folder: Path, server: WaitServer):
        from app.core.runtime import Runtime

        self.runtime = Runtime(load_settings(env))
        self.runtime.start()
        self.workers = Workers(env, folder)
        self.records = Records(env["WORKFLOW_DATABASE_URL"])
        self.server = server
        self.inputs = {"base": server.base, "ms": WAIT_MS}
        self.concurrency = int(env["WORKFLOW_WORKER_CONCURRENCY"])

    def close(self) -> None:
        try:
            self.workers.stop()
        finally:
            self.runtime.shutdown(timeout=5.0)
            self.records.close()

    def submit(self, count: int) -> list[str]:
        return [self.runtime.submit("three_waits", dict(self.inputs))[0]["id"] for _ in range(count)]

    def warm_up(self, timeout: float = 60.0) -> None:
        """Batches of runs until every worker has executed one: each has started and takes jobs."""
        wanted = len(self.workers.processes)
        deadline = time.monotonic() + timeout
        while True:
            run_ids = self.submit(2 * self.concurrency * wanted)
            self.records.wait(run_ids, timeout, self.workers)
            seen = {row["worker"].rsplit(":", 1)[-1] for row in self.records.rows(run_ids) if row["worker"]}
            if seen >= {str(pid) for pid in self.workers.pids()}:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"only {len(seen)} of {wanted} workers took a job within {timeout:g} s")

    def throughput(self, runs: int) -> dict:
        """``runs`` runs created at once: runs/s from the first creation to the last end, in the records."""
        measured: dict = {}
        with cpu_use(measured, self.workers.pids):
            run_ids = self.submit(runs)
            self.records.wait(run_ids, 120, self.workers)
        rows = self.records.rows(run_ids)
        elapsed = max(row["finished"] for row in rows) - min(row["created"] for row in rows)
        per_worker: dict[str, int] = {}
        for row in rows:
            per_worker[row["worker"]] = per_worker.get(row["worker"], 0) + 1
        return {"workers": len(self.workers.processes), "runs": runs, "seconds": round(elapsed, 2),
                "runs_per_s": round(runs / elapsed, 1), "runs_per_worker": sorted(per_worker.values()),
                **_failures(rows), **measured,
                "workers_cpu_ms_per_run": round(measured["workers_cpu_s"] * 1000 / runs, 1),
                "bench_process_cpu_ms_per_run": round(measured["bench_process_cpu_s"] * 1000 / runs, 1)}

    def latency(self, runs: int, spacing: float) -> dict:
        """Runs created ``spacing`` s apart (no queue builds up): how soon each one's first step starts."""
        submitted: dict[str, float] = {}
        next_at = time.monotonic()
        for _ in range(runs):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += spacing
            began = time.time()
            run_id = self.runtime.submit("three_waits", dict(self.inputs))[0]["id"]
            submitted[run_id] = began
        run_ids = list(submitted)
        self.records.wait(run_ids, 60, self.workers)
        rows = self.records.rows(run_ids)
        stored = [row["first_step"] - row["created"] for row in rows if row["first_step"] is not None]
        arrived = [self.server.first_step[run_id] - began for run_id, began in submitted.items()
                   if run_id in self.server.first_step]
        return {"runs": runs, "spacing_ms": round(spacing * 1000), "workers": len(self.workers.processes),
                "created_to_first_step_started": _summary_ms(stored),
                "enqueue_call_to_first_request": _summary_ms(arrived),
                "target_p50_ms": TARGETS["latency_p50_ms"], **_failures(rows)}


def _scaling(cluster: Cluster, concurrency: int, per_slot: int) -> dict:
    """Runs/s on 1, 2, 4, then again 4, 2, 1 workers of ``concurrency`` slots; the better of each pair counts.

    Up and back down: a drift of the machine's speed hits both ends alike, and a neighbour's burst
    of CPU in one round shows as a gap between the pair. ``per_slot`` runs per slot in each round.
    """
    rounds, exit_codes = [], []
    for total in (1, 2, 4, 4, 2, 1):
        if total > len(cluster.workers.processes):
            cluster.workers.add(total - len(cluster.workers.processes))
            cluster.warm_up()
        else:
            exit_codes += cluster.workers.stop(keep=total)
        rounds.append(cluster.throughput(per_slot * concurrency * total))
    best = {total: max(r["runs_per_s"] for r in rounds if r["workers"] == total) for total in (1, 2, 4)}
    return {
        "concurrency_per_worker": concurrency,
        "runs_per_s": {str(total): value for total, value in best.items()},
        "ratio_2_to_1": round(best[2] / best[1], 2),
        "ratio_4_to_1": round(best[4] / best[1], 2),
        "target_ratio_4_to_1": TARGETS["ratio_4_to_1"],
        # What slots alone allow: each run waits 3 x WAIT_MS on the server.
        "slot_bound_runs_per_s_per_worker": round(concurrency / (3 * WAIT_MS / 1000), 1),
        "rounds": rounds,
        "exit_codes_after_sigterm": exit_codes + cluster.workers.stop(),
    }


def procrastinate_figures(database_url: str, folder: Path, server: WaitServer, quick: bool) -> dict:
    """Latency on one worker, then runs/s on 1, 2 and 4 workers (procrastinate), at two concurrencies."""
    per_slot = 8 if quick else 16
    figures: dict = {"wait_ms_per_step": WAIT_MS}
    for concurrency in CONCURRENCIES:
        cluster = Cluster(_worker_env(database_url, "procrastinate", folder / "data", concurrency),
                          folder / f"concurrency-{concurrency}", server)
        try:
            if concurrency == CONCURRENCY:
                cluster.workers.add(1)
                cluster.warm_up()
                figures["latency"] = cluster.latency(*LATENCY_RUNS[quick])
            figures[f"workers_at_concurrency_{concurrency}"] = _scaling(cluster, concurrency, per_slot)
        finally:
            cluster.close()
    return figures


def local_figures(database_url: str, folder: Path, server: WaitServer, quick: bool) -> dict:
    """The same runs executed in this process (WORKFLOW_EXECUTOR=local on PostgreSQL), for comparison."""
    cluster = Cluster(_worker_env(database_url, "local", folder / "data"), folder, server)
    try:
        latency = cluster.latency(*LATENCY_RUNS[quick])
        throughput = cluster.throughput((10 if quick else 20) * CONCURRENCY)
    finally:
        cluster.close()
    for key in ("workers", "runs_per_worker", "workers_cpu_s", "workers_cpu_ms_per_run"):
        del throughput[key]
    return {"latency": latency, "throughput": {"concurrency": CONCURRENCY, **throughput}}


def celery_figures(database_url: str, broker: str, folder: Path, server: WaitServer, quick: bool) -> dict:
    """Latency on one celery worker (Redis broker)."""
    cluster = Cluster(_worker_env(database_url, "celery", folder / "data", broker=broker), folder, server)
    try:
        cluster.workers.add(1)
        cluster.warm_up()
        latency = cluster.latency(*LATENCY_RUNS[quick])
        exit_codes = cluster.workers.stop()
    finally:
        cluster.close()
    return {"broker": f"redis, database {urlsplit(broker).path.strip('/')}", "latency": latency,
            "exit_codes_after_sigterm": exit_codes}


# -- the durable cost of a step, in this process --------------------------------------------------------------
STEP_RECORD = json.dumps({"name": "second", "type": "noop", "depends_on": [], "status": "succeeded", "attempts": 1,
                          "started_at": "2026-12-05T03:00:00.000Z", "finished_at": "2026-12-05T03:00:00.001Z",
                          "duration_ms": 0.1, "result": {}, "error": None})


class BareInserts:
    """One INSERT of a step-sized row and its COMMIT, on a connection of its own: the floor of a durable step."""

    def __init__(self, database_url: str):
        import psycopg

        self.conn = psycopg.connect(database_url, autocommit=True)
        self.conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (run_id text, index integer, record json,"
                          " PRIMARY KEY (run_id, index))")
        self.count = 0

    def time_one(self) -> float:
        self.count += 1
        began = time.perf_counter()
        self.conn.execute("INSERT INTO bench_baseline VALUES (%s, %s, %s)", ("run_bench", self.count, STEP_RECORD))
        return time.perf_counter() - began

    def close(self) -> None:
        self.conn.execute("DROP TABLE bench_baseline")
        self.conn.close()


def _sequential_runs(store, runs: int, *, leases: bool = False, baseline: BareInserts | None = None) -> dict:
    """3-step no-op runs one after the other on ``store`` (local executor): µs per run and per step.

    ``leases``: each run claims and releases its lease, as on a server sharing the database.
    ``baseline``: after each run, three bare INSERT+COMMITs are timed, so both see the machine alike.
    """
    settings = load_settings({"WORKFLOW_STORAGE_PATH": str(getattr(store, "root", ""))})
    renderer = Renderer()
    engine = Engine(store, settings, renderer)
    if leases:
        engine.use_leases(float(settings["WORKFLOW_LEASE_SECONDS"]))
    bound = BoundWorkflow.bind(ThreeNoops, settings, renderer)
    timings, inserts = [], []
    try:
        for number in range(runs + 10):  # the first 10 warm up: connections, caches
            began = time.perf_counter()
            run, _ = engine.submit(bound, {})
            engine.wait(run["id"], 60)
            if number >= 10:
                timings.append(time.perf_counter() - began)
                if baseline is not None:
                    inserts.extend(baseline.time_one() for _ in range(3))
        finished = store.get_run(run["id"])
        if finished["status"] != RunStatus.SUCCEEDED:
            raise BenchError(f"a three_noops run ended {finished['status']}: {finished.get('error')}")
        # All at once: what the local executor's threads make of the same store.
        began = time.perf_counter()
        run_ids = [engine.submit(bound, {})[0]["id"] for _ in range(runs)]
        for run_id in run_ids:
            engine.wait(run_id, 60)
        batch = time.perf_counter() - began
    finally:
        engine.shutdown(5)
    per_step = statistics.median(timings) / 3
    measured = {"us_per_step": round(per_step * 1e6), "runs_per_s_submitted_at_once": round(runs / batch, 1)}
    if inserts:
        floor = statistics.median(inserts)
        measured.update(insert_commit_us=round(floor * 1e6), ratio=round(per_step / floor, 2))
    return measured


def _chain_steps(store, steps: int, rounds: int, baseline: BareInserts) -> dict:
    """µs per step of ``steps``-step no-op chains on ``store``, idempotent and not, beside bare INSERT+COMMITs."""
    settings = load_settings({})
    renderer = Renderer()
    engine = Engine(store, settings, renderer)
    measured = {}
    try:
        for label, action in (("idempotent", NoopAction), ("must_not_run_twice", SyncedNoopAction)):
            bound = BoundWorkflow.bind(chain(steps, action), settings, renderer)
            per_step, inserts = [], []
            for number in range(rounds + 1):  # the first warms up
                began = time.perf_counter()
                run, _ = engine.submit(bound, {})
                engine.wait(run["id"], 600)
                if number:
                    per_step.append((time.perf_counter() - began) / steps)
                    inserts.extend(baseline.time_one() for _ in range(steps // 2))
            if store.get_run(run["id"])["status"] != RunStatus.SUCCEEDED:
                raise BenchError(f"a {steps}-step chain ended {store.get_run(run['id'])['status']}")
            step, floor = statistics.median(per_step), statistics.median(inserts)
            measured[label] = {"us_per_step": round(step * 1e6), "insert_commit_us": round(floor * 1e6),
                               "ratio": round(step / floor, 2)}
    finally:
        engine.shutdown(5)
    return measured


def durable_figures(database_url: str, folder: Path, quick: bool) -> dict:
    """3-step no-op runs on PostgresStore beside bare INSERT+COMMITs, interleaved; the JSON store for comparison."""
    from app.storage.postgres import PostgresStore

    runs = 50 if quick else 100
    plain, leased, local = [], [], []
    baseline = BareInserts(database_url)
    try:
        for round_number in range(3):  # rounds of each in turn: the machine's speed drifts
            store = PostgresStore(database_url, folder / f"pg-files-{round_number}")
            try:
                plain.append(_sequential_runs(store, runs, baseline=baseline))
                leased.append(_sequential_runs(store, runs, leases=True, baseline=baseline))
            finally:
                store.close()
            store = JsonStore(folder / f"json-{round_number}")
            try:
                local.append(_sequential_runs(store, runs))
            finally:
                store.close()
        store = PostgresStore(database_url, folder / "pg-files-chain")
        try:
            chained = _chain_steps(store, 200, 3 if quick else 6, baseline)
        finally:
            store.close()
    finally:
        baseline.close()

    def median(results: list[dict], key: str) -> float:
        return statistics.median(result[key] for result in results)

    def summary(results: list[dict]) -> dict:
        return {"us_per_step": median(results, "us_per_step"), "bare_insert_commit_us": median(results,
                "insert_commit_us"), "ratio_to_insert_commit": median(results, "ratio"),
                "rounds_ratio": [result["ratio"] for result in results],
                "runs_per_s_submitted_at_once": median(results, "runs_per_s_submitted_at_once")}

    return {
        "durable_postgres": {
            **summary(plain),
            "target_ratio": TARGETS["durable_ratio"],
            "runs_per_round": runs,
            # As a server or worker sharing the database executes it: the run's lease claimed and released too.
            "with_leases": summary(leased),
            "chain_of_200": chained,
        },
        "local_json": {
            "us_per_step": median(local, "us_per_step"),
            "rounds_us_per_step": [result["us_per_step"] for result in local],
            "runs_per_s_submitted_at_once": median(local, "runs_per_s_submitted_at_once"),
        },
    }


# -- main ----------------------------------------------------------------------------------------------------------
def _server_version(database_url: str) -> str:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def measure(quick: bool, parts: set[str], postgres_url: str, redis_url: str) -> dict:
    for module in ("psycopg", "psycopg_pool"):
        _need(module)
    result: dict = {
        "benchmark": "scale",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "machine_cpu_busy_before": background_busy(),  # other processes' load: the figures below share the cores
    }
    with tempfile.TemporaryDirectory(prefix="pyflow-scale-") as tmp, fresh_database(postgres_url) as database_url:
        folder = Path(tmp)
        result["postgresql"] = _server_version(database_url)
        if "durable" in parts:
            result.update(durable_figures(database_url, folder, quick))
        with WaitServer() as server:
            if "local" in parts:
                result["local_postgres"] = local_figures(database_url, folder / "local", server, quick)
            if "procrastinate" in parts:
                _need("procrastinate")
                result["procrastinate"] = procrastinate_figures(database_url, folder / "procrastinate", server,
                                                                quick)
            if "celery" in parts:
                try:
                    _need("celery")
                    _need("redis")
                    with redis_database(redis_url) as broker:
                        result["celery"] = celery_figures(database_url, broker, folder / "celery", server, quick)
                except BenchError as error:  # the other figures stand without it
                    print(f"bench/scale.py: celery skipped: {error}", file=sys.stderr)
                    result["celery"] = {"skipped": str(error)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs in each phase (~1 minute)")
    parser.add_argument("--only", default=",".join(PARTS), metavar="PARTS",
                        help=f"comma-separated parts to measure (default: all of {','.join(PARTS)})")
    args = parser.parse_args()
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    if not parts or parts - set(PARTS):
        parser.error(f"--only takes parts among {', '.join(PARTS)}, got {args.only!r}")
    try:
        result = measure(args.quick, parts, os.environ.get("PYFLOW_TEST_POSTGRES_URL") or POSTGRES_URL,
                         os.environ.get("PYFLOW_TEST_REDIS_URL") or REDIS_URL)
    except (BenchError, PyFlowError) as error:
        print(f"bench/scale.py: {getattr(error, 'message', None) or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the workers were stopped and the database dropped on the way out
        print("bench/scale.py: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # A service that went away in the middle: one line naming the client that saw it, not a traceback.
        if type(error).__module__.split(".")[0] not in SERVICE_CLIENTS:
            raise
        print(f"bench/scale.py: {type(error).__module__.split('.')[0]}: {_cause(error)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
