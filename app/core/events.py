"""Events (DESIGN section 12): published through POST /api/events or by a run's end; each starts the runs of
the started workflows whose event trigger matches, and wakes the runs waiting for it (wait_for_event).

An event id is recorded in the store (``record_event``): an id seen before does nothing again. A run's
end publishes ``run.<status>`` with id ``<run id>:<status>``. Loops are cut two ways: a workflow never
fires on the ``run.*`` events of its own runs, and an event carries ``depth`` (runs' ends that led to
it): a chain stops starting runs after MAX_EVENT_DEPTH links. Depth alone still let a chain branch: with
n workflows following ``run.*``, each end started n - 1 runs, (n - 1) ** 8 at the last link. So an event
also carries ``chain`` (the id of the event the chain began with), and runs' ends of one chain start at
most MAX_CHAIN_RUNS runs, counted in the store (``count_chain_run``): on PostgreSQL across every server and
worker of the database, on the memory and JSON stores in their one process.

Trust: ``parse_event`` is the only way in for a caller's event (POST /api/events, and so the Python client
and a workflow's ``http_request`` to it); it refuses the ``run.`` types and the run-end ids PyFlow publishes
itself, whatever the caller's role, so nobody can forge a run's end. PyFlow's own ends are built by
``run_ended`` and handed to ``Events.publish``, which trusts what it is given.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from actions.printable import unprintable
from actions.wait_for_event import MAX_KEY_LENGTH
from app.core.templating import RenderError, is_truthy
from app.errors import InvalidInput
from app.runs import utcnow
from triggers.event import EventTrigger

if TYPE_CHECKING:
    from app.core.runtime import Runtime

logger = logging.getLogger(__name__)

MAX_EVENT_DEPTH = 8
# Runs the runs' ends of one chain may start (counted by the store: Store.count_chain_run).
MAX_CHAIN_RUNS = 100
# One bound for a posted type, key and id; a waiting step's key is held to it too.
MAX_FIELD_LENGTH = MAX_KEY_LENGTH
RUN_ENDS = ("run.succeeded", "run.failed", "run.cancelled")
# Types PyFlow publishes itself (runs' ends): refused from callers, so none can forge a run's end.
RESERVED_PREFIX = "run."
# A run's end's id (run_ended): refused from callers, who could else take it first and drop the real end.
_RUN_END_ID = re.compile(rf"^[^:]+:(?:{'|'.join(end.removeprefix(RESERVED_PREFIX) for end in RUN_ENDS)}):")


def parse_event(body: Any) -> dict:
    """A posted event ``{"type", "data"?, "key"?, "id"?}`` as stored and delivered; InvalidInput naming each problem.

    The untrusted way in: the ``run.`` types and the run-end ids PyFlow publishes itself are refused.
    """
    if not isinstance(body, dict):
        raise InvalidInput("an event must be a JSON object {\"type\", \"data\", \"key\", \"id\"}",
                           details=[{"path": "", "message": "must be a JSON object"}])
    problems = []
    event_type = body.get("type")
    problem = _type_problem(event_type)
    if problem:
        problems.append({"path": "type", "message": problem})
    for field in ("key", "id"):
        value = body.get(field)
        problem = _text_problem(value)
        if problem is None and field == "id" and value is not None and _RUN_END_ID.match(str(value)):
            problem = ("is reserved: ids '<run id>:<status>:<time>' are those of the run.* events PyFlow "
                       "publishes when runs end")
        if problem:
            problems.append({"path": field, "message": problem})
    unknown = sorted(set(body) - {"type", "data", "key", "id"})
    if unknown:
        problems.append({"path": unknown[0], "message": "unknown field (an event has type, data, key and id)"})
    if problems:
        raise InvalidInput(f"invalid event: {problems[0]['path'] or 'body'} {problems[0]['message']}",
                           details=problems)
    key, event_id = body.get("key"), body.get("id")
    event_id = str(event_id) if event_id is not None else f"evt_{uuid.uuid4().hex}"
    return {"id": event_id, "type": event_type.strip(), "data": body.get("data"),
            "key": str(key) if key is not None else None, "at": utcnow(), "depth": 0, "chain": event_id}


def _type_problem(value: Any) -> str | None:
    """What is wrong with a posted event's ``type`` (None when nothing)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "is required: the event's type, such as 'ticket.created'"
    if not isinstance(value, str):
        return f"must be a string such as 'ticket.created', got {type(value).__name__}"
    problem = _text_problem(value)
    if problem:
        return problem
    # Case aside too: a type that differs only in case from a run's end would only confuse its readers.
    if value.strip().lower().startswith(RESERVED_PREFIX):
        return (f"is reserved: {RESERVED_PREFIX}* events ({', '.join(RUN_ENDS)}) are published by PyFlow when "
                f"runs end, never through the API; use a type of your own, such as 'ticket.created'")
    return None


def _text_problem(value: Any) -> str | None:
    """What is wrong with a posted ``type``, ``key`` or ``id`` (None when nothing, or absent)."""
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value):
        return f"must be a non-empty string of at most {MAX_FIELD_LENGTH} characters"
    text = str(value)
    if len(text) > MAX_FIELD_LENGTH:
        return f"must be at most {MAX_FIELD_LENGTH} characters, got {len(text)}"
    found = unprintable(text)
    return f"must not contain control or format characters, {found}" if found else None


