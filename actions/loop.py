"""The loop action: run nested steps once per item of a list."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from actions.base import ActionError, BaseAction, SettingError, whole_number
from actions.jsontext import load_json
from actions.limits import ITEMS_SETTING, MAX_RESULT_BYTES, capped, json_size
from actions.text import one_line

logger = logging.getLogger(__name__)

_THREAD_PREFIX = "pyflow-loop"


class LoopAction(BaseAction):
    """Runs ``steps`` (nested step definitions) once per item of ``items``; returns ``{"results", "count"}``.

    Nested steps see ``item`` and ``loop`` (``index`` from 1, ``index0``,
    ``first``, ``last``, ``length``) in their templates, which are rendered per
    item. ``results`` holds one ``{step name: result}`` per item, in the order
    of ``items`` also when ``max_parallel`` runs several items at once. A
    mapping as ``items`` loops over ``{"key", "value"}`` pairs. The first
    failing item fails the step; items not yet started are not run.
    """

    type = "loop"
    result_keys = ("results", "count")
    # The engine renders ``steps`` per item, with ``item`` and ``loop``, not once for the whole step.
    raw_fields = ("steps",)
    # Nested steps may send mail or run commands: repeating them after a crash is not harmless.
    idempotent = False

    def __init__(self, name: str, *, items: Any, steps: list[dict], max_parallel: int | str = 1, **options: Any):
        super().__init__(name, **options)
        if not isinstance(steps, list) or not steps:
            raise SettingError("steps", f"action {name!r}: steps must be a non-empty list of step definitions, "
                                        f"got {steps!r}")
        for index, step in enumerate(steps):
            if not isinstance(step, Mapping) or not step.get("name") or not step.get("type"):
                raise SettingError("steps", f"action {name!r}: steps[{index}] must be a mapping with a name and "
                                            f"a type, got {step!r}")
        self.items = items
        self.steps = steps
        self.max_parallel = max_parallel

    def execute(self, data_store: dict) -> dict:
        """Run the nested steps for every item."""
        run_steps = self.context.run_steps
        if run_steps is None:
            raise ActionError("loop needs the PyFlow engine to run nested steps (no run_steps service)",
                              retryable=False)
        items = _items(self.items)
        parallel = capped(_max_parallel(self.max_parallel), "WORKFLOW_MAX_PARALLEL", self.context.settings,
                          "loop: max_parallel")
        capped(len(items), ITEMS_SETTING, self.context.settings, "loop: the item count")
        length = len(items)

        # Past the step's timeout the engine has abandoned this attempt (and may be running the next one):
        # its items stop here instead of running on unseen.
        limit = self.context.step_timeout
        deadline = time.monotonic() + limit if limit else None
        # What the items gathered so far weigh as JSON: the loop's result may not pass MAX_RESULT_BYTES.
        gathered = [0]
        gathering = threading.Lock()

        def run_one(index: int) -> dict:
            if self.context.cancel_event.is_set():
                raise ActionError("cancelled", retryable=False)
            if deadline is not None and time.monotonic() > deadline:
                raise ActionError(f"loop: stopped before item {index + 1} of {length}: the step's timeout of "
                                  f"{limit:g} s has passed", retryable=False)
            names = {"item": items[index], "loop": {"index": index + 1, "index0": index, "first": index == 0,
                                                    "last": index == length - 1, "length": length}}
            try:
                result = run_steps(self.steps, names)
            except Exception as error:
                # Keep the inner verdict: a refused config stays refused, a timeout may be retried.
                raise ActionError(f"loop item {index + 1} of {length}: {one_line(error, (ActionError,))}",
                                  retryable=getattr(error, "retryable", True)) from error
            with gathering:
                gathered[0] += json_size(result, MAX_RESULT_BYTES - gathered[0])
                problem = gathered[0] > MAX_RESULT_BYTES
            if problem:
                raise ActionError(f"loop: item {index + 1} of {length} brought the results gathered past the "
                                  f"{MAX_RESULT_BYTES // 2**20} MB a step's result may hold as JSON",
                                  retryable=False)
            return result

        # A loop inside a parallel loop's item (or in a sub-workflow started beside others) runs one item at a
        # time: threads would multiply per level.
        nested = in_parallel_item() or self.context.serial
        if parallel == 1 or length <= 1 or nested:
            results = [run_one(index) for index in range(length)]
        else:
            results = _run_parallel(run_one, length, parallel)
        logger.info("loop %s: %d item(s) done", self.name, length)
        return {"results": results, "count": length}


def in_parallel_item() -> bool:
    """True on a thread that runs one item of a parallel loop."""
    return threading.current_thread().name.startswith(_THREAD_PREFIX)


def _run_parallel(run_one: Any, length: int, parallel: int) -> list[dict]:
    """Run items ``parallel`` at a time; results in item order; the lowest failing item's error wins."""
    with ThreadPoolExecutor(max_workers=min(parallel, length), thread_name_prefix=_THREAD_PREFIX) as pool:
        futures: list[Future] = [pool.submit(run_one, index) for index in range(length)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(future.exception() for future in done):
            for future in futures:
                future.cancel()  # items not started yet are not run
            wait(futures)
            raise next(future.exception() for future in futures
                       if not future.cancelled() and future.exception() is not None)
        return [future.result() for future in futures]


def _items(value: Any) -> list:
    """The list to loop over: a list, a mapping's pairs, or JSON text of either."""
    if isinstance(value, str):
        try:
            value = load_json(value) if value.strip() else []
        except ValueError:
            raise ActionError(f"loop: items must be a list, got text {value[:80]!r}", retryable=False)
    if isinstance(value, Mapping):
        return [{"key": key, "value": item} for key, item in value.items()]
    if value is None:
        raise ActionError("loop: items is null (did its template find nothing?)", retryable=False)
    if not isinstance(value, (list, tuple)):
        raise ActionError(f"loop: items must be a list, got {type(value).__name__}", retryable=False)
    return list(value)


def _max_parallel(value: Any) -> int:
    number = whole_number(value)
    if number is None or number < 1:
        raise ActionError(f"loop: max_parallel must be an integer >= 1, got {value!r}", retryable=False)
    return number


