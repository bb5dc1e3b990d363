"""Red-team findings (DESIGN section 10): attacks a posted definition or a run's inputs could make, each now refused.

An in-process server (create_app, its test client) takes the definitions as an admin would post them; where the
attack is on a bound (memory a template makes), the renderer is measured directly with tracemalloc.
"""

from __future__ import annotations

import http.server
import json
import threading
import tracemalloc
import uuid
from collections.abc import Mapping

import pytest
from cryptography.fernet import Fernet

from actions.http_policy import denied, networks
from app import create_app, start_app
from app.core.templating import MAX_OUTPUT, Renderer, RenderError
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.http_server import base_url, recording, serving
from tests.waiting import wait_until

DENY_LOOPBACK = ["169.254.0.0/16", "fe80::/10", "127.0.0.0/8", "::1/128"]


@pytest.fixture
def make_client(tmp_path):
    """A started app with extra settings; its test client. Every app made is shut down at the end."""
    apps = []

    def make(**settings):
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / f"data{len(apps)}"),
                                    "WORKFLOW_KEY_FILE": str(tmp_path / "encryption.key"),
                                    "WORKFLOW_CLASSES": WORKFLOWS, "WORKFLOW_RETRY_COUNT": 0, **settings}))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["pyflow"].shutdown(timeout=2)


def run_steps(client, *steps: dict) -> dict:
    """Post a definition of ``steps`` and run it to its end; the finished run."""
    name = f"redteam_{uuid.uuid4().hex[:8]}"
    created = client.post("/api/workflows", json={"name": name, "steps": list(steps)})
    assert created.status_code == 201, created.get_data(as_text=True)
    answer = client.post(f"/api/workflows/{name}/runs?wait=30", json={"inputs": {}})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def step(name: str, type_: str, **config) -> dict:
    return {"name": name, "type": type_, "config": config}


# -- templates: the size bound holds before the value is made, not after -------------------------------------
# Each of these made 300 MB or more (and, with 1000 in place of 30, enough to have the server killed for want of
# memory) before the result was measured against MAX_OUTPUT. ``s`` is a text of MAX_OUTPUT characters the run holds.
AMPLIFIERS = [
    "{{ ([s] * 30) | join }}",
    "{{ ''.join([s] * 30) }}",
    "{{ [s] * 30 }}",
    "{{ ('{0}' * 30).format(s) }}",
    "{{ ('%s' * 3) % (s, s, s) }}",
    "{{ '%(a)s%(a)s%(a)s' % {'a': s} }}",
    "{{ ('%s' * 3) | format(s, s, s) }}",
    "{{ ('x' * 30000).replace('x', 'x' * 10000) }}",
    "{{ ('x' * 30000) | replace('x', 'x' * 10000) }}",
    "{{ ('a\n' * 30000) | indent(10000) }}",
    "{{ ('\t' * 30000).expandtabs(10000) }}",
    "{{ [s, s, s] | tojson }}",
    "{{ [s, s, s] | pprint }}",
    "{{ [s, s, s] | string }}",
    "x{{ [s, s, s] }}",
    "{{ s ~ s ~ s }}",
    "{{ {'a': s, 'b': s, 'c': s} }}",
    "{% set ns = namespace(l=[s]) %}{% for i in range(5) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l }}",
    "{% set ns = namespace(l=[s]) %}{% for i in range(5) %}{% set ns.l = ns.l + ns.l %}{% endfor %}x{{ ns.l }}",
    "{% for i in range(2) %}{% set m %}{{ [s, s] }}{% endset %}{% endfor %}",
    "{{ [s, s, s] | upper }}",
    "{{ [s, s, s] | sort }}",
    "{{ [s, s, s] | map('lower') | list }}",
    "{{ [1] | batch(30, s) | list }}",
    "x{{ namespace(a=s, b=s, c=s) }}",
]


