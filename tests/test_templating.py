"""{{ }} rendering: native types, undefined names, nesting, the sandbox, and no mutation of the original."""

from __future__ import annotations

import copy

import pytest

from app.core.templating import Renderer, RenderError, is_truthy, needs_rendering
from tests.fixtures import EchoAction

CONTEXT = {
    "inputs": {"n": 41, "name": "ada", "payload": {"a": [1, 2]}, "flag": True},
    "steps": {"fetch": {"json": [{"id": 1}, {"id": 2}], "status_code": 200}},
    "settings": {"UPTIME_URL": "http://127.0.0.1:5001/api/health"},
}


@pytest.fixture
def renderer():
    return Renderer()


def render(renderer: Renderer, value, context=CONTEXT, where="field 'value'"):
    return renderer.render_value(value, context, where)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.payload }}", {"a": [1, 2]}),
        ("{{ inputs.n }}", 41),
        ("{{ inputs.n + 1 }}", 42),
        ("{{ inputs.flag }}", True),
        ("{{ steps.fetch.json }}", [{"id": 1}, {"id": 2}]),
        ("{{ steps.fetch.json | length }}", 2),
        ("  {{ inputs.n }}  ", 41),
        ("{{ inputs.missing }}", None),
        ("n={{ inputs.n }}", "n=41"),
        ("{{ inputs.n }}{{ inputs.n }}", "4141"),
        ("{{ inputs.name | upper }} has {{ steps.fetch.json | length }} tickets", "ADA has 2 tickets"),
        ("{% if inputs.flag %}yes{% else %}no{% endif %}", "yes"),
    ],
)
def test_a_single_expression_keeps_its_type_and_text_stays_text(renderer, template, expected):
    value = render(renderer, template)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ a.b.c or 'x' }}", "x"),
        ("{{ a.b.c }}", None),
        ("pre {{ a.b.c }} post", "pre  post"),
        ("{{ inputs.url or settings.UPTIME_URL }}", "http://127.0.0.1:5001/api/health"),
        ("{{ inputs.missing.deeper or 2000 }}", 2000),
        ("{{ steps.never_ran.result is defined }}", False),
    ],
)
def test_undefined_names_chain_to_nothing(renderer, template, expected):
    assert render(renderer, template) == expected


def test_nested_lists_and_dicts_are_rendered_and_plain_values_kept(renderer):
    marker = object()
    value = {
        "to": ["{{ inputs.name }}@example.org", "ops@example.org"],
        "meta": {"count": "{{ inputs.n }}", "ids": ("{{ steps.fetch.json[0].id }}", 3)},
        "plain": 7,
        "none": None,
        "object": marker,
    }
    assert render(renderer, value) == {
        "to": ["ada@example.org", "ops@example.org"],
        "meta": {"count": 41, "ids": (1, 3)},
        "plain": 7,
        "none": None,
        "object": marker,
    }


@pytest.mark.parametrize(
    "value", ["no template here", "a { brace } and }} but no opener", 42, 1.5, None, True, b"{{ x }}"]
)
def test_values_without_templates_come_back_unchanged(renderer, value):
    assert render(renderer, value) is value


def test_render_object_copies_and_never_changes_the_original(renderer):
    action = EchoAction("echo", value={"text": "{{ inputs.name }}", "list": ["{{ inputs.n }}", 1]})
    before = copy.deepcopy(action.value)

    rendered = renderer.render_object(action, CONTEXT, "step 'echo'")

    assert rendered is not action
    assert rendered.value == {"text": "ada", "list": [41, 1]}
    assert action.value == before
    assert action.value["list"][0] == "{{ inputs.n }}"
    # The name and the run context are not rendered.
    assert rendered.name == "echo"
    assert rendered.context is action.context


