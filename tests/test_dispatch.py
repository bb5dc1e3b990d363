"""Runs reach the engine through the runtime's dispatcher (app/dispatch): the seam distributed executors plug into."""

from __future__ import annotations

from app.dispatch.base import Executor
from app.dispatch.local import LocalDispatcher
from tests.fixtures import wait_until


class HeldDispatcher(LocalDispatcher):
    """Keeps submitted runs until released, as a queue keeps them until a worker is free."""

    def __init__(self, executor: Executor):
        super().__init__(executor)
        self.held: list[str] = []

    def submit(self, run_id: str) -> None:
        self.held.append(run_id)

    def release(self) -> None:
        while self.held:
            self.executor.execute_here(self.held.pop(0))


def hold(runtime) -> HeldDispatcher:
    held = HeldDispatcher(runtime.engine)
    runtime.engine.dispatcher = runtime.dispatcher = held
    return held


def status(client, run_id: str) -> str:
    return client.get(f"/api/runs/{run_id}").get_json()["status"]


def test_the_app_dispatches_runs_to_threads_of_this_process(runtime):
    assert isinstance(runtime.dispatcher, LocalDispatcher)
    assert runtime.dispatcher.started


def test_a_run_stays_queued_until_the_dispatcher_hands_it_to_the_engine(client, runtime):
    held = hold(runtime)
    run_id = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "hi"}}).get_json()["id"]

    assert held.held == [run_id]
    assert status(client, run_id) == "queued"
    held.release()
    wait_until(lambda: status(client, run_id) == "succeeded", timeout=10, message="the released run succeeded")


def test_a_run_cancelled_before_the_dispatcher_hands_it_over_never_starts(client, runtime):
    held = hold(runtime)
    run_id = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "hi"}}).get_json()["id"]

    cancelled = client.post(f"/api/runs/{run_id}/cancel").get_json()
    held.release()

    assert cancelled["status"] == "cancelled"
    assert {step["status"] for step in cancelled["steps"]} == {"pending"}
    assert status(client, run_id) == "cancelled"