@pytest.mark.parametrize("template", AMPLIFIERS)
def test_a_template_cannot_make_a_value_past_the_limit_even_for_a_moment(template):
    renderer = Renderer()
    context = {"s": "x" * MAX_OUTPUT}
    tracemalloc.start()
    try:
        with pytest.raises(RenderError) as caught:
            renderer.render_value(template, context, "field 'message'")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "the limit of 10,000,000" in str(caught.value)
    # At most what fits and the item that would pass the limit: 30 copies of s took 300 MB.
    assert peak < 2.5 * MAX_OUTPUT, f"{peak:,} bytes were allocated"


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ [['a'] * 5, ['b'] * 5] | sum(start=[]) | length }}", 10),
    # Adding lists one by one copies the sum so far each time: 1,000,000 of them took 20 minutes in one C call,
    # which no deadline can interrupt (40,000 took 2 s).
    ("{{ ([[1]] * 1000000) | sum(start=[]) | length }}", 1000000),
    ("{{ [1, 2, 3] | sum }}", 6),
    ("{{ [{'n': 2}, {'n': 3}] | sum(attribute='n') }}", 5),
    ("{{ (('x' * 3000000) ~ ('y' * 3000000) ~ ('z' * 3000000)) | length }}", 9000000),
    ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
    ("{{ range(5) | join }}", "01234"),
    ("{{ [{'n': 'a'}, {'n': 'b'}] | join('-', attribute='n') }}", "a-b"),
    ("{{ '-'.join(['a', 'b']) }}", "a-b"),
    ("{{ '{0}{1}{0}'.format('a', 'b') }}", "aba"),
    ("{{ '{} {}'.format('a', 'b') }}", "a b"),
    ("{{ '{x}!'.format(x='a') }}", "a!"),
    ("{{ '%(a)s-%(a)s' % {'a': 'x'} }}", "x-x"),
    ("{{ '%s=%d' | format('a', 1) }}", "a=1"),
    ("{{ 'abc' | replace('b', 'bb') }}", "abbc"),
    ("{{ 'a\nb' | indent(2, true) }}", "  a\n  b"),
    ("{{ {'a': [1, 'x']} | tojson }}", '{"a": [1, "x"]}'),
    ("{{ [['y' * 9000000]] }}", [["y" * 9000000]]),
])
def test_bounded_templates_still_make_what_fits(template, expected):
    assert Renderer().render_value(template, {}, "field 'value'") == expected


def test_a_large_value_passed_through_a_template_is_not_refused():
    """Data a run already holds (inputs, a step's result) is not made by the template: passing it on costs nothing."""
    rows = json.loads(json.dumps([{"id": index, "name": "x" * 100} for index in range(200000)]))  # 24 MB
    assert Renderer().render_value("{{ inputs.rows }}", {"inputs": {"rows": rows}}) is rows


class Unreadable(Mapping):
    """A mapping whose values cost something to read (the secrets view decrypts each one)."""

    def __getitem__(self, key):
        raise AssertionError(f"{key} was read")

    def __iter__(self):
        return iter(["a", "b"])

    def __len__(self):
        return 2


def test_measuring_a_value_reads_no_mapping_that_writes_only_its_name():
    view = Unreadable()
    assert Renderer().render_value("x{{ view }}", {"view": view}) == f"x{view!r}"
    assert Renderer().render_value("{{ view }}", {"view": view}) is view


def test_an_amplifying_template_fails_its_step_through_the_api(make_client):
    client = make_client()
    run = run_steps(client, step("say", "log", message="{{ (['x' * 10000000] * 1000) | join }}"))
    assert run["status"] == "failed"
    error = run["steps"][0]["error"]
    assert error.startswith("step 'say': field 'message': ")
    assert "the limit of 10,000,000" in error


