"""``{{ }}`` rendering of action and trigger settings in a Jinja2 sandbox."""

from __future__ import annotations

import copy
import functools
import operator
import re
import threading
import time
import weakref
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from itertools import chain, islice
from string import Formatter
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, nodes, pass_context, pass_environment
from jinja2.filters import make_attrgetter
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from actions.limits import walk_size

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
# Filters wrapped with the bounds; the others (default, length, first, int...) make at most a reference or a number.
_BIG_WIDTH = re.compile(r"\d{7,}")
# Filters that turn their value into text first (str(), repr or JSON): refused before they start on a value
# past the limit (``[s, s, s] | upper`` writes the list out).
_TEXT_FILTERS = frozenset({"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
                           "pprint", "replace", "safe", "string", "striptags", "title", "tojson", "trim", "truncate",
                           "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr"})
# Filters that hold every item at once, and copy each text when they compare without case (sort, unique...).
_ITEM_FILTERS = frozenset({"dictsort", "groupby", "list", "max", "min", "sort", "unique"})
_TEXT = (str, bytes, bytearray)
# Values whose text is short (a number has at most MAX_INT_BITS bits), or a text measured when it was made.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (list, tuple, set, frozenset)
# Mappings written out item by item (str, JSON); others (the secrets view) write a short repr and are not read:
# measuring `{{ secrets }}` must not decrypt every secret.
_MAPPINGS = (dict, ChainMap, Namespace)
# A text this long or longer that a value holds twice counts twice (shorter ones are the template's own making).
_REPEAT_WORTH_COUNTING = 64
_NAMED_PLACEHOLDER = re.compile(r"%\(([^)]*)\)")
_BOUNDED_FILTERS = _GROWING_FILTERS | _TEXT_FILTERS | _ITEM_FILTERS


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


def _weight(value: Any, limit: int = MAX_OUTPUT) -> int:
    """About how many characters ``value`` makes as text (str, repr or JSON), counted until past ``limit``.

    A value held twice counts twice, as it is written twice: ``[s] * 30`` weighs thirty times ``s``.
    """
    if isinstance(value, _TEXT):  # the common cases, without the walk
        return len(value)
    if type(value) is int:
        return value.bit_length() // 3 + 1
    if type(value) in _SCALARS:
        return 1
    return walk_size(value, limit, _text_weight)


