"""The flow expression language: a small, safe subset of Python expression syntax.

Flows are data written by people who are not the service's operators, so expressions never reach
``eval``/``exec``. Text is parsed with ``ast.parse(mode="eval")`` and every node is checked against a
whitelist at compile time; evaluation is a walker over that checked tree. No attribute access, no
dunder names, no calls except the functions in :data:`FUNCTIONS`.

Templates are strings with ``{{ expr }}`` holes, used for prompts, URLs, headers and bodies.
"""

from __future__ import annotations

import ast
import operator
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_SEQUENCE = 10_000


class ExpressionError(Exception):
    """A bad expression: ``offset`` is the 0-based column inside the expression text."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class EvaluationError(Exception):
    """An expression that compiled but failed on the values it met (unknown variable, bad types)."""


def _startswith(value: Any, prefix: Any) -> bool:
    return str(value).startswith(str(prefix))


def _endswith(value: Any, suffix: Any) -> bool:
    return str(value).endswith(str(suffix))


def _contains(value: Any, part: Any) -> bool:
    return str(part) in str(value)


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _urlencode(value: Any) -> str:
    """Percent-encode a value for one URL path segment or query value (``+`` becomes ``%2B``)."""
    return "" if value is None else urllib.parse.quote(str(value), safe="")


FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "len": len,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "strip": lambda s: str(s).strip(),
    "startswith": _startswith,
    "endswith": _endswith,
    "contains": _contains,
    "digits": _digits,
    "urlencode": _urlencode,
}

CONSTANT_NAMES: Mapping[str, Any] = {"true": True, "false": False, "null": None}

_BINOPS: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_CMPOPS: Mapping[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_UNARY: Mapping[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_ALLOWED: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.BinOp, ast.Compare, ast.IfExp,
    ast.Name, ast.Load, ast.Constant, ast.Call, ast.List, ast.Tuple, ast.Subscript,
    *_BINOPS, *_CMPOPS, *_UNARY,
)
#: What a refused syntax element is called in messages: (phrase, verb).
_DESCRIBE: Mapping[type[ast.AST], tuple[str, str]] = {
    ast.Attribute: ("attribute access", "is"), ast.Lambda: ("lambda", "is"),
    ast.ListComp: ("comprehensions", "are"), ast.GeneratorExp: ("comprehensions", "are"),
    ast.DictComp: ("comprehensions", "are"), ast.SetComp: ("comprehensions", "are"),
    ast.comprehension: ("comprehensions", "are"), ast.NamedExpr: ("assignment (:=)", "is"),
    ast.Starred: ("star arguments", "are"), ast.JoinedStr: ("f-strings", "are"),
    ast.FormattedValue: ("f-strings", "are"), ast.Dict: ("dict literals", "are"),
    ast.Set: ("set literals", "are"), ast.Slice: ("slices", "are"), ast.keyword: ("keyword arguments", "are"),
    ast.Await: ("await", "is"), ast.Yield: ("yield", "is"), ast.YieldFrom: ("yield", "is"),
    ast.Pow: ("the ** operator", "is"), ast.FloorDiv: ("the // operator", "is"),
    ast.MatMult: ("the @ operator", "is"), ast.BitAnd: ("the & operator", "is"),
    ast.BitOr: ("the | operator", "is"), ast.BitXor: ("the ^ operator", "is"),
    ast.LShift: ("the << operator", "is"), ast.RShift: ("the >> operator", "is"),
    ast.Invert: ("the ~ operator", "is"), ast.Is: ("'is' (use ==)", "is"),
    ast.IsNot: ("'is not' (use !=)", "is"),
}


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked expression, ready to evaluate against a variable mapping."""

    text: str
    tree: ast.Expression

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        try:
            return _eval(self.tree.body, variables)
        except EvaluationError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, KeyError, IndexError, OverflowError) as exc:
            raise EvaluationError(f"{self.text!r}: {type(exc).__name__}: {exc}") from exc