# -- outgoing HTTP: the unspecified address is this host ----------------------------------------------------------
@pytest.mark.parametrize("address", ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"])
def test_the_unspecified_address_counts_as_loopback(address):
    assert denied(address, networks(DENY_LOOPBACK))
    assert not denied(address, networks(None))  # loopback is allowed by default, and so is 0.0.0.0


@pytest.mark.parametrize("host", ["0.0.0.0", "0", "[::ffff:0.0.0.0]"])
def test_an_http_step_cannot_reach_denied_loopback_through_0_0_0_0(make_client, host):
    client = make_client(WORKFLOW_HTTP_DENY=DENY_LOOPBACK)
    with recording("127.0.0.1") as target:
        run = run_steps(client, step("fetch", "http_request", url=f"http://{host}:{target.port}/admin"))
    assert run["status"] == "failed"
    assert run["steps"][0]["error"].endswith(", which WORKFLOW_HTTP_DENY refuses")
    assert target.received == []


# -- notify: Apprise follows no redirect to a denied address ------------------------------------------------------
def redirect_every_request_to(location: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def _redirect(self) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _redirect

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Redirect


@pytest.mark.parametrize("query", ["", "?redirect=yes"])
def test_a_notify_step_follows_no_redirect_to_a_denied_address(make_client, query):
    client = make_client(WORKFLOW_HTTP_DENY=["169.254.0.0/16", "127.0.0.2/32"])
    with recording("127.0.0.2") as target, \
            serving(redirect_every_request_to(f"http://127.0.0.2:{target.port}/admin")) as httpd:
        url = base_url(httpd).replace("http://", "json://") + "/hook" + query
        run = run_steps(client, step("tell", "notify", urls=[url], body="hello"))
    assert target.received == []
    assert run["status"] == "failed"
    assert "nothing was sent" in run["steps"][0]["error"]


# -- malformed definitions are 4xx answers, never 500 -------------------------------------------------------------
def test_a_workflow_name_too_long_to_store_is_422(make_client):
    client = make_client()
    name = "a" * 129
    answer = client.post("/api/workflows", json={"name": name, "steps": [step("say", "log", message="hi")]})
    assert answer.status_code == 422
    [problem] = answer.get_json()["error"]["details"]
    assert problem["path"] == "name"
    assert "at most 128 characters" in problem["message"]
    assert client.get(f"/api/workflows/{name}").status_code == 404


@pytest.mark.parametrize(("yaml_text", "where"), [
    ("name: y1\nsteps: [{name: a, type: log, config: {!!timestamp 2020-01-01: m}}]", "steps[0].config: "),
    ("name: y2\nsteps: [{name: a, type: log, config: {message: !!binary AAAA}}]", "steps[0].config.message"),
    ("name: y3\nsteps: [{name: a, type: log, config: {message: !!timestamp 2020-01-01}}]",
     "steps[0].config.message"),
])
def test_yaml_that_is_not_json_data_is_400_naming_the_place(make_client, yaml_text, where):
    client = make_client()
    answer = client.post("/api/workflows", data=yaml_text.encode(), content_type="application/yaml")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    message = answer.get_json()["error"]["message"]
    assert message.startswith("request.yaml: ")
    assert where in message


def test_a_yaml_date_key_is_a_text_key(make_client):
    client = make_client()
    yaml_text = "name: y4\n2020-01-01: 1\nsteps: [{name: a, type: log, config: {message: m}}]"
    answer = client.post("/api/workflows", data=yaml_text.encode(), content_type="application/yaml")
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["details"][0]["path"] == "2020-01-01"


def test_a_yaml_date_is_kept_as_the_text_it_was_written_as(make_client):
    client = make_client()
    yaml_text = "name: dated\nsteps: [{name: a, type: log, config: {message: 2020-01-01}}]"
    answer = client.post("/api/workflows", data=yaml_text.encode(), content_type="application/yaml")
    assert answer.status_code == 201, answer.get_data(as_text=True)
    run = client.post("/api/workflows/dated/runs?wait=30", json={}).get_json()
    assert run["status"] == "succeeded"
    assert run["steps"][0]["result"]["message"] == "2020-01-01"


# -- threads: a sub-workflow inside a parallel loop does not multiply them ----------------------------------------
class ThreadPeak:
    """The most threads this process ran while the block ran, sampled on a thread of its own."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, threading.active_count())
            self._stop.wait(0.01)

    def __enter__(self) -> ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


# 8 parallel items or steps, the run's thread, at most two threads per sub-run (its own, one step's), the sampler
# and a few of the engine's: not 8 x 8 (88 threads came; a third level of workflows would have made 8 x 8 x 8).
SERIAL_SUB_RUNS = 8 + 1 + 2 * 8 + 5


def parallel_loop(name: str, *steps: dict) -> dict:
    return {"name": name, "type": "loop",
            "config": {"items": "{{ range(8) | list }}", "max_parallel": 8, "steps": list(steps)}}


def test_a_sub_workflow_in_a_parallel_loop_runs_its_own_loop_one_item_at_a_time(make_client):
    """8 parallel items each calling a workflow with an 8-parallel loop made 64 threads; a third level, 512."""
    client = make_client(WORKFLOW_STEP_TIMEOUT=30)
    for definition in (
        {"name": "leaf", "steps": [parallel_loop("items", step("pause", "wait", seconds=0.2))]},
        {"name": "fan", "steps": [parallel_loop("calls", step("call", "workflow", workflow="leaf"))]},
    ):
        assert client.post("/api/workflows", json=definition).status_code == 201
    baseline = threading.active_count()
    with ThreadPeak() as threads:
        run = client.post("/api/workflows/fan/runs?wait=60", json={}).get_json()
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["result"]["count"] == 8
    assert threads.peak - baseline <= SERIAL_SUB_RUNS


def test_a_sub_workflow_of_parallel_steps_runs_its_steps_one_at_a_time(make_client):
    client = make_client(WORKFLOW_STEP_TIMEOUT=30)
    waits = [{**step(f"w{index}", "wait", seconds=0.2), "depends_on": []} for index in range(8)]
    calls = [{**step(f"c{index}", "workflow", workflow="wide"), "depends_on": []} for index in range(8)]
    for definition in ({"name": "wide", "max_parallel_steps": 8, "steps": waits},
                       {"name": "fan_out", "max_parallel_steps": 8, "steps": calls}):
        assert client.post("/api/workflows", json=definition).status_code == 201, definition
    baseline = threading.active_count()
    with ThreadPeak() as threads:
        run = client.post("/api/workflows/fan_out/runs?wait=60", json={}).get_json()
    assert run["status"] == "succeeded", run
    assert threads.peak - baseline <= SERIAL_SUB_RUNS


# -- credentials: a header that names a secret is not carried to another host by a redirect -----------------------
API_KEY = "key-" + uuid.uuid4().hex


def redirect_get_to(location: str, seen: list) -> type[http.server.BaseHTTPRequestHandler]:
    """Answers GET /start with 302 to ``location`` and anything else with 200; keeps each request's headers."""
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, dict(self.headers)))
            self.send_response(302 if self.path == "/start" else 200)
            if self.path == "/start":
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Redirect


