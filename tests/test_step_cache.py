"""Step caching: a recent success of the same step is reused, not executed again (docs/step-cache.md)."""

from __future__ import annotations

import time

import pytest

from app.core.binding import BoundWorkflow
from app.core.config import load_settings
from app.core.engine import Engine
from app.core.step_cache import cache_key
from app.runs import RunStatus
from app.storage.json.store import JsonStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import AppendLineAction, EchoAction, FailAction, side_effect_lines
from tests.fixtures.triggers import QueueTrigger
from tests.waiting import wait_until
from workflows.base import Workflow

SETTINGS = {**load_settings({}), **TEST_SETTINGS}


class CachedWorkflow(Workflow):
    """A side effect worth caching: it appends a line per execution."""

    name = "cached"
    trigger = QueueTrigger("queue")
    actions = [
        AppendLineAction("fetch", path="fetched.txt", line="{{ inputs.city }}", cache={"ttl": 3600}),
        EchoAction("use", value="{{ steps.fetch.written }}!"),
    ]


class KeyedWorkflow(Workflow):
    """A cache key of its own: the day, whatever else the config holds."""

    name = "keyed"
    trigger = QueueTrigger("queue")
    actions = [AppendLineAction("fetch", path="keyed.txt", line="{{ inputs.city }}",
                                cache={"ttl": 3600, "key": "{{ inputs.day }}"})]


class ShortLivedWorkflow(Workflow):
    """A result kept a twentieth of a second."""

    name = "short_lived"
    trigger = QueueTrigger("queue")
    actions = [AppendLineAction("fetch", path="short.txt", line="x", cache={"ttl": 0.05})]


class SecretConfigWorkflow(Workflow):
    """A step whose config carries a token: the cache keeps its hash only."""

    name = "secret_config"
    trigger = QueueTrigger("queue")
    actions = [EchoAction("call", value="calling", cache={"ttl": 60}),
               AppendLineAction("auth", path="auth.txt", line="Bearer {{ inputs.token }}", cache={"ttl": 60})]


class FailingCachedWorkflow(Workflow):
    """A cached step that fails: nothing is kept."""

    name = "failing_cached"
    trigger = QueueTrigger("queue")
    max_retries = 0
    actions = [FailAction("fetch", cache={"ttl": 60})]


def run_once(engine: Engine, workflow, inputs: dict | None = None) -> dict:
    run, created = engine.submit(BoundWorkflow.bind(workflow, engine.settings, engine.renderer), inputs or {})
    assert created and engine.wait(run["id"], 10), f"run {run['id']} did not end"
    return engine.store.get_run(run["id"])


def step(run: dict, name: str) -> dict:
    return next(record for record in run["steps"] if record["name"] == name)


@pytest.fixture
def engine(tmp_path):
    engine = Engine(JsonStore(tmp_path / "data"), SETTINGS)
    yield engine
    engine.shutdown(timeout=2)


def assert_reuses(engine: Engine) -> None:
    first = run_once(engine, CachedWorkflow, {"city": "Oslo"})
    second = run_once(engine, CachedWorkflow, {"city": "Oslo"})
    assert first["status"] == second["status"] == RunStatus.SUCCEEDED
    assert "cached" not in step(first, "fetch")
    hit = step(second, "fetch")
    assert hit["cached"] is True and hit["cached_from"] == first["id"]
    assert hit["result"] == step(first, "fetch")["result"] == {"written": "Oslo"}
    assert hit["attempts"] == 0 and hit["status"] == "succeeded"
    assert step(second, "use")["result"] == {"value": "Oslo!"}  # later steps see the reused result
    assert side_effect_lines(engine.store.root / "fetched.txt") == ["Oslo"]  # executed once
    other = run_once(engine, CachedWorkflow, {"city": "Rome"})  # another rendered config: another key
    assert "cached" not in step(other, "fetch")
    assert side_effect_lines(engine.store.root / "fetched.txt") == ["Oslo", "Rome"]


def test_a_step_with_the_same_config_reuses_the_result(engine):
    assert_reuses(engine)


def test_the_cache_works_on_postgresql(postgres_url, tmp_path):
    from app.storage.postgres import PostgresStore  # psycopg is an optional dependency

    (tmp_path / "files").mkdir()
    engine = Engine(PostgresStore(postgres_url, tmp_path / "files"), SETTINGS)
    try:
        assert_reuses(engine)
    finally:
        engine.shutdown(timeout=2)
        engine.store.close()


def test_a_key_template_names_the_entry(engine):
    first = run_once(engine, KeyedWorkflow, {"city": "Oslo", "day": "2026-12-05"})
    second = run_once(engine, KeyedWorkflow, {"city": "Rome", "day": "2026-12-05"})
    assert step(second, "fetch")["cached_from"] == first["id"]
    assert step(second, "fetch")["result"] == {"written": "Oslo"}
    assert side_effect_lines(engine.store.root / "keyed.txt") == ["Oslo"]


def test_a_key_that_renders_to_nothing_runs_the_step_uncached(engine):
    for _ in range(2):
        run = run_once(engine, KeyedWorkflow, {"city": "Oslo"})  # no day: the key renders to nothing
        assert run["status"] == RunStatus.SUCCEEDED and "cached" not in step(run, "fetch")
    assert side_effect_lines(engine.store.root / "keyed.txt") == ["Oslo", "Oslo"]
    logs = [(line["level"], line["message"]) for line in engine.store.get_logs(run["id"])]
    assert ("warning", "cache key rendered to nothing, the step runs uncached") in logs


