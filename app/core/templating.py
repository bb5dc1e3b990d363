"""``{{ }}`` rendering of action and trigger settings in a Jinja2 sandbox."""

from __future__ import annotations

import copy
import functools
import operator
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from itertools import islice
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, nodes, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

# A value that is exactly one expression keeps the expression's native type.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
# Attributes that configure the engine, not the action's work.
# compensate is an action rendered when it runs; cache's key is rendered by the step cache, before the step.
_NOT_RENDERED = frozenset({"name", "context", "depends_on", "on_failure", "compensate", "cache"})


# WORKFLOW_TEMPLATE_TIMEOUT's default, for a Renderer made without settings.
DEFAULT_TIMEOUT = 2.0
# The longest text or list one template may make (the rendered value and every value on the way).
MAX_OUTPUT = 10_000_000
# Numbers a template computes stay below this many bits (10**10**10 would take minutes and gigabytes).
MAX_INT_BITS = 100_000
# A loop checks the render's deadline once per this many items.
_CHECK_EVERY = 16
# str methods and filters whose integer argument is the size of what they make ('x'.center(10**9)).
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_SIZED_FILTERS = frozenset({"center", "indent", "wordwrap", "format", "truncate", "slice", "batch"})
# Filters whose result may be much larger than their input, or that take a filter to apply
# ('x'|replace('x', 'xxxx') in a loop, range(10**5)|join(big)); the others (upper, default,
# length, int...) are left as they are: they run once per use and make at most their input.
_GROWING_FILTERS = _SIZED_FILTERS | {"replace", "join", "tojson", "urlencode", "xmlattr", "pprint", "list",
                                     "map", "sum", "string"}
_BIG_WIDTH = re.compile(r"\d{7,}")


class RenderError(ValueError):
    """A template could not be rendered; the message names the field."""


class TemplateLimit(Exception):
    """A render crossed a bound (time, size); the message names the limit and its setting."""


# The deadline of the render under way on this thread: (monotonic deadline, timeout), or None.
_render = threading.local()


def _check_deadline() -> None:
    limit = getattr(_render, "limit", None)
    if limit is not None and time.monotonic() > limit[0]:
        raise TemplateLimit(f"rendering took longer than {limit[1]:g} s (WORKFLOW_TEMPLATE_TIMEOUT)")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_OUTPUT:
        raise TemplateLimit(f"a template value of {len(value):,} items is larger than the limit of "
                            f"{MAX_OUTPUT:,}")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"a template number is larger than the limit of {MAX_INT_BITS:,} bits")
    return value


def _check_width(args: Iterable[Any], what: str) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_OUTPUT:
            raise TemplateLimit(f"{what}: a width of {arg:,} is larger than the limit of {MAX_OUTPUT:,}")


@pass_context
def _counted_output(context: Any, parts: list[Any]) -> str:
    """What one ``{{ }}``/text run inside a loop or macro writes, counted against MAX_OUTPUT for the render.

    A macro's text is counted when it is made and again where it is written, which errs on the safe side.
    """
    text = "".join(map(str, parts))
    limit = getattr(_render, "limit", None)
    if limit is not None:
        _render.written = getattr(_render, "written", 0) + len(text)
        if _render.written > MAX_OUTPUT:
            raise TemplateLimit(f"the rendered text is larger than the limit of {MAX_OUTPUT:,} characters")
    return text


def _joined(chunks: Iterable[str]) -> str:
    """A template's output pieces joined, refused as soon as they pass MAX_OUTPUT (loops yield as they go)."""
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateLimit(f"the rendered text is larger than the limit of {MAX_OUTPUT:,} characters")
        parts.append(chunk)
    return "".join(parts)


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """A ``{% for %}``'s items, checking the render's deadline before every few of them."""
    items = iter(iterable)
    while True:
        _check_deadline()
        chunk = list(islice(items, _CHECK_EVERY))
        if not chunk:
            return
        yield from chunk


def _bounded_concat(parts: list[Any]) -> str:
    """``a ~ b``: str_join with the size bound (doubling a text in a loop would exhaust memory)."""
    return _check_size("".join(map(str, parts)))


def _bounded_filter(name: str, function: Any) -> Any:
    """``function`` with the deadline checked before and the size of its result after."""
    sized = name in _SIZED_FILTERS

    @functools.wraps(function)  # keeps jinja_pass_arg (pass_context, pass_environment...)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        if sized:
            _check_width([*args[1:], *kwargs.values()], f"filter {name}")
            if name == "format" and args and isinstance(args[0], str) and _BIG_WIDTH.search(args[0]):
                raise TemplateLimit(f"filter format: a width in {args[0][:40]!r} is larger than the limit")
        return _check_size(function(*args, **kwargs))

    return bounded