SECRET_HEADERS = {"X-Api-Key": "{{ secrets.API }}", "Authorization": "Bearer {{ secrets.API }}",
                  "Private-Token": "{{ secrets.API }}"}


def test_a_redirect_to_another_host_gets_no_secret_header(make_client):
    client = make_client()
    assert client.put("/api/secrets/API", json={"value": API_KEY}).status_code == 201
    with recording("127.0.0.2") as other, \
            serving(redirect_get_to(f"http://127.0.0.2:{other.port}/collect", [])) as httpd:
        run = run_steps(client, step("fetch", "http_request", url=f"{base_url(httpd)}/start",
                                     headers={**SECRET_HEADERS, "X-Trace": "t-1"}))
    assert run["status"] == "succeeded", run
    [request] = other.received
    assert API_KEY.encode() not in request
    assert b"X-Trace: t-1" in request  # an ordinary header still goes along


def test_a_redirect_on_the_same_host_keeps_the_secret_headers(make_client):
    client = make_client()
    assert client.put("/api/secrets/API", json={"value": API_KEY}).status_code == 201
    seen: list = []
    with serving(redirect_get_to("/landing", seen)) as httpd:
        run = run_steps(client, step("fetch", "http_request", url=f"{base_url(httpd)}/start",
                                     headers=SECRET_HEADERS))
    assert run["status"] == "succeeded", run
    [(_, first), (path, second)] = seen
    assert path == "/landing"
    assert second["X-Api-Key"] == second["Private-Token"] == API_KEY
    assert second["Authorization"] == f"Bearer {API_KEY}"


