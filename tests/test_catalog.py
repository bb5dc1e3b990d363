"""The catalog on its own: no runtime, no scheduler, no threads; a memory store keeps the definitions."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest

from app.core.catalog import Catalog
from app.core.config import load_settings
from app.core.templating import Renderer
from app.errors import Conflict, InvalidInput, NotFound
from app.storage.memory import MemoryStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import EchoWorkflow

HELLO = {
    "name": "hello",
    "steps": [{"name": "call", "type": "http_request",
               "config": {"url": "https://example.com/hello", "headers": {"Authorization": "Bearer s3cret"}}}],
}


def make_catalog(tmp_path, **settings) -> tuple[Catalog, MemoryStore]:
    settings = {**load_settings({}), **TEST_SETTINGS, "WORKFLOW_DEFINITIONS_PATH": str(tmp_path / "none"),
                "WORKFLOW_FILES_ROOT": str(tmp_path / "files"), **settings}
    store = MemoryStore(tmp_path / "data")
    return Catalog(store, settings, Renderer(settings["WORKFLOW_TEMPLATE_TIMEOUT"])), store


def test_versions_are_stored_served_and_kept_for_runs_that_need_them(tmp_path):
    catalog, store = make_catalog(tmp_path)

    first = catalog.create(copy.deepcopy(HELLO))
    assert (first.name, first.workflow.version, first.workflow.origin) == ("hello", 1, "api")
    # A client that read the definition back (secrets as "***") and PUTs it keeps the stored secret.
    edited = copy.deepcopy(HELLO)
    edited["steps"][0]["config"].update(url="https://example.com/v2", headers={"Authorization": "***"})
    old, new = catalog.replace("hello", edited)

    assert old is first and catalog.get("hello") is new and new.workflow.version == 2
    assert store.get_definition("hello")["definition"]["steps"][0]["config"] == {
        "url": "https://example.com/v2", "headers": {"Authorization": "Bearer s3cret"}}
    assert catalog.version("hello", 1) is first  # a run that started with v1 finishes with v1
    assert catalog.version("hello", 2) is new

    assert catalog.remove("hello") is new
    assert "hello" not in catalog.bound and store.get_definition("hello") is None
    with pytest.raises(NotFound, match="no workflow named 'hello'"):
        catalog.get("hello")
    assert catalog.version("hello", 1) is None


def test_a_put_that_moved_steps_keeps_each_steps_own_secret(tmp_path):
    # The designer (or an editor) may put the steps in another order; each "***" is the secret of its own step.
    catalog, store = make_catalog(tmp_path)
    calls = [{"name": name, "type": "http_request", "depends_on": [],
              "config": {"url": f"https://{name}.example.com/", "headers": {"Authorization": f"Bearer {name}-key"}}}
             for name in ("alpha", "beta")]
    catalog.create({"name": "two_calls", "steps": calls})
    read_back = copy.deepcopy(calls[::-1])
    for step in read_back:
        step["config"]["headers"]["Authorization"] = "***"
    catalog.replace("two_calls", {"name": "two_calls", "steps": read_back})
    stored = store.get_definition("two_calls")["definition"]["steps"]
    assert {step["name"]: step["config"]["headers"]["Authorization"] for step in stored} == {
        "alpha": "Bearer alpha-key", "beta": "Bearer beta-key"}
    assert [step["name"] for step in stored] == ["beta", "alpha"]


def test_old_versions_are_not_kept_in_memory_for_ever_and_still_answer_from_the_store(tmp_path):
    # Every save (PUT) kept the version it replaced, bound, for the life of the process: a definition
    # edited all day in the designer grew the server's memory by one workflow per save, for months.
    catalog, _ = make_catalog(tmp_path)
    first = catalog.create(copy.deepcopy(HELLO))
    replaced = [weakref.ref(first)]
    del first
    for number in range(2, 202):
        edited = copy.deepcopy(HELLO)
        edited["steps"][0]["config"]["url"] = f"https://example.com/v{number}"
        old, _ = catalog.replace("hello", edited)
        replaced.append(weakref.ref(old))
        del old
    gc.collect()
    assert sum(ref() is not None for ref in replaced) <= 64
    # A run paused on version 1 still finds it: read back from the store.
    assert catalog.version("hello", 1).workflow.definition["steps"][0]["config"]["url"] == "https://example.com/hello"
    assert catalog.version("hello", 1) is catalog.version("hello", 1)


def test_nothing_invalid_or_taken_is_stored(tmp_path):
    catalog, store = make_catalog(tmp_path)
    catalog.load([EchoWorkflow])

    with pytest.raises(InvalidInput) as invalid:
        catalog.create({"name": "tick", "trigger": {"type": "interval", "seconds": "{{ 1/0 }}"},
                        "steps": [{"name": "say", "type": "log", "config": {"message": "tick"}}]})
    assert invalid.value.details[0]["path"] == "trigger" and "ZeroDivisionError" in invalid.value.details[0]["message"]
    with pytest.raises(Conflict, match="a workflow named 'echo' exists"):
        catalog.create({**HELLO, "name": "echo"})
    with pytest.raises(Conflict, match="only workflows created through the API can be changed"):
        catalog.replace("echo", {**HELLO, "name": "echo"})
    with pytest.raises(Conflict, match="only workflows created through the API can be changed"):
        catalog.remove("echo")
    assert store.list_definitions() == []
    assert "echo" in catalog.bound and "tick" not in catalog.bound


def test_a_stored_definition_that_no_longer_builds_is_not_served_but_deletable(tmp_path):
    catalog, store = make_catalog(tmp_path)
    store.save_definition("broken", {"name": "broken", "steps": [{"name": "x", "type": "no_such_action"}]})
    catalog.load()

    assert "broken" not in catalog.bound and "no_such_action" in catalog.unloaded["broken"]
    assert catalog.remove("broken") is None
    assert "broken" not in catalog.unloaded and store.get_definition("broken") is None


def test_follow_serves_what_another_process_sharing_the_store_did(tmp_path, caplog):
    catalog, store = make_catalog(tmp_path)
    other = Catalog(store, catalog.settings, catalog.renderer)  # another server on the same database
    catalog.load()
    other.load()

    other.create(copy.deepcopy(HELLO))
    [(name, old, new)] = catalog.follow()
    assert (name, old, new.workflow.version) == ("hello", None, 1) and catalog.get("hello") is new
    assert catalog.follow() == []  # nothing new since

    other.replace("hello", {**copy.deepcopy(HELLO), "description": "v2"})
    [(_, old, new)] = catalog.follow()
    assert old.workflow.version == 1 and new.workflow.version == 2 and new.workflow.description == "v2"
    assert catalog.version("hello", 1) is old  # runs that started with v1 on this server finish with it

    # A version this process cannot build (a plugin missing here) is logged once; the one served stays.
    store.save_definition("hello", {"name": "hello", "steps": [{"name": "x", "type": "no_such_action"}]})
    assert catalog.follow() == [] and catalog.get("hello") is new
    assert [r.message for r in caplog.records if "v3 is not loaded" in r.message and "no_such_action" in r.message]
    caplog.clear()
    assert catalog.follow() == [] and not caplog.records

    other.remove("hello")
    assert catalog.follow() == [("hello", new, None)]
    assert "hello" not in catalog.bound and catalog.version("hello", 1) is None


def test_a_name_another_process_made_before_this_one_followed_is_refused_not_overwritten(tmp_path):
    catalog, store = make_catalog(tmp_path)
    other = Catalog(store, catalog.settings, catalog.renderer)  # another server on the same database
    catalog.load()
    other.load()

    other.create(copy.deepcopy(HELLO))  # this catalog has not followed it yet
    with pytest.raises(Conflict, match="a workflow named 'hello' exists .made through another server.; change it"):
        catalog.create({**copy.deepcopy(HELLO), "description": "mine"})
    assert [record["version"] for record in store.list_definition_versions("hello")] == [1]
    assert store.get_definition("hello")["definition"] == HELLO