def test_an_entry_older_than_the_ttl_is_not_used(engine):
    first = run_once(engine, ShortLivedWorkflow)
    finished = time.time()
    wait_until(lambda: time.time() > finished + 0.1, timeout=5, message="the entry expires")
    second = run_once(engine, ShortLivedWorkflow)
    assert "cached" not in step(second, "fetch")
    assert side_effect_lines(engine.store.root / "short.txt") == ["x", "x"]
    pruned: list[int] = []  # one entry: the second run's replaced the first's
    wait_until(lambda: pruned.append(engine.store.prune_cache()) or sum(pruned) == 1, timeout=5,
               message="the entry is pruned once expired")
    assert list((engine.store.root / "cache").iterdir()) == []
    assert first["status"] == RunStatus.SUCCEEDED


def test_a_failed_step_is_not_cached(engine):
    for _ in range(2):
        run = run_once(engine, FailingCachedWorkflow)
        assert run["status"] == RunStatus.FAILED and step(run, "fetch")["attempts"] == 1
    assert list((engine.store.root / "cache").iterdir()) == []


def test_the_config_is_stored_as_a_hash_only(engine):
    token = "tok-5ecret-5ecret"
    run_once(engine, SecretConfigWorkflow, {"token": token})
    files = list((engine.store.root / "cache").iterdir())
    assert len(files) == 2
    for path in files:
        assert token not in path.read_text(encoding="utf-8") and token not in path.name
    auth = AppendLineAction("auth", path="auth.txt", line=f"Bearer {token}")
    assert len(cache_key(SecretConfigWorkflow, auth)) == 64


def test_a_new_workflow_version_misses(engine):
    action = EchoAction("x", value=1)
    first = type("V1", (CachedWorkflow,), {"version": 1})
    second = type("V2", (CachedWorkflow,), {"version": 2})
    assert cache_key(first, action) != cache_key(second, action)
    assert cache_key(first, action) == cache_key(type("V1b", (CachedWorkflow,), {"version": 1}), action)


@pytest.mark.parametrize(("cache", "message"), [
    ("1h", "cache must be a mapping"),
    ({}, "cache.ttl must be a number of seconds > 0, got None"),
    ({"ttl": 0}, "cache.ttl must be a number of seconds > 0, got 0"),
    ({"ttl": True}, "cache.ttl must be"),
    ({"ttl": 5, "key": 3}, "cache.key must be a template string, got int"),
    ({"ttl": 5, "tll": 3}, "cache.tll unknown key"),
])
def test_a_malformed_cache_option_is_refused(cache, message):
    with pytest.raises(ValueError, match=message):
        EchoAction("x", cache=cache)


# -- declarative definitions through the API ----------------------------------------------------------
GREETING = {"name": "greeting", "steps": [
    {"name": "greet", "type": "log", "config": {"message": "hello {{ inputs.who }}"}, "cache": {"ttl": 600}}]}


def test_a_definition_caches_through_the_api(client):
    assert client.post("/api/workflows", json=GREETING).status_code == 201
    runs = [client.post("/api/workflows/greeting/runs?wait=10", json={"inputs": {"who": "Ada"}}).get_json()
            for _ in range(2)]
    assert [run["status"] for run in runs] == ["succeeded", "succeeded"]
    hit = runs[1]["steps"][0]
    assert hit["cached"] is True and hit["cached_from"] == runs[0]["id"]
    assert hit["result"] == runs[0]["steps"][0]["result"] == {"message": "hello Ada"}
    page = client.get(f"/runs/{runs[1]['id']}").get_data(as_text=True)
    assert '<span class="cached">cached</span>' in page and runs[0]["id"] in page
    # A new version of the definition is another cache.
    changed = {**GREETING, "description": "v2"}
    assert client.put("/api/workflows/greeting", json=changed).status_code == 200
    third = client.post("/api/workflows/greeting/runs?wait=10", json={"inputs": {"who": "Ada"}}).get_json()
    assert "cached" not in third["steps"][0]


@pytest.mark.parametrize(("cache", "path", "message"), [
    ("1h", "steps[0].cache", "must be a mapping {ttl: seconds, key: template}, got str"),
    ({"key": "{{ inputs.x }}"}, "steps[0].cache.ttl", "must be a number of seconds > 0, got None"),
    ({"ttl": -5}, "steps[0].cache.ttl", "must be a number of seconds > 0, got -5"),
    ({"ttl": 10 ** 9}, "steps[0].cache.ttl", "1000000000 is more than WORKFLOW_MAX_CACHE_TTL (2592000)"),
    ({"ttl": 60, "key": ["a"]}, "steps[0].cache.key", "must be a template string, got list"),
    ({"ttl": 60, "key": "{{ inputs.x | }}"}, "steps[0].cache.key", "template syntax error"),
    ({"ttl": 60, "scope": "global"}, "steps[0].cache.scope", "unknown key; cache has ttl and key"),
])
def test_a_bad_cache_is_refused_naming_the_field(client, cache, path, message):
    definition = {"name": "bad", "steps": [{"name": "a", "type": "log", "config": {"message": "a"}, "cache": cache}]}
    response = client.post("/api/workflows", json=definition)
    assert response.status_code == 422, response.get_json()
    details = response.get_json()["error"]["details"]
    assert any(problem["path"] == path and message in problem["message"] for problem in details), details


def test_maintenance_prunes_expired_entries(runtime):
    now = time.time()
    entry = {"key": "ab" * 32, "workflow": "greeting", "step": "greet", "run_id": "run_x", "result": {},
             "created_at": now - 120, "expires_at": now - 60}
    runtime.store.put_cache(entry)
    runtime.store.put_cache({**entry, "key": "cd" * 32, "expires_at": now + 600})
    runtime.maintain()
    assert runtime.store.get_cache("ab" * 32, now=now - 61) is None  # gone, not just expired
    assert runtime.store.get_cache("cd" * 32) is not None
