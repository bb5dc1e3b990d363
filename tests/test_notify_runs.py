"""notify steps in posted definitions: refused URLs at definition time, URL credentials scrubbed from runs and logs."""

from __future__ import annotations

import json

from tests.test_action_notify import Inbox


def test_a_posted_definition_with_a_url_apprise_cannot_read_is_refused_naming_it_masked(client, runtime):
    definition = {"name": "tell", "steps": [{"name": "tell", "type": "notify", "config": {
        "urls": ["json://127.0.0.1/", "slak://bob:pa55word@T1JJ3T3L2/B0123/s3cr3tT0ken"], "body": "hi"}}]}
    response = client.post("/api/workflows", json=definition)
    assert response.status_code == 422
    [problem] = response.get_json()["error"]["details"]
    assert problem["path"] == "steps[0].config.urls"
    assert problem["message"] == ("action 'tell': urls[1]: Apprise cannot read the URL 'slak://bob:****@t1jj3t3l2/...' "
                                  "(see https://appriseit.com/services/ for the URL of each service)")
    assert runtime.store.get_definition("tell") is None


def test_the_credentials_inside_notify_urls_never_show_in_the_run_or_its_log(client):
    with Inbox() as inbox:
        definition = {"name": "tell", "max_retries": 0, "steps": [
            {"name": "tell", "type": "notify", "config": {
                "urls": [f"json://bob:Fixed-Pa55word@{inbox.host}/fail", "{{ inputs.url }}"],
                "title": "Deploy", "body": "v2 is live"}},
            # A careless step that echoes what it should not: the scrubber hides both credentials.
            {"name": "echo", "type": "log", "config": {
                "message": "sent with {{ inputs.url }} and Fixed-Pa55word"}}]}
        assert client.post("/api/workflows", json=definition).status_code == 201
        url = f"json://ann:Input-Pa55word@{inbox.host}/ok"
        response = client.post("/api/workflows/tell/runs?wait=20", json={"inputs": {"url": url}})
        run = response.get_json()
        assert run["status"] == "succeeded", run["error"]
        tell = run["steps"][0]["result"]
        assert tell["sent"] == [{"service": "JSON", "url": f"json://ann:****@{inbox.host}/ok"}]
        assert tell["failed"][0]["url"] == f"json://bob:****@{inbox.host}/fail"
        assert run["steps"][1]["result"]["message"] == f"sent with json://ann:***@{inbox.host}/ok and ***"
        assert inbox.requests[-1]["headers"]["Authorization"].startswith("Basic ")  # delivered with the password

    logs = client.get(f"/api/runs/{run['id']}/logs").get_json()["logs"]
    everything = json.dumps(run) + json.dumps(logs) + json.dumps(client.get(f"/api/runs/{run['id']}").get_json())
    index = everything.find("Fixed-Pa55word")
    assert index < 0, everything[max(0, index - 300):index + 100]
    assert "Input-Pa55word" not in everything.replace(json.dumps(url)[1:-1], "")  # only in the posted inputs
    assert any("json://bob:****@" in json.dumps(line) and "failed" in json.dumps(line) for line in logs)