def _check(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        col = getattr(node, "col_offset", 0)
        if not isinstance(node, _ALLOWED):
            what, verb = _DESCRIBE.get(type(node), ("this kind of expression", "is"))
            raise ExpressionError(f"{what} {verb} not allowed in expressions", col)
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError(f"name {node.id!r} is not allowed (leading underscore)", col)
        if isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | bool | None):
            raise ExpressionError(f"literal {node.value!r} is not allowed", col)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                known = ", ".join(sorted(FUNCTIONS))
                raise ExpressionError(f"unknown function {name!r} (known: {known})", col)
            if node.keywords:
                raise ExpressionError("keyword arguments are not allowed", col)


@lru_cache(maxsize=4096)
def compile_expression(text: str) -> Expression:
    """Parse and check ``text``; raises :class:`ExpressionError` with the offending column."""
    source = text.strip()
    lead = len(text) - len(text.lstrip())
    if not source:
        raise ExpressionError("empty expression", 0)
    if "\n" in source:
        raise ExpressionError("expressions must fit on one line", source.index("\n") + lead)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}", max((exc.offset or 1) - 1, 0) + lead) from None
    try:
        _check(tree)
    except ExpressionError as exc:
        raise ExpressionError(exc.message, exc.offset + lead) from None
    return Expression(text, tree)


def _guard_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_SEQUENCE:
        raise EvaluationError(f"value longer than {MAX_SEQUENCE} items")
    return value


def _eval(node: ast.expr, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in CONSTANT_NAMES:
            return CONSTANT_NAMES[node.id]
        raise EvaluationError(f"unknown variable {node.id!r}")
    if isinstance(node, ast.BoolOp):
        result: Any = None
        for value in node.values:
            result = _eval(value, env)
            if isinstance(node.op, ast.And) and not result:
                return result
            if isinstance(node.op, ast.Or) and result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Mult) and (
            isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple)
        ):
            count = right if isinstance(left, str | list | tuple) else left
            if isinstance(count, int) and count > MAX_SEQUENCE:
                raise EvaluationError("repetition too large")
        return _guard_size(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _guard_size(FUNCTIONS[node.func.id](*(_eval(arg, env) for arg in node.args)))
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(item, env) for item in node.elts]
    if isinstance(node, ast.Subscript):
        container = _eval(node.value, env)
        if not isinstance(container, Mapping | list | tuple | str):
            raise EvaluationError(f"cannot index a {type(container).__name__}")
        return container[_eval(node.slice, env)]
    raise EvaluationError(f"unsupported expression element {type(node).__name__}")


_HOLE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def template_holes(text: str) -> list[tuple[str, int]]:
    """The ``(expression, offset)`` pairs of every ``{{ ... }}`` hole in ``text``."""
    return [(m.group(1), m.start(1)) for m in _HOLE.finditer(text)]


def template_literal(text: str, placeholder: str = "x") -> str:
    """``text`` with every hole replaced by ``placeholder``: the fixed parts of a template."""
    return _HOLE.sub(placeholder, text)


def check_template(text: str) -> None:
    """Raise :class:`ExpressionError` (offset into ``text``) for the first bad hole."""
    for source, offset in template_holes(text):
        try:
            compile_expression(source)
        except ExpressionError as exc:
            raise ExpressionError(exc.message, offset + exc.offset) from None
    remainder = _HOLE.sub("", text)
    if "{{" in remainder:
        raise ExpressionError("unclosed '{{' in template", text.rfind("{{"))


def render_template(
    text: str, variables: Mapping[str, Any], show: Callable[[Any], Any] | None = None
) -> str:
    """Fill every hole with the string form of its value (``None`` renders as empty).

    ``show`` transforms each hole's value first: the interpreter passes its masker to render the
    version of a text that may appear in events.
    """
    if "{{" not in text:
        return text

    def fill(match: re.Match[str]) -> str:
        value = compile_expression(match.group(1)).evaluate(variables)
        if show is not None:
            value = show(value)
        return "" if value is None else str(value)

    return _HOLE.sub(fill, text)
