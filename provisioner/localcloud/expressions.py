"""The ARM template expression language: errors, parser and evaluator.

A JSON string value that starts with ``[`` and ends with ``]`` is an expression
(``"[concat('a', parameters('b'))]"``); a value starting with ``[[`` is the literal text
without its first ``[``. The grammar is small::

    expression := primary ( "." NAME | "[" expression "]" )*
    primary    := NAME "(" [ expression ( "," expression )* ] ")" | 'string' | integer

Strings use single quotes, with ``''`` for a quote inside. ``true``, ``false`` and ``null``
are the functions ``true()``, ``false()`` and ``null()``. Function names and property names
are case-insensitive, as in Azure Resource Manager.

The parser is recursive descent over a regex tokenizer; nothing is ``eval``-ed. The
evaluator takes a table of functions (:mod:`provisioner.localcloud.functions` plus the
deployment-bound ones of :mod:`provisioner.localcloud.context`) and returns plain JSON values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from provisioner.errors import CdpError


class TemplateError(CdpError):
    """A template or deployment failed; ``code`` is the ARM error code.

    Codes used: ``InvalidTemplate`` (the template or an expression is wrong),
    ``InvalidTemplateDeployment`` (the parameters do not fit the template),
    ``ResourceNotFound`` (a reference names nothing) and ``DeploymentFailed``.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.located = False  # the message names where in the template it happened
        self.expression: str | None = None  # the message names the expression

    def at(self, where: str) -> TemplateError:
        """The same error, its message prefixed with ``where`` (once: the innermost place wins)."""
        if self.located:
            return self
        located = type(self)(self.code, f"{where}: {self.message}")
        located.located = True
        located.expression = self.expression
        return located

    def in_expression(self, text: str) -> TemplateError:
        """The same error, naming the expression it happened in (the innermost one wins)."""
        if self.located or self.expression:
            return self
        named = type(self)(self.code, f"{self.message} (in expression '{text}')")
        named.expression = text
        return named


class ExpressionError(TemplateError):
    """An expression cannot be parsed or evaluated."""

    def __init__(self, code: str = "InvalidTemplate", message: str = ""):
        super().__init__(code, message)

    @classmethod
    def of(cls, message: str) -> ExpressionError:
        return cls("InvalidTemplate", message)


class Deferred:
    """The value of ``reference()``/``listKeys()`` when resources are not deployed (plan mode).

    Any function, property or index applied to it is deferred too; the caller shows the
    original expression text instead (as ARM's what-if does).
    """

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = Deferred()


# --- syntax tree -----------------------------------------------------------------------

@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class Member:
    target: Any
    name: str


@dataclass(frozen=True)
class Index:
    target: Any
    index: Any


Node = Literal | Call | Member | Index