# -- polling: a posted definition cannot make its trigger poll without pause ---------------------------------------
def test_a_check_interval_under_a_tenth_of_a_second_is_422(make_client):
    """check_interval 0.0001 on a file trigger kept one core 87 % busy listing a folder."""
    client = make_client()
    definition = {"name": "busy", "check_interval": 0.0001, "trigger": {"type": "file", "folder": "inbox"},
                  "steps": [step("say", "log", message="hi")]}
    answer = client.post("/api/workflows", json=definition)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    [problem] = answer.get_json()["error"]["details"]
    assert problem == {"path": "check_interval",
                       "message": "0.0001 is less than 0.1 s, the shortest interval a trigger is polled at"}
    assert client.get("/api/workflows/busy").status_code == 404
    definition["check_interval"] = 0.1
    assert client.post("/api/workflows", json=definition).status_code == 201


def test_a_posted_trigger_is_polled_at_most_ten_times_a_second(make_client):
    """A file trigger's poll_interval of 0.001 s was polled every millisecond, whatever check_interval said."""
    client = make_client()
    definition = {"name": "lister", "trigger": {"type": "file", "folder": "inbox", "poll_interval": 0.001},
                  "steps": [step("say", "log", message="hi")]}
    answer = client.post("/api/workflows", json=definition)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert answer.get_json()["check_interval"] == 0.1


@pytest.mark.parametrize("seconds", [0.001, 0.5])
def test_a_posted_interval_trigger_under_a_second_is_422(make_client, seconds):
    """An interval trigger of 0.001 s made a run every poll, ten a second, flooding the store with runs."""
    client = make_client()
    definition = {"name": "ticker", "trigger": {"type": "interval", "seconds": seconds},
                  "steps": [step("say", "log", message="hi")]}
    answer = client.post("/api/workflows", json=definition)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["details"] == [
        {"path": "trigger.seconds",
         "message": f"{seconds:g} is less than 1 s, the shortest interval a definition's trigger fires at"}]
    assert client.get("/api/workflows/ticker").status_code == 404
    definition["trigger"]["seconds"] = 1
    assert client.post("/api/workflows", json=definition).status_code == 201


def test_an_interval_under_a_second_made_by_a_template_is_never_polled(make_client):
    """A template is rendered when the trigger is bound: "{{ 0.001 }}" passes the check of a posted number."""
    client = make_client()
    definition = {"name": "ticker", "trigger": {"type": "interval", "seconds": "{{ 0.001 }}"},
                  "steps": [step("say", "log", message="hi")]}
    answer = client.post("/api/workflows", json=definition)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    why = "trigger 'ticker': seconds 0.001 is less than 1 s, the shortest interval a definition's trigger fires at"
    assert answer.get_json()["error"] == why
    started = client.post("/api/workflows/ticker/start")
    assert started.status_code == 409
    assert started.get_json()["error"]["message"] == f"workflow 'ticker' cannot be started: {why}"


@pytest.mark.parametrize("message", [
    "{{ " + "-" * 5000 + "1 }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
    "x{{ inputs" + ".a" * 5000 + " }}",
    "{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000,
])
def test_a_template_nested_too_deeply_to_compile_is_422(make_client, message):
    client = make_client()
    answer = client.post("/api/workflows", json={"name": "deep", "steps": [step("say", "log", message=message)]})
    assert answer.status_code == 422, answer.get_data(as_text=True)[:300]
    [problem] = answer.get_json()["error"]["details"]
    assert problem == {"path": "steps[0].config.message",
                       "message": "template syntax error: nested too deeply to compile (Python's recursion limit)"}