class _Bounds(NodeTransformer):
    """Rewrites a parsed template: loops take their items through _bounded_iter, ``~`` is size-checked.

    What a loop writes at the top level is counted as the render yields it (_joined); what a
    loop writes inside a macro, ``{% set %}``, ``{% filter %}`` or ``{% call %}`` block is
    gathered out of sight, so those outputs are counted one by one (_counted_output).
    """

    def __init__(self) -> None:
        self.stack: list[str] = []

    def _inside(self, node: nodes.Node, kind: str) -> nodes.Node:
        self.stack.append(kind)
        try:
            return self.generic_visit(node)
        finally:
            self.stack.pop()

    def _captured(self, node: nodes.Node) -> nodes.Node:
        return self._inside(node, "captured")

    visit_Macro = visit_CallBlock = visit_FilterBlock = visit_AssignBlock = _captured

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self._inside(node, "loop")
        node.iter = nodes.Filter(node.iter, "_pyflow_items", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        node = self.generic_visit(node)
        if "captured" in self.stack and "loop" in self.stack[self.stack.index("captured"):]:
            node.nodes = [nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_pyflow_output", [], [], None,
                                       None, lineno=node.lineno)]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_pyflow_concat", [], [], None, None,
                            lineno=node.lineno)


def needs_rendering(value: Any) -> bool:
    """True when ``value`` holds a template string anywhere inside it."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(needs_rendering(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(needs_rendering(item) for item in value)
    return False


def is_truthy(value: Any) -> bool:
    """Truth of a rendered ``when``: the strings "false", "0", "no", "none" are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, immutable (a template cannot append to a step's result), keys before attributes.

    Jinja looks up ``steps.items`` as the dict method ``items`` before the key
    ``items``; for step names and data keys the key is what a user means.

    Bounded: calls, filters and every 128th loop item check the render's
    deadline; ``*``, ``**``, ``+``, ``%`` and ``~`` refuse results past
    MAX_OUTPUT items or MAX_INT_BITS bits. A template without loops, calls or
    those operators runs as fast as before.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(10**6) is a large text for nothing
        self.filters = {name: _bounded_filter(name, function) if name in _GROWING_FILTERS else function
                        for name, function in self.filters.items()}
        self.filters["_pyflow_items"] = _bounded_iter
        self.filters["_pyflow_concat"] = _bounded_concat
        self.filters["_pyflow_output"] = _counted_output

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Bounds().visit(super()._parse(source, name, filename))

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "+":  # the common one, kept short: a sum grows by addition only
            value = left + right
            if isinstance(value, (str, list, tuple)) and len(value) > MAX_OUTPUT:
                _check_size(value)
            return value
        _check_deadline()
        if operator_ == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and (
            right * max(abs(left).bit_length() - 1, 1) > MAX_INT_BITS
        ):
            raise TemplateLimit(f"{left} ** {right} is larger than the limit of {MAX_INT_BITS:,} bits")
        if operator_ == "*":
            count, sequence = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and (
                    count * len(sequence) > MAX_OUTPUT):
                raise TemplateLimit(f"a repeated value of {count * len(sequence):,} items is larger than the "
                                    f"limit of {MAX_OUTPUT:,}")
        if operator_ == "%" and isinstance(left, str):
            if _BIG_WIDTH.search(left):
                raise TemplateLimit(f"a width in {left[:40]!r} is larger than the limit of {MAX_OUTPUT:,}")
            _check_width(right if isinstance(right, tuple) else [right], "%")  # '%*s' % (10**9, 'x')
        return _check_size(_BINOPS[operator_](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_deadline()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        text = getattr(target, "__self__", None)
        if isinstance(text, str):
            method = getattr(target, "__name__", "")
            if method in _SIZED_METHODS or method == "format":  # "{0:{1}}".format("x", 10**9) too
                _check_width([*args, *kwargs.values()], f"str.{method}")
            if method == "format_map" and args and isinstance(args[0], Mapping):
                _check_width(args[0].values(), "str.format_map")
            if method in ("format", "format_map") and _BIG_WIDTH.search(text):
                raise TemplateLimit(f"a width in {text[:40]!r} is larger than the limit of {MAX_OUTPUT:,}")
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and isinstance(attribute, str):
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


_BINOPS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod}


class Renderer:
    """Renders templates with a sandboxed Jinja2 environment and caches compiled ones.

    One render may take ``timeout`` seconds (WORKFLOW_TEMPLATE_TIMEOUT) and make at most MAX_OUTPUT characters.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        # Chainable: `trigger_data.url or settings.UPTIME_URL` works when url is absent.
        self.env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
        self._compile_template = lru_cache(maxsize=2048)(self.env.from_string)
        self._compile_expression = lru_cache(maxsize=2048)(self._expression)
        self._template_fields: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()

    def provide(self, name: str, value: Any) -> None:
        """Let every template read ``name`` (the runtime's ``secrets``); a render's own names come first."""
        self.env.globals[name] = value

    def provided(self, name: str) -> Any:
        """What ``provide`` gave for ``name``; None when nothing was."""
        return self.env.globals.get(name)

    def _expression(self, source: str):
        return self.env.compile_expression(source, undefined_to_none=True)

    def render_string(self, text: str, context: Mapping[str, Any]) -> Any:
        """Render one string; a single ``{{ expr }}`` returns the expression's value."""
        if "{{" not in text and "{%" not in text:
            return text
        outer = getattr(_render, "limit", None)
        if outer is None:  # a nested render (a loop's steps) keeps the deadline of the one around it
            _render.limit = (time.monotonic() + self.timeout, self.timeout)
            _render.written = 0
        try:
            match = _SINGLE_EXPRESSION.match(text)
            if match:
                value = self._compile_expression(match.group("expr").strip())(**context)
                return None if isinstance(value, ChainableUndefined) else value
            template = self._compile_template(text)
            if "{%" in text:  # statements may loop: count the output as it comes
                return _joined(template.generate(context))
            return _check_size(template.render(context))
        finally:
            if outer is None:
                _render.limit = None

    def syntax_error(self, text: str) -> str | None:
        """Jinja's message when ``text`` does not compile as render_string would compile it; None when it does."""
        if "{{" not in text and "{%" not in text:
            return None
        try:
            match = _SINGLE_EXPRESSION.match(text)
            if match:
                try:
                    self._compile_expression(match.group("expr").strip())
                except TemplateSyntaxError:
                    # Parsed as the whole template, the message speaks of the text the user wrote
                    # ("got 'end of print statement'", not "unexpected end of template").
                    self.env.parse(text)
                    raise
            else:
                self._compile_template(text)  # cached: the runs that follow compile nothing
        except TemplateSyntaxError as error:
            return f"{error.message} (line {error.lineno})" if "\n" in text.strip() else str(error.message)
        except TemplateError as error:
            return str(error)
        return None

    def render_value(self, value: Any, context: Mapping[str, Any], where: str = "value") -> Any:
        """Render every template string inside ``value`` (dicts and lists too)."""
        if isinstance(value, str):
            try:
                return self.render_string(value, context)
            except (TemplateLimit, RenderError) as error:  # a RenderError from a name's lookup (an unknown secret)
                raise RenderError(f"{where}: {error}") from None
            except TemplateError as error:
                raise RenderError(f"{where}: template error: {error}") from None
            except Exception as error:  # an expression may raise anything (1/0, bad attribute)
                raise RenderError(f"{where}: template failed: {type(error).__name__}: {error}") from None
        if isinstance(value, Mapping):
            return {key: self.render_value(item, context, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            rendered = [self.render_value(item, context, f"{where}[{index}]") for index, item in enumerate(value)]
            return rendered if isinstance(value, list) else tuple(rendered)
        return value

    def template_fields(self, obj: object) -> tuple[str, ...]:
        """Names of ``obj``'s public attributes that hold templates (computed once per object)."""
        fields = self._template_fields.get(obj)
        if fields is None:
            raw = getattr(obj, "raw_fields", ())
            fields = tuple(
                key
                for key, value in vars(obj).items()
                if not key.startswith("_") and key not in _NOT_RENDERED and key not in raw and needs_rendering(value)
            )
            self._template_fields[obj] = fields
        return fields

    def render_object(self, obj: Any, context: Mapping[str, Any], label: str) -> Any:
        """A shallow copy of ``obj`` whose template attributes are rendered.

        The original is never changed, so one action instance serves concurrent runs.
        """
        if hasattr(obj, "__dict__") and not hasattr(obj, "__copy__"):
            # What copy.copy does for a plain object, at a tenth of its cost: this runs for every step.
            clone = object.__new__(type(obj))
            clone.__dict__.update(obj.__dict__)
        else:
            clone = copy.copy(obj)
        for field in self.template_fields(obj):
            setattr(clone, field, self.render_value(getattr(obj, field), context, f"{label}: field {field!r}"))
        return clone
