"""The built-in template functions that need no deployment: strings, logic, collections.

Each function takes its evaluated arguments as a list and returns a JSON value. ``BUILTINS``
maps the lower-cased name to a :class:`~provisioner.localcloud.expressions.Function`. The
functions bound to a deployment (``parameters``, ``resourceId``, ``reference`` ...) live in
:mod:`provisioner.localcloud.context`; ``if`` is evaluated lazily by the evaluator itself.
"""

from __future__ import annotations

import base64 as _base64
import json as _json
import uuid
from collections.abc import Callable
from typing import Any

from provisioner.localcloud.expressions import ExpressionError, Function, type_name
from provisioner.localcloud.unique import unique_string

BUILTINS: dict[str, Function] = {}


def builtin(name: str, min_args: int = 0, max_args: int | None = None):
    def register(call: Callable[[list], Any]) -> Callable[[list], Any]:
        BUILTINS[name.lower()] = Function(name, call, min_args, max_args)
        return call

    return register


def _want(name: str, value: Any, kind: type | tuple, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ExpressionError.of(f"function '{name}' expects {what}, got {type_name(value)}")
    return value


def _text(name: str, value: Any) -> str:
    return _want(name, value, str, "a string")


def _integer(name: str, value: Any) -> int:
    return _want(name, value, int, "an integer")


def as_text(value: Any) -> str:
    """A value as ARM writes it into a string (``string()``, ``format()``, ``concat()``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"  # .NET's Boolean.ToString(), as ARM does
    if isinstance(value, (dict, list)):
        return _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1`` is not ``true``; objects and arrays compare deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# --- literals and logic -----------------------------------------------------------------

builtin("true", 0, 0)(lambda args: True)
builtin("false", 0, 0)(lambda args: False)
builtin("null", 0, 0)(lambda args: None)
builtin("equals", 2, 2)(lambda args: _same(args[0], args[1]))


@builtin("not", 1, 1)
def _not(args):
    return not _want("not", args[0], bool, "a bool")


@builtin("and", 2)
def _and(args):
    values = [_want("and", a, bool, "bools") for a in args]  # every argument checked
    return all(values)


@builtin("or", 2)
def _or(args):
    values = [_want("or", a, bool, "bools") for a in args]
    return any(values)


def _compare(name: str, test: Callable[[Any, Any], bool]) -> None:
    def compare(args):
        a, b = args
        both_ints = all(isinstance(x, int) and not isinstance(x, bool) for x in args)
        if not (both_ints or (isinstance(a, str) and isinstance(b, str))):
            raise ExpressionError.of(f"function '{name}' compares two integers or two strings")
        return test(a, b)

    builtin(name, 2, 2)(compare)


_compare("greater", lambda a, b: a > b)
_compare("greaterOrEquals", lambda a, b: a >= b)
_compare("less", lambda a, b: a < b)
_compare("lessOrEquals", lambda a, b: a <= b)


@builtin("coalesce", 1)
def _coalesce(args):
    return next((a for a in args if a is not None), None)


# --- strings ------------------------------------------------------------------------------

@builtin("concat", 1)
def _concat(args):
    if all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    if any(isinstance(a, (list, dict)) for a in args):
        raise ExpressionError.of("function 'concat' joins either strings or arrays, not a mix")
    return "".join(as_text(a) for a in args)


@builtin("format", 1)
def _format(args):
    """.NET composite formatting: ``{0}``, ``{1,-8}``, and ``{{``/``}}`` for braces."""
    template, values = _text("format", args[0]), args[1:]
    out, i = [], 0
    while i < len(template):
        char = template[i]
        if char in "{}" and template[i + 1 : i + 2] == char:
            out.append(char)
            i += 2
            continue
        if char == "}":
            raise ExpressionError.of(f"format string has an unmatched '}}' at position {i}")
        if char != "{":
            out.append(char)
            i += 1
            continue
        end = template.find("}", i)
        if end < 0:
            raise ExpressionError.of(f"format string has an unmatched '{{' at position {i}")
        item = template[i + 1 : end]
        head, _, spec = item.partition(":")
        index, _, align = head.partition(",")
        if spec:
            raise ExpressionError.of(f"format specifier ':{spec}' in '{{{item}}}' is not supported")
        if not index.strip().isdigit() or (align and not align.strip().lstrip("-").isdigit()):
            raise ExpressionError.of(f"format item '{{{item}}}' is not '{{index}}' or '{{index,alignment}}'")
        if int(index) >= len(values):
            raise ExpressionError.of(f"format item '{{{item}}}' has no argument (got {len(values)})")
        text = as_text(values[int(index)])
        width = int(align) if align else 0
        out.append(text.rjust(width) if width >= 0 else text.ljust(-width))
        i = end + 1
    return "".join(out)


builtin("toLower", 1, 1)(lambda args: _text("toLower", args[0]).lower())
builtin("toUpper", 1, 1)(lambda args: _text("toUpper", args[0]).upper())
builtin("trim", 1, 1)(lambda args: _text("trim", args[0]).strip())
builtin("replace", 3, 3)(
    lambda args: _text("replace", args[0]).replace(_text("replace", args[1]), _text("replace", args[2]))
)
builtin("startsWith", 2, 2)(
    lambda args: _text("startsWith", args[0]).lower().startswith(_text("startsWith", args[1]).lower())
)
builtin("endsWith", 2, 2)(
    lambda args: _text("endsWith", args[0]).lower().endswith(_text("endsWith", args[1]).lower())
)
builtin("indexOf", 2, 2)(lambda args: _text("indexOf", args[0]).lower().find(_text("indexOf", args[1]).lower()))
builtin("string", 1, 1)(lambda args: as_text(args[0]))
builtin("base64", 1, 1)(lambda args: _base64.b64encode(_text("base64", args[0]).encode()).decode())
builtin("uniqueString", 1)(lambda args: unique_string(*[_text("uniqueString", a) for a in args]))

# guid(): a name-based (version 5) UUID under Azure's namespace, over the arguments joined
# by '-'. The algorithm is as ported publicly (Terraform uuidv5 recipes, PowerShell and
# Python ports); no output vector produced by ARM itself was found to test against.
GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")
builtin("guid", 1)(lambda args: str(uuid.uuid5(GUID_NAMESPACE, "-".join(_text("guid", a) for a in args))))


@builtin("substring", 2, 3)
def _substring(args):
    text, start = _text("substring", args[0]), _integer("substring", args[1])
    length = _integer("substring", args[2]) if len(args) == 3 else len(text) - start
    if start < 0 or length < 0 or start + length > len(text):
        raise ExpressionError.of(
            f"substring start {start} and length {length} are out of range for a string of length {len(text)}"
        )
    return text[start : start + length]


@builtin("split", 2, 2)
def _split(args):
    text, delimiters = _text("split", args[0]), args[1]
    if isinstance(delimiters, str):
        delimiters = [delimiters]
    parts = [text]
    for delimiter in _want("split", delimiters, list, "a string or an array of strings as delimiter"):
        parts = [piece for part in parts for piece in part.split(_text("split", delimiter))]
    return parts


@builtin("padLeft", 2, 3)
def _pad_left(args):
    text, width = as_text(args[0]), _integer("padLeft", args[1])
    fill = _text("padLeft", args[2]) if len(args) == 3 else " "
    if len(fill) != 1:
        raise ExpressionError.of("function 'padLeft' pads with exactly one character")
    return text.rjust(width, fill)


# --- conversions ------------------------------------------------------------------------------

@builtin("int", 1, 1)
def _int(args):
    value = args[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(_text("int", value).strip())
    except ValueError:
        # The text is not echoed: it may come from a secureString parameter.
        raise ExpressionError.of("function 'int' got a string that is not an integer") from None


@builtin("bool", 1, 1)
def _bool(args):
    value = args[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ExpressionError.of(f"function 'bool' cannot convert {type_name(value)} to a bool")


@builtin("json", 1, 1)
def _json_fn(args):
    try:
        return _json.loads(_text("json", args[0]))
    except ValueError as error:
        raise ExpressionError.of(f"function 'json' got text that is not JSON: {error}") from None


# --- collections ------------------------------------------------------------------------------

builtin("createArray", 0)(lambda args: list(args))


@builtin("createObject", 0)
def _create_object(args):
    if len(args) % 2:
        raise ExpressionError.of("function 'createObject' takes pairs of key and value")
    keys = [_text("createObject", k) for k in args[0::2]]
    return dict(zip(keys, args[1::2]))


def _sized(name: str, value: Any) -> Any:
    return _want(name, value, (str, list, dict), "a string, an array or an object")


builtin("length", 1, 1)(lambda args: len(_sized("length", args[0])))


@builtin("empty", 1, 1)
def _empty(args):
    return args[0] is None or len(_sized("empty", args[0])) == 0


@builtin("contains", 2, 2)
def _contains(args):
    container, item = _sized("contains", args[0]), args[1]
    if isinstance(container, str):
        return as_text(item) in container
    if isinstance(container, dict):  # keys compare case-insensitively
        return isinstance(item, str) and item.lower() in (k.lower() for k in container)
    return any(_same(item, x) for x in container)


@builtin("first", 1, 1)
def _first(args):
    value = _want("first", args[0], (str, list), "a string or an array")
    return value[0] if value else ("" if isinstance(value, str) else None)


@builtin("last", 1, 1)
def _last(args):
    value = _want("last", args[0], (str, list), "a string or an array")
    return value[-1] if value else ("" if isinstance(value, str) else None)


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for key, value in b.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(a, list) and isinstance(b, list):
        return a + [x for x in b if not any(_same(x, y) for y in a)]
    return b


@builtin("union", 1)
def _union(args):
    if all(isinstance(a, dict) for a in args):
        merged: Any = {}
    elif all(isinstance(a, list) for a in args):
        merged = []
    else:
        raise ExpressionError.of("function 'union' joins either objects or arrays, not a mix")
    for value in args:
        merged = _merge(merged, value)
    return merged


@builtin("range", 2, 2)
def _range(args):
    start, count = _integer("range", args[0]), _integer("range", args[1])
    if count < 0:
        raise ExpressionError.of("function 'range' needs a count of 0 or more")
    return list(range(start, start + count))


builtin("min", 1)(lambda args: min(_numbers("min", args)))
builtin("max", 1)(lambda args: max(_numbers("max", args)))


def _numbers(name: str, args: list) -> list[int]:
    values = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    if not values:
        raise ExpressionError.of(f"function '{name}' needs at least one integer")
    return [_integer(name, v) for v in values]


def _arithmetic(name: str, op: Callable[[int, int], int]) -> None:
    def call(args):
        a, b = _integer(name, args[0]), _integer(name, args[1])
        if name in ("div", "mod") and b == 0:
            raise ExpressionError.of(f"function '{name}' divides by zero")
        return op(a, b)

    builtin(name, 2, 2)(call)


_arithmetic("add", lambda a, b: a + b)
_arithmetic("sub", lambda a, b: a - b)
_arithmetic("mul", lambda a, b: a * b)
_arithmetic("div", lambda a, b: int(a / b))  # .NET integer division truncates toward zero
_arithmetic("mod", lambda a, b: a - b * int(a / b))