# --- tokenizer and parser --------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
      | (?P<punct>[(),.\[\]])
    )""",
    re.VERBOSE,
)


def _tokenize(source: str) -> list[tuple[str, Any, int]]:
    tokens, pos = [], 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if not match:
            bad = source[pos:].lstrip()
            at = len(source) - len(bad)
            if bad.startswith("'"):
                raise ExpressionError.of(f"unterminated string literal at position {at}")
            raise ExpressionError.of(f"unexpected character {bad[0]!r} at position {at}")
        kind = match.lastgroup
        text = match.group(kind)
        start = match.start(kind)
        if kind == "string":
            tokens.append(("string", text[1:-1].replace("''", "'"), start))
        elif kind == "number":
            if "." in text:
                raise ExpressionError.of(f"decimal number {text} at position {start}: only integers are supported")
            tokens.append(("number", int(text), start))
        else:
            tokens.append((kind, text, start))
        pos = match.end()
    tokens.append(("end", None, len(source)))
    return tokens


class _Parser:
    def __init__(self, source: str):
        self.tokens = _tokenize(source)
        self.pos = 0

    def _peek(self, kind: str, text: str | None = None) -> bool:
        token_kind, value, _ = self.tokens[self.pos]
        return token_kind == kind and (text is None or value == text)

    def _take(self, kind: str, text: str | None = None, what: str = "") -> tuple:
        token = self.tokens[self.pos]
        if not self._peek(kind, text):
            found = "the end" if token[0] == "end" else repr(str(token[1]))
            expected = what or repr(text or kind)
            raise ExpressionError.of(f"expected {expected} at position {token[2]}, found {found}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        if self._peek("end"):
            raise ExpressionError.of("empty expression")
        node = self._expression()
        self._take("end", what="the end of the expression")
        return node

    def _expression(self) -> Node:
        node = self._primary()
        while True:
            if self._peek("punct", "."):
                self.pos += 1
                node = Member(node, self._take("name", what="a property name")[1])
            elif self._peek("punct", "["):
                self.pos += 1
                index = self._expression()
                self._take("punct", "]")
                node = Index(node, index)
            else:
                return node

    def _primary(self) -> Node:
        kind, value, at = self.tokens[self.pos]
        if kind in ("string", "number"):
            self.pos += 1
            return Literal(value)
        if kind == "name":
            self.pos += 1
            if not self._peek("punct", "("):
                raise ExpressionError.of(
                    f"'{value}' at position {at} is not a function call (write {value}() )"
                )
            self.pos += 1
            args = []
            if not self._peek("punct", ")"):
                args.append(self._expression())
                while self._peek("punct", ","):
                    self.pos += 1
                    args.append(self._expression())
            self._take("punct", ")", what="',' or ')'")
            return Call(value, tuple(args))
        found = "the end" if kind == "end" else repr(str(value))
        raise ExpressionError.of(f"expected a function, string or integer at position {at}, found {found}")


def parse(source: str) -> Node:
    """Parse the text between the brackets of an expression."""
    return _Parser(source).parse()


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and value.endswith("]") and not value.startswith("[[")


@lru_cache(maxsize=4096)
def compile_string(value: str) -> Node | str:
    """A template string as a syntax tree, or as the literal string it stands for."""
    if value.startswith("[["):
        return value[1:]
    if not is_expression(value):
        return value
    try:
        return parse(value[1:-1])
    except ExpressionError as error:
        raise ExpressionError.of(f"invalid expression '{value}': {error.message}") from None


def calls_in(node: Node):
    """Every function call in ``node``, outermost first."""
    if isinstance(node, Call):
        yield node
        for arg in node.args:
            yield from calls_in(arg)
    elif isinstance(node, Member):
        yield from calls_in(node.target)
    elif isinstance(node, Index):
        yield from calls_in(node.target)
        yield from calls_in(node.index)


# --- evaluation --------------------------------------------------------------------------

@dataclass(frozen=True)
class Function:
    """A template function: ``call(args) -> value`` with its arity."""

    name: str
    call: Callable[[list], Any]
    min_args: int = 0
    max_args: int | None = None

    def check_arity(self, count: int) -> None:
        if count < self.min_args or (self.max_args is not None and count > self.max_args):
            if self.max_args == self.min_args:
                wanted = f"{self.min_args}"
            elif self.max_args is None:
                wanted = f"at least {self.min_args}"
            else:
                wanted = f"{self.min_args} to {self.max_args}"
            raise ExpressionError.of(f"function '{self.name}' takes {wanted} argument(s), got {count}")


Functions = Mapping[str, Function]


def evaluate_string(value: str, functions: Functions) -> Any:
    """The value of a template string: itself, or what its expression evaluates to."""
    compiled = compile_string(value)
    if isinstance(compiled, str):
        return compiled
    try:
        return evaluate(compiled, functions)
    except TemplateError as error:
        raise error.in_expression(value) from None


def evaluate(node: Node, functions: Functions) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Member):
        return member(evaluate(node.target, functions), node.name)
    if isinstance(node, Index):
        target = evaluate(node.target, functions)
        key = evaluate(node.index, functions)
        if key is DEFERRED:
            return DEFERRED
        return element(target, key)
    name = node.name.lower()
    if name == "if":  # lazy, so the branch not taken may refer to what does not exist
        if len(node.args) != 3:
            raise ExpressionError.of(f"function 'if' takes 3 argument(s), got {len(node.args)}")
        condition = evaluate(node.args[0], functions)
        if condition is DEFERRED:
            return DEFERRED
        if not isinstance(condition, bool):
            raise ExpressionError.of(f"the condition of 'if' must be a bool, got {type_name(condition)}")
        return evaluate(node.args[1] if condition else node.args[2], functions)
    function = functions.get(name)
    if function is None:
        raise ExpressionError.of(f"unknown function '{node.name}'")
    function.check_arity(len(node.args))
    args = [evaluate(arg, functions) for arg in node.args]
    if any(arg is DEFERRED for arg in args):
        return DEFERRED
    return function.call(args)


def member(target: Any, name: str) -> Any:
    """``target.name``: exact property first, then ARM's case-insensitive match."""
    if target is DEFERRED:
        return DEFERRED
    if not isinstance(target, dict):
        raise ExpressionError.of(f"cannot read property '{name}' of {type_name(target)}")
    if name in target:
        return target[name]
    for key, value in target.items():
        if key.lower() == name.lower():
            return value
    available = ", ".join(sorted(target)) or "none"
    raise ExpressionError.of(f"property '{name}' does not exist (available: {available})")


def element(target: Any, key: Any) -> Any:
    """``target[key]`` for an array index or an object key."""
    if target is DEFERRED:
        return DEFERRED
    if isinstance(target, list):
        if not isinstance(key, int) or isinstance(key, bool):
            raise ExpressionError.of(f"an array index must be an integer, got {type_name(key)}")
        if not 0 <= key < len(target):
            raise ExpressionError.of(f"index {key} is out of range for an array of length {len(target)}")
        return target[key]
    if isinstance(target, dict):
        if not isinstance(key, str):
            raise ExpressionError.of(f"an object key must be a string, got {type_name(key)}")
        return member(target, key)
    raise ExpressionError.of(f"cannot index {type_name(target)}")


def type_name(value: Any) -> str:
    """ARM's name for the type of a JSON value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