# -- a loop abandoned at its step's timeout stops at the next item --------------------------------------------------
def test_a_loop_past_its_timeout_stops_instead_of_running_on(make_client, tmp_path):
    """The engine abandons a step past its timeout; the loop went on with its items (and a retry started another)."""
    client = make_client(WORKFLOW_FILES_ROOT=str(tmp_path / "files"))
    loop = {"name": "each", "type": "loop", "timeout": 0.5,
            "config": {"items": "{{ range(300) | list }}", "steps": [
                step("mark", "file", operation="append", path="marks.txt", content="x\n"),
                step("pause", "wait", seconds=0.01)]}}
    run = run_steps(client, loop)
    assert run["status"] == "failed"
    assert run["steps"][0]["error"] == "timed out after 0.5 s"
    prefix = f"pyflow-{run['id']}"
    wait_until(lambda: not [thread for thread in threading.enumerate() if thread.name.startswith(prefix)],
               timeout=10, message="the run's threads ended")
    marks = (tmp_path / "files" / "marks.txt").read_text().count("x")
    assert marks < 300  # 300 items take 3 s and more: the loop stopped soon after 0.5 s


# -- outgoing HTTP: a body nobody reads is not read into memory ------------------------------------------------------
HUGE_BODY = 200 * 1024 * 1024  # an endless body would do the same, without an end


def huge_body_answer(status: int, location: str | None = None) -> type[http.server.BaseHTTPRequestHandler]:
    """Answers every GET with ``status`` and HUGE_BODY bytes (a 302 to ``location`` too)."""
    class Huge(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/start" or location is None else 200)
            if location and self.path == "/start":
                self.send_header("Location", location)
                self.send_header("Content-Length", str(HUGE_BODY))
                self.end_headers()
            elif location:
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                return
            else:
                self.send_header("Content-Length", str(HUGE_BODY))
                self.end_headers()
            chunk = b"\0" * 2**20
            try:
                for _ in range(HUGE_BODY // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client went away: what a client that reads nothing does

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Huge


@pytest.mark.parametrize("kind", ["http_check", "redirect"])
def test_a_huge_body_nobody_needs_is_not_read(make_client, kind):
    """http_check read a whole answer (any size, unbounded) for its status; requests read a redirect's body."""
    client = make_client()
    handler = huge_body_answer(200) if kind == "http_check" else huge_body_answer(302, "/landing")
    with serving(handler) as httpd:
        config = (step("probe", "http_check", url=f"{base_url(httpd)}/start") if kind == "http_check"
                  else step("probe", "http_request", url=f"{base_url(httpd)}/start"))
        tracemalloc.start()
        try:
            run = run_steps(client, config)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["result"]["status_code"] == 200
    assert peak < HUGE_BODY / 10, f"{peak:,} bytes were allocated"


# -- the secrets' key is not a file a definition can reach ---------------------------------------------------------
def test_a_key_file_inside_the_files_root_stops_start_up(tmp_path):
    """A file step could read the key into a run record (and a viewer read it there), or replace it."""
    root = tmp_path / "files"
    settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), "WORKFLOW_FILES_ROOT": str(root),
                "WORKFLOW_KEY_FILE": str(root / "keys" / "encryption.key"), "WORKFLOW_CLASSES": WORKFLOWS}
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert caught.value.message == (
        f"WORKFLOW_KEY_FILE {root / 'keys' / 'encryption.key'} is inside WORKFLOW_FILES_ROOT {root}: a file step "
        f"could read or replace the key; keep it elsewhere")
    # A key from the environment needs no file: nothing to refuse.
    app = start_app(create_app({**settings, "WORKFLOW_ENCRYPTION_KEY": Fernet.generate_key().decode()}))
    app.extensions["pyflow"].shutdown(timeout=2)