def test_render_object_renders_only_template_fields(renderer):
    action = EchoAction("{{ not_rendered }}", value="{{ inputs.n }}", when="{{ inputs.flag }}")
    assert set(renderer.template_fields(action)) == {"when", "value"}
    rendered = renderer.render_object(action, CONTEXT, "step")
    assert (rendered.name, rendered.value, rendered.when) == ("{{ not_rendered }}", 41, True)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "x {{ ''.__class__ }} y",
        "{{ inputs.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ renderer.env }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    ],
)
def test_the_sandbox_blocks_unsafe_access(renderer, template):
    """Unsafe attributes either fail as a RenderError or render as nothing; never a class or a module."""
    try:
        value = render(renderer, template, {**CONTEXT, "renderer": None})
    except RenderError as error:
        assert "field 'value'" in str(error)
        return
    assert value in (None, "", "x  y")


def test_a_security_violation_is_a_render_error_naming_the_field(renderer):
    with pytest.raises(RenderError, match=r"^step 'x': field 'url': template error: .*unsafe"):
        render(renderer, "{{ ''.__class__.__mro__[1].__subclasses__() }}", where="step 'x': field 'url'")


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ inputs.n | no_such_filter }}", ["no_such_filter"]),
        ("{{ inputs.n / 0 }}", ["ZeroDivisionError"]),
        ("{{ unclosed", ["template error"]),
        ("text {% if %} more", ["template error"]),
        ("{{ inputs.name + 1 }}", ["TypeError"]),
    ],
)
def test_template_errors_name_the_field(renderer, template, words):
    with pytest.raises(RenderError) as caught:
        render(renderer, {"deep": [template]}, where="step 'mail': field 'body'")
    message = str(caught.value)
    assert message.startswith("step 'mail': field 'body'.deep[0]: ")
    for word in words:
        assert word in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "truth"),
    [
        (True, True),
        (False, False),
        (None, False),
        (0, False),
        (1, True),
        ([], False),
        ({"a": 1}, True),
        ("", False),
        ("false", False),
        ("False", False),
        (" no ", False),
        ("0", False),
        ("none", False),
        ("null", False),
        ("true", True),
        ("yes", True),
        ("anything", True),
    ],
)
def test_is_truthy(value, truth):
    assert is_truthy(value) is truth


@pytest.mark.parametrize(
    ("value", "needs"),
    [
        ("{{ x }}", True),
        ("{% if x %}y{% endif %}", True),
        ("plain", False),
        (3, False),
        ({"a": ["b", {"c": "{{ d }}"}]}, True),
        ({"a": ["b"]}, False),
        (("{{ x }}",), True),
    ],
)
def test_needs_rendering(value, needs):
    assert needs_rendering(value) is needs


def test_compiled_templates_are_reused_with_new_contexts(renderer):
    assert render(renderer, "{{ inputs.n }}!", {"inputs": {"n": 1}}) == "1!"
    assert render(renderer, "{{ inputs.n }}!", {"inputs": {"n": 2}}) == "2!"
    assert render(renderer, "{{ inputs.n }}", {"inputs": {"n": 3}}) == 3


# -- bounds: one render cannot run for ever or fill the memory (issue 12 item 6) -----------------------------
@pytest.mark.parametrize("template", [
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
])
def test_a_render_past_its_deadline_fails_naming_the_setting(template):
    with pytest.raises(RenderError) as caught:
        render(Renderer(timeout=0.3), template)
    assert str(caught.value) == "field 'value': rendering took longer than 0.3 s (WORKFLOW_TEMPLATE_TIMEOUT)"