def _text_weight(item: Any) -> tuple[int, Iterator[Any] | None]:
    if isinstance(item, _TEXT):
        return len(item), None
    if isinstance(item, _MAPPINGS):
        fields = _fields(item)
        return 2 + 2 * len(fields), chain.from_iterable(fields.items())
    if isinstance(item, _CONTAINERS):
        return 2 + len(item), iter(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return item.bit_length() // 3 + 1, None
    return 1, None


def _fields(value: Mapping | Namespace) -> Mapping:
    """A mapping, or the attributes a ``namespace()`` holds (its repr writes them all)."""
    return value if isinstance(value, Mapping) else object.__getattribute__(value, "_Namespace__attrs")


def _repeated_weight(value: Any, limit: int = MAX_OUTPUT) -> int:
    """The weight of what ``value`` holds more than once (containers, long texts), counted until past ``limit``.

    A run's data passed on through a template holds each thing once, however large; what a template
    repeats (``[s, s, s]``, a list added to itself) is what it made.
    """
    seen: set[int] = set()
    repeated = 0
    pending: list[Iterator[Any]] = [iter((value,))]
    while pending:
        for item in pending[-1]:
            container = isinstance(item, (*_MAPPINGS, *_CONTAINERS))
            if not container and not (isinstance(item, _TEXT) and len(item) >= _REPEAT_WORTH_COUNTING):
                continue
            if id(item) in seen:
                repeated += _weight(item, limit - repeated)
                if repeated > limit:
                    return repeated
                continue
            seen.add(id(item))
            if container:
                pending.append(iter(item) if isinstance(item, _CONTAINERS)
                               else chain.from_iterable(_fields(item).items()))
                break
        else:
            pending.pop()
    return repeated


def _too_large(what: str) -> TemplateLimit:
    return TemplateLimit(f"{what} would make more than the limit of {MAX_OUTPUT:,} characters")


def _check_estimate(size: int, what: str) -> None:
    """Refuse an operation before it runs when what it would make is past MAX_OUTPUT."""
    if size > MAX_OUTPUT:
        raise _too_large(what)


def _check_text_of(value: Any, what: str) -> Any:
    """``value``, refused when written as text it would pass MAX_OUTPUT (checked before str() makes it)."""
    if not isinstance(value, str) and _weight(value) > MAX_OUTPUT:
        raise _too_large(what)
    return value


def _finalized(value: Any) -> Any:
    """What a ``{{ }}`` writes, checked before it becomes text: ``x{{ [s, s, s] }}`` would be made first."""
    if type(value) in _SCALARS:  # the common cases, at the cost of one look-up
        return value
    return _check_text_of(value, "a value written by {{ }}")


def _check_made(value: Any) -> Any:
    """A render's value: a text within MAX_OUTPUT; a list or mapping that repeats at most MAX_OUTPUT of itself.

    A large value a run already held (its inputs, a step's result) is passed on as it was, whatever its size.
    """
    _check_size(value)
    if isinstance(value, (*_MAPPINGS, *_CONTAINERS)) and _weight(value) > MAX_OUTPUT and (
            _repeated_weight(value) > MAX_OUTPUT):
        raise TemplateLimit(f"a template value that repeats more than the limit of {MAX_OUTPUT:,} characters")
    return value


def _held_items(value: Any, what: str) -> Any:
    """What a filter will hold at once: a generator made a list as it is measured, anything else measured whole."""
    if isinstance(value, (*_TEXT, *_MAPPINGS, *_CONTAINERS)):
        return _check_text_of(value, what)
    return _joined_items(value, "", what)


def _joined_items(iterable: Any, separator: Any, what: str) -> Any:
    """What a join will join, made a list and measured first (a generator can be read once)."""
    gap = _weight(separator)
    if isinstance(iterable, _TEXT):
        _check_estimate(len(iterable) + max(len(iterable) - 1, 0) * gap, what)
        return iterable
    items, size = [], 0
    for item in iterable:
        size += _weight(item, MAX_OUTPUT - size) + gap
        if size > MAX_OUTPUT:
            raise _too_large(what)
        items.append(item)
    return items


def _format_size(text: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    """About how long ``text.format(*args, **kwargs)`` is: the text plus each placeholder's argument."""
    size, automatic = 0, 0
    try:
        fields = list(Formatter().parse(text))
    except ValueError:
        return len(text)  # format will raise the same error
    for literal, field, spec, _conversion in fields:
        size += len(literal) + len(spec or "")
        if field is None:
            continue
        first = re.match(r"[^.\[]*", field).group()
        if first == "":
            key: Any = automatic
            automatic += 1
        else:
            key = int(first) if first.isdecimal() else first  # as str.format reads it: '²' is a name
        value = (args[key] if key < len(args) else None) if isinstance(key, int) else kwargs.get(key)
        size += _weight(value, MAX_OUTPUT - size)
        if size > MAX_OUTPUT:
            break
    return size


def _percent_size(text: str, right: Any) -> int:
    """About how long ``text % right`` is: each argument once, a named one once per ``%(name)s``."""
    names = _NAMED_PLACEHOLDER.findall(text)
    if isinstance(right, Mapping) and names:
        size = len(text)
        for name in names:
            size += _weight(right.get(name), MAX_OUTPUT - size)
            if size > MAX_OUTPUT:
                break
        return size
    return len(text) + _weight(right)


def _replace_size(text: Any, old: Any, new: Any, count: Any = None) -> int:
    """How long ``text.replace(old, new, count)`` is, from the number of places it replaces."""
    text, old, new = (value if isinstance(value, _TEXT) else str(value) for value in (text, old, new))
    places = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and 0 <= count < places:
        places = count
    return len(text) + places * max(len(new) - len(old), 0)


def _lines_size(text: Any, width: Any) -> int:
    """How long ``text`` is with ``width`` (a number of spaces, or a text) put before each line."""
    text = str(text)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    return len(text) + (text.count("\n") + 1) * max(step, 0)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's ``sum`` filter, adding lists or tuples in linear time.

    ``sum(lists, [])`` copies the sum so far at every item: a million one-item lists held a thread
    for 20 minutes in one call that no deadline can interrupt.
    """
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, (list, tuple)):
        return sum(iterable, start)
    parts, size = [start], len(start)
    for item in iterable:
        if type(item) is not type(start):
            raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(item).__name__}") to '
                            f"{type(start).__name__}")
        size += len(item)
        if size > MAX_OUTPUT:
            raise _too_large("filter sum")
        parts.append(item)
    return type(start)(chain.from_iterable(parts))


def _filter_precheck(name: str, args: tuple, kwargs: dict) -> tuple:
    """The filter's arguments, after refusing a call whose result would pass MAX_OUTPUT before it is made."""
    what = f"filter {name}"
    if not args:
        return args
    if name in _TEXT_FILTERS:
        _check_text_of(args[0], what)
    if name in _ITEM_FILTERS:
        if name != "list" or not isinstance(args[0], (*_TEXT, Mapping, *_CONTAINERS)):  # a list of what is held
            return (_held_items(args[0], what), *args[1:])
    elif name == "join":
        separator = args[1] if len(args) > 1 else kwargs.get("d", "")
        return (_joined_items(args[0], separator, what), *args[1:])
    elif name == "replace":
        old, new, count = (args[index] if len(args) > index else kwargs.get(key, default)
                           for index, key, default in ((1, "old", ""), (2, "new", ""), (3, "count", None)))
        _check_estimate(_replace_size(args[0], old, new, count), what)
    elif name == "format":
        right = kwargs or args[1:]
        _check_estimate(_percent_size(str(args[0]), right), what)
    elif name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        _check_estimate(_lines_size(args[0], width), what)
    return args


@pass_context
def _counted_output(context: Any, parts: list[Any]) -> str:
    """What one ``{{ }}``/text run inside a loop or macro writes, counted against MAX_OUTPUT for the render.

    A macro's text is counted when it is made and again where it is written, which errs on the safe side.
    """
    text = "".join(str(_finalized(part)) for part in parts)
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
    size = 0
    for part in parts:
        size += _weight(part, MAX_OUTPUT - size)
        if size > MAX_OUTPUT:
            raise _too_large("~")
    return _check_size("".join(map(str, parts)))


def _bounded_filter(name: str, function: Any) -> Any:
    """``function`` with the deadline checked before and the size of its result after."""
    sized = name in _SIZED_FILTERS
    # A filter passed the context or the environment gets it first; the value filtered comes next.
    passed = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)  # keeps jinja_pass_arg (pass_context, pass_environment...)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        args = (*args[:passed], *_filter_precheck(name, args[passed:], kwargs))
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


def _is_reference(node: nodes.Node) -> bool:
    """True for an expression that only names a value (``steps.fetch.json['items']``): it makes nothing."""
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            return False
        node = node.node
    return isinstance(node, nodes.Name)


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
        self.filters["sum"] = _sum
        self.filters = {name: _bounded_filter(name, function) if name in _BOUNDED_FILTERS else function
                        for name, function in self.filters.items()}
        self.filters["_pyflow_items"] = _bounded_iter
        self.filters["_pyflow_concat"] = _bounded_concat
        self.filters["_pyflow_output"] = _counted_output

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Bounds().visit(super()._parse(source, name, filename))

    def compile(self, source: Any, *args: Any, **kwargs: Any) -> Any:
        # compile_expression hands over a parsed tree, which _parse never sees: `{{ s ~ s ~ s }}` alone.
        if isinstance(source, nodes.Template):
            source = _Bounds().visit(source)
        return super().compile(source, *args, **kwargs)

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
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                if count * len(sequence) > MAX_OUTPUT:
                    raise TemplateLimit(f"a repeated value of {count * len(sequence):,} items is larger than the "
                                        f"limit of {MAX_OUTPUT:,}")
                # [text] * 30 holds 30 references: short, but thirty times the text once written out.
                if count > 1 and not isinstance(sequence, str):
                    _check_estimate(count * _weight(sequence, MAX_OUTPUT // count + 1), "*")
        if operator_ == "%" and isinstance(left, str):
            if _BIG_WIDTH.search(left):
                raise TemplateLimit(f"a width in {left[:40]!r} is larger than the limit of {MAX_OUTPUT:,}")
            _check_width(right if isinstance(right, tuple) else [right], "%")  # '%*s' % (10**9, 'x')
            _check_estimate(_percent_size(left, right), "%")
        return _check_size(_BINOPS[operator_](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_deadline()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        text = getattr(target, "__self__", None)
        if isinstance(text, _TEXT):
            args = __self._text_method_precheck(text, getattr(target, "__name__", ""), args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    @staticmethod
    def _text_method_precheck(text: str | bytes, method: str, args: tuple, kwargs: dict) -> tuple:
        """The method's arguments, after refusing a call whose result would pass the limits before it is made."""
        what = f"str.{method}"
        if method in _SIZED_METHODS or method == "format":  # "{0:{1}}".format("x", 10**9) too
            _check_width([*args, *kwargs.values()], what)
        if method == "format_map" and args and isinstance(args[0], Mapping):
            _check_width(args[0].values(), "str.format_map")
        if isinstance(text, str) and method in ("format", "format_map"):
            if _BIG_WIDTH.search(text):
                raise TemplateLimit(f"a width in {text[:40]!r} is larger than the limit of {MAX_OUTPUT:,}")
            named = args[0] if method == "format_map" and args and isinstance(args[0], Mapping) else kwargs
            _check_estimate(_format_size(text, args if method == "format" else (), named), what)
        elif method == "join" and len(args) == 1 and not kwargs:
            return (_joined_items(args[0], text, what),)
        elif method == "replace" and len(args) >= 2:
            _check_estimate(_replace_size(text, args[0], args[1], args[2] if len(args) > 2 else None), what)
        elif method == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            _check_estimate(len(text) + text.count("\t" if isinstance(text, str) else b"\t") * max(
                size if isinstance(size, int) else 0, 0), what)
        return args

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
        self.env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True,
                                finalize=_finalized)
        self._compile_template = lru_cache(maxsize=2048)(self.env.from_string)
        self._compile_expression = lru_cache(maxsize=2048)(self._expression)
        self._template_fields: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()

    def provide(self, name: str, value: Any) -> None:
        """Let every template read ``name`` (the runtime's ``secrets``); a render's own names come first."""
        self.env.globals[name] = value

    def provided(self, name: str) -> Any:
        """What ``provide`` gave for ``name``; None when nothing was."""
        return self.env.globals.get(name)

    def _expression(self, source: str) -> tuple[Any, bool]:
        """The compiled expression, and whether it only names a value the run holds (``inputs.rows``)."""
        compiled = self.env.compile_expression(source, undefined_to_none=True)
        return compiled, _is_reference(Parser(self.env, source, state="variable").parse_expression())

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
                expression, reference = self._compile_expression(match.group("expr").strip())
                value = expression(**context)
                if isinstance(value, ChainableUndefined):
                    return None
                return value if reference else _check_made(value)  # a value named is passed on as it is
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
        except RecursionError:  # Jinja's parser and compiler recurse once per level: "{{ ----...1 }}"
            return "nested too deeply to compile (Python's recursion limit)"
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