# -- a step's result is bounded, a loop's gathered results too ------------------------------------------------------
def sized_answer(megabytes: int) -> type[http.server.BaseHTTPRequestHandler]:
    """Answers every GET with ``megabytes`` MB of text."""
    class Sized(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(megabytes * 2**20))
            self.end_headers()
            for _ in range(megabytes):
                self.wfile.write(b"x" * 2**20)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Sized


def test_a_loop_stops_gathering_results_past_the_limit(make_client):
    """A loop of 40 fetches of 9 MB gathered 360 MB (1,000 of them 9 GB) before it ended, in memory and the record."""
    client = make_client(WORKFLOW_STEP_TIMEOUT=60)
    with serving(sized_answer(9)) as httpd:
        loop = {"name": "fetch_all", "type": "loop",
                "config": {"items": "{{ range(40) | list }}",
                           "steps": [step("get", "http_request", url=f"{base_url(httpd)}/big")]}}
        tracemalloc.start()
        try:
            run = run_steps(client, loop)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert run["status"] == "failed"
    error = run["steps"][0]["error"]
    assert error.startswith("loop: item "), error
    assert error.endswith(" of 40 brought the results gathered past the 64 MB a step's result may hold as JSON")
    assert peak < 200 * 2**20, f"{peak:,} bytes were allocated"


def test_a_step_result_past_the_limit_fails_the_step(make_client):
    client = make_client()
    big = "'" + "x" * 100 + "'"
    # 7 texts of 10,000,000 characters: each within the template limit, together 70 MB.
    values = ", ".join(f"{{'v': ({big} * 99999) ~ '{index}'}}" for index in range(7))
    run = run_steps(client, step("make", "transform", data=f"{{{{ [{values}] }}}}", operation="dedupe"))
    assert run["status"] == "failed"
    assert run["steps"][0]["error"] == "returned a result of more than 64 MB as JSON, the most a step's result may hold"


def test_a_runs_results_together_past_the_limit_fail_the_step_that_brings_them_past(make_client):
    """Each step's result is bounded (64 MB), but 500 steps of 60 MB each would hold 30 GB: a run's are too."""
    client = make_client(WORKFLOW_MAX_RUN_RESULTS_MB=1)
    # Each result is {"message": <400,000 x>}: about 0.4 MB as JSON, the third brings them past 1 MB.
    run = run_steps(client, *(step(f"say{n}", "log", message="{{ 'x' * 400000 }}") for n in (1, 2, 3)))
    assert run["status"] == "failed"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "failed"]
    error = ("returned a result of 0.4 MB, which brings the run's results to 1.1 MB as JSON, "
             "more than WORKFLOW_MAX_RUN_RESULTS_MB (1 MB)")
    assert run["steps"][2]["error"] == error and run["steps"][2]["result"] is None
    assert run["error"] == f"step 'say3' failed: {error}"


def test_a_runs_results_are_counted_across_a_wait(make_client):
    """A run that waited continues in a new execution: the results it holds still count."""
    client = make_client(WORKFLOW_MAX_RUN_RESULTS_MB=1)
    name = f"redteam_{uuid.uuid4().hex[:8]}"
    steps = [step("say1", "log", message="{{ 'x' * 400000 }}"), step("say2", "log", message="{{ 'x' * 400000 }}"),
             step("ask", "approval", timeout=600), step("say3", "log", message="{{ 'x' * 400000 }}")]
    assert client.post("/api/workflows", json={"name": name, "steps": steps}).status_code == 201
    run_id = client.post(f"/api/workflows/{name}/runs", json={}).get_json()["id"]
    wait_until(lambda: client.get(f"/api/runs/{run_id}").get_json()["status"] == "waiting", 10, message="waiting")
    assert client.post(f"/api/runs/{run_id}/approve").status_code == 200
    wait_until(lambda: client.get(f"/api/runs/{run_id}").get_json()["status"] == "failed", 10, message="failed")
    run = client.get(f"/api/runs/{run_id}").get_json()
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert "more than WORKFLOW_MAX_RUN_RESULTS_MB (1 MB)" in run["steps"][3]["error"]