@pytest.mark.parametrize(("template", "words"), [
    ("{{ 'a' * 10**9 }}", "a repeated value of 1,000,000,000 items is larger than the limit of 10,000,000"),
    ("x{{ [1] * 10**8 }}", "a repeated value of 100,000,000 items"),
    ("{{ 10 ** (10 ** 10) }}", "10 ** 10000000000 is larger than the limit of 100,000 bits"),
    ("{{ 2 ** 99999 * 2 ** 99999 }}", "a template number is larger than the limit of 100,000 bits"),
    ("{{ 'x' | center(999999999) }}", "filter center: a width of 999,999,999"),
    ("{{ 'x'.ljust(999999999) }}", "str.ljust: a width of 999,999,999"),
    ("{{ '{:>999999999}'.format('x') }}", "a width in '{:>999999999}'"),
    ("{{ '%999999999s' % 'x' }}", "a width in '%999999999s'"),
    ("{{ '%999999999s' | format('x') }}", "filter format: a width"),
    ("{{ '{0:{1}}'.format('x', 999999999) }}", "str.format: a width of 999,999,999"),
    ("{{ '%*s' % (999999999, 'x') }}", "%: a width of 999,999,999"),
    ("{{ '{a:{w}}'.format_map({'a': 'x', 'w': 999999999}) }}", "str.format_map: a width of 999,999,999"),
    ("{{ '%*s' | format(999999999, 'x') }}", "filter format: a width of 999,999,999"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "~ would make more than the limit of 10,000,000 characters"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "a template value of 16,777,216 items"),
    ("{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s | replace('a', 'aaaa') %}"
     "{% endfor %}", "filter replace would make more than the limit of 10,000,000 characters"),
    ("{% for a in range(100000) %}{% for b in range(100) %}{{ 'x' * 100 }}{% endfor %}{% endfor %}",
     "the rendered text is larger than the limit of 10,000,000 characters"),
    ("{{ lipsum(1000000) }}", "'lipsum' is undefined"),
    # What a loop writes inside a macro or a {% set %} block is gathered out of sight: counted as it is written.
    ("{% set big = 'x' * 9000000 %}{% macro m() %}{% for i in range(1000) %}{{ big }}{% endfor %}{% endmacro %}"
     "{{ m() | length }}", "the rendered text is larger than the limit of 10,000,000 characters"),
    ("{% set big = 'x' * 9000000 %}{% set all %}{% for i in range(1000) %}{{ big }}{% endfor %}{% endset %}"
     "{{ all | length }}", "the rendered text is larger than the limit of 10,000,000 characters"),
    ("{% set big = 'x' * 9000000 %}{% for i in range(1000) %}{{ big }}{% endfor %}",
     "the rendered text is larger than the limit of 10,000,000 characters"),
])
def test_a_render_that_would_grow_past_the_limits_fails(renderer, template, words):
    with pytest.raises(RenderError) as caught:
        render(renderer, template)
    assert words in str(caught.value)
    assert str(caught.value).startswith("field 'value': ")


@pytest.mark.parametrize(("template", "expected"), [
    ("{% for i in range(40) %}{{ i % 10 }}{% endfor %}", "0123456789" * 4),
    ("{{ 'ab' ~ inputs.n ~ 'cd' }}", "ab41cd"),
    ("{{ 'ab' * 3 }}", "ababab"),
    ("{{ 2 ** 10 }}", 1024),
    ("{{ (inputs.payload.a | list) + [3] }}", [1, 2, 3]),
    ("{% for x in steps.fetch.json %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}",
     "1/2,2/2"),
    ("{{ 'x' | center(5) }}", "  x  "),
    ("{{ range(100000) | join(',') | length }}", 588889),
    ("{% macro row(x) %}{% for i in range(x) %}{{ i }}{% endfor %}{% endmacro %}{{ row(3) }}-{{ row(2) }}", "012-01"),
    ("{% set all %}{% for x in inputs.payload.a %}[{{ x }}]{% endfor %}{% endset %}{{ all }}", "[1][2]"),
])
def test_bounded_operations_still_work_within_the_limits(renderer, template, expected):
    assert render(renderer, template) == expected


def test_a_loop_does_not_slow_a_render_without_one():
    # The bounded iteration is only wired into {% for %}: an expression compiles as before.
    renderer = Renderer()
    source = renderer.env.compile("{{ inputs.n }}{{ inputs.name | upper }}", raw=True)
    assert "_pyflow" not in source


def test_a_format_field_that_only_looks_like_a_number_is_a_name_as_str_format_reads_it(renderer):
    # The size check before format() read "²" as an index and failed the render with int()'s ValueError.
    assert render(renderer, '{{ "{²}-{0}".format("a", **{"²": "b"}) }}') == "b-a"