def lineage(run: dict) -> dict | None:
    """The chain a run belongs to, ``{"chain", "depth"}``: its event's, or (a sub-run) its parent's; else None."""
    if run.get("source") == "event":
        trigger_data = run.get("trigger_data") or {}
        depth = trigger_data.get("depth")
        chain = trigger_data.get("chain")
        if not isinstance(chain, str):
            chain = trigger_data.get("id")  # an event published before events carried their chain
        return {"chain": chain if isinstance(chain, str) else None, "depth": depth if isinstance(depth, int) else 0}
    inherited = run.get("lineage")
    if isinstance(inherited, dict) and isinstance(inherited.get("depth"), int):
        return {"chain": inherited.get("chain") if isinstance(inherited.get("chain"), str) else None,
                "depth": inherited["depth"]}
    return None


def run_ended(run: dict) -> dict:
    """The event a run's end publishes: ``run.<status>`` with ``{"run_id", "workflow", "status", "error"}``.

    A sub-run's end continues its parent's chain: a workflow that follows another's ends and calls it as a
    sub-workflow would otherwise start itself again from each sub-run's end, for ever.
    """
    # The end's time in the id: a retried run that fails again publishes its second end too.
    event_id = f"{run['id']}:{run['status']}:{run.get('finished_at')}"
    found = lineage(run) or {}
    return {"id": event_id, "type": f"run.{run['status']}",
            "data": {"run_id": run["id"], "workflow": run["workflow"], "status": run["status"],
                     "error": run.get("error")},
            "key": run["id"], "at": utcnow(), "depth": found.get("depth", 0) + 1,
            "chain": found.get("chain") or event_id}


class Events:
    """Publishes events for one runtime: starts matching runs, wakes waiting ones."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def publish(self, event: dict) -> dict:
        """``{"event": {"id", "type"}, "duplicate", "started": [run ids], "resumed": [run ids]}``."""
        rt = self.runtime
        answer: dict[str, Any] = {"event": {"id": event["id"], "type": event["type"]}, "duplicate": False,
                                  "started": [], "resumed": []}
        if not rt.store.record_event(event["id"], event["type"]):
            answer["duplicate"] = True
            return answer
        answer["started"] = self._start(event)
        answer["resumed"] = rt.parking.deliver(event)
        logger.info("event %s (%s): started %d runs, resumed %d", event["id"], event["type"],
                    len(answer["started"]), len(answer["resumed"]))
        return answer

    def heard(self, event: dict) -> bool:
        """Whether anyone listens for ``event``: a started workflow whose trigger takes its type, or a waiting run.

        A run's end is published only then, so runs nobody follows cost no store write for it.
        """
        rt = self.runtime
        # Which workflows are started is asked of the store only when one served here would take the event:
        # most runs end with no event trigger in sight, and a worker ends many (one statement less each).
        takers = {name for name, bound in list(rt.bound.items())  # list(): taken at once, the catalog may change
                  if isinstance(bound.trigger, EventTrigger) and bound.trigger.matches_type(event["type"])}
        if takers and not takers.isdisjoint(rt.store.started_workflows()):
            return True
        return bool(rt.store.parked_for(event["type"], event.get("key")))

    def _start(self, event: dict) -> list[str]:
        """One run of each started workflow whose event trigger matches (type, filter), its own run ends aside."""
        rt = self.runtime
        started = []
        names = rt.store.started_workflows()
        own = event["data"].get("workflow") if event["type"] in RUN_ENDS and isinstance(event["data"], dict) else None
        for name in sorted(names):
            bound = rt.bound.get(name)
            if bound is None or bound.error or not isinstance(bound.trigger, EventTrigger):
                continue
            if not bound.trigger.matches_type(event["type"]) or name == own:
                continue
            if not self._passes(bound.trigger, event, name):
                continue
            # After the filter: the warning names only the workflows the chain would really have gone on to.
            if event["depth"] > MAX_EVENT_DEPTH:
                logger.warning("event %s (%s) would start %s, but %d runs' ends led to it (at most %d): not started",
                               event["id"], event["type"], name, event["depth"], MAX_EVENT_DEPTH)
                continue
            if event["depth"] > 0 and not self._may_start(event, name):
                continue
            run, _ = rt.submit_event_run(bound, event)
            started.append(run["id"])
        return started

    def _may_start(self, event: dict, name: str) -> bool:
        """Count one more run for the event's chain in the store; False (logged) once it started MAX_CHAIN_RUNS."""
        chain = str(event.get("chain") or event["id"])
        # In the store, not here: servers and workers sharing a database share one count per chain.
        started = self.runtime.store.count_chain_run(chain, MAX_CHAIN_RUNS)
        if started < MAX_CHAIN_RUNS:
            return True
        logger.warning("event %s (%s) would start %s, but runs' ends of its chain (begun by %s) already started "
                       "%d runs (at most %d): not started", event["id"], event["type"], name, chain, started,
                       MAX_CHAIN_RUNS)
        return False

    def _passes(self, trigger: EventTrigger, event: dict, name: str) -> bool:
        if trigger.filter is None:
            return True
        try:
            return is_truthy(self.runtime.renderer.render_string(trigger.filter, {"event": event}))
        except (RenderError, ValueError, Exception) as error:  # an expression may raise anything
            logger.warning("workflow %s: its event filter failed on event %s, not started: %s", name, event["id"],
                           error)
            return False