def test_a_compensations_result_counts_toward_the_runs_results(make_client):
    """A compensation's result is stored in the run too: one past the run's bound fails, naming the setting."""
    client = make_client(WORKFLOW_MAX_RUN_RESULTS_MB=1)
    undo = {"type": "log", "message": "{{ 'u' * 400000 }}"}
    run = run_steps(client, {**step("say1", "log", message="{{ 'x' * 400000 }}"), "compensate": undo},
                    {**step("say2", "log", message="{{ 'x' * 400000 }}"), "compensate": undo},
                    step("ship", "file", operation="read", path="missing.txt"))  # no such file: it fails at once
    assert run["status"] == "failed"
    second, first = run["compensations"]
    assert (second["step"], second["status"], second["attempts"]) == ("say2", "failed", 1)  # not retried
    assert second["error"] == ("returned a result of 0.4 MB, which brings the run's results to 1.1 MB as JSON, "
                               "more than WORKFLOW_MAX_RUN_RESULTS_MB (1 MB)")
    assert second["result"] is None and first["status"] == "failed"


def test_a_result_reused_from_the_cache_counts_toward_the_runs_results(make_client):
    client = make_client(WORKFLOW_MAX_RUN_RESULTS_MB=1)
    name = f"redteam_{uuid.uuid4().hex[:8]}"
    steps = [step("pad", "log", message="{{ 'x' * inputs.n }}"),
             {**step("big", "log", message="{{ 'x' * 400000 }}"), "cache": {"ttl": 600}}]
    assert client.post("/api/workflows", json={"name": name, "steps": steps}).status_code == 201
    first = client.post(f"/api/workflows/{name}/runs?wait=30", json={"inputs": {"n": 1}}).get_json()
    assert first["status"] == "succeeded", first
    second = client.post(f"/api/workflows/{name}/runs?wait=30", json={"inputs": {"n": 800000}}).get_json()
    assert second["status"] == "failed"
    assert second["steps"][1]["error"] == ("returned a result of 0.4 MB, which brings the run's results to 1.1 MB "
                                           "as JSON, more than WORKFLOW_MAX_RUN_RESULTS_MB (1 MB)")


def test_a_value_repeated_in_many_rows_is_measured_before_it_is_written(make_client):
    """A transform that puts one text in every row: 100 rows of 1 MB made 95 MB of JSON, 10,000 rows 10 GB."""
    client = make_client()
    rows = [{"id": index} for index in range(10000)]
    name = f"redteam_{uuid.uuid4().hex[:8]}"
    definition = {"name": name, "steps": [step("tag", "transform", data="{{ inputs.rows }}", operation="map",
                                               fields={"id": "id", "tag": {"value": "{{ 'y' * 1000000 }}"}})]}
    assert client.post("/api/workflows", json=definition).status_code == 201
    tracemalloc.start()
    try:
        run = client.post(f"/api/workflows/{name}/runs?wait=30", json={"inputs": {"rows": rows}}).get_json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run["status"] == "failed"
    assert run["steps"][0]["error"] == "returned a result of more than 64 MB as JSON, the most a step's result may hold"
    assert peak < 64 * 2**20, f"{peak:,} bytes were allocated"


# -- a run's log keeps lines of a readable length -------------------------------------------------------------------
def test_a_huge_log_line_is_cut_in_the_run_log(make_client):
    """500 log steps of 10,000,000 characters wrote 5 GB of run log; a line is now at most 16,384 characters."""
    client = make_client()
    run = run_steps(client, step("say", "log", message="{{ 'x' * 1000000 }}"))
    assert run["status"] == "succeeded"
    lines = client.get(f"/api/runs/{run['id']}/logs").get_json()["logs"]
    [said] = [line for line in lines if line["step"] == "say"]
    assert said["message"] == "x" * 16384 + " ... (983,616 more characters)"
