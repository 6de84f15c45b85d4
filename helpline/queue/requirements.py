"""Requirement expressions: which agents may take a caller, written over skills and attributes.

A requirement is a small, safe subset of Python expression syntax, checked against a whitelist at
compile time and evaluated by a walker over pre-built nodes (never ``eval``)::

    spanish >= 3 and billing >= 2
    not french
    language == "es" or language in ["pt", "gl"]
    skill.billing >= 2 and attr.site == "lisbon"
    has(spanish) and (vip or tier >= 2)

Names
    A bare name is looked up in the agent's skills first, then in its attributes. ``skill.x`` (or
    ``skills.x``) reads only the skills, ``attr.x`` (or ``attrs.x``, ``agent.x``) only the attributes.
    ``true``/``false`` (and Python's ``True``/``False``) are constants.

Missing values are not zero
    An agent without skill ``x`` does not have ``x = 0``: *every* comparison that reads a missing
    value is false (``x >= 0``, ``x == 0``, ``x != 3``, ``x in [1, 2]`` and ``x not in [1, 2]`` alike),
    so ``not (x >= 3)`` holds for an agent that lacks ``x``. A comparison between values of types that
    cannot be ordered (``"es" >= 3``) is false too.

Truth of a bare name
    ``x`` on its own means "the agent has skill ``x`` at any level" (level 0 included), or, when
    ``x`` is an attribute, that the attribute's value is truthy. ``has(x)`` means "``x`` is present as
    a skill or attribute, whatever its value".

Operators
    ``and``, ``or``, ``not``, parentheses, ``== != < <= > >=`` (chains such as ``2 <= x <= 5``
    included), ``in`` / ``not in`` against a list literal, and ``has(name)``. Nothing else.

The empty text is the requirement that every agent meets. :func:`compile_requirements` caches by
text, so a queue's or a flow's expression is parsed once per process.
"""

from __future__ import annotations

import ast
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeAlias

from helpline.queue.profile import AttributeValue

Skills = Mapping[str, int]
Attributes = Mapping[str, AttributeValue]
Literal_ = str | int | float | bool
Namespace = Literal["auto", "skill", "attr"]
_Operand: TypeAlias = "_Ref | Literal_ | tuple[Literal_, ...]"

_PREFIXES: Mapping[str, Namespace] = {
    "skill": "skill", "skills": "skill", "attr": "attr", "attrs": "attr", "agent": "attr",
}  # fmt: skip
_CONSTANTS: Mapping[str, bool] = {"true": True, "false": False}
_CMP: Mapping[type[ast.cmpop], tuple[str, Callable[[Any, Any], bool]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
}
_REFUSED: Mapping[type[ast.AST], str] = {
    ast.BinOp: "arithmetic is not allowed in requirements",
    ast.IfExp: "conditional expressions are not allowed in requirements",
    ast.Subscript: "indexing is not allowed in requirements",
    ast.Lambda: "lambda is not allowed in requirements",
    ast.Dict: "dict literals are not allowed in requirements",
    ast.Set: "set literals are not allowed in requirements",
    ast.ListComp: "comprehensions are not allowed in requirements",
    ast.GeneratorExp: "comprehensions are not allowed in requirements",
    ast.NamedExpr: "assignment (:=) is not allowed in requirements",
    ast.JoinedStr: "f-strings are not allowed in requirements",
}


class RequirementError(ValueError):
    """A requirement that does not compile; ``column`` is the 0-based offset inside the given text."""

    def __init__(self, message: str, column: int = 0) -> None:
        super().__init__(f"{message} (column {column + 1})")
        self.message = message
        self.column = column


@dataclass(frozen=True, slots=True)
class _Ref:
    """A skill or attribute the expression reads."""

    namespace: Namespace
    name: str

    def lookup(self, skills: Skills, attributes: Attributes) -> tuple[bool, Any]:
        if self.namespace != "attr" and self.name in skills:
            return True, skills[self.name]
        if self.namespace != "skill" and self.name in attributes:
            return True, attributes[self.name]
        return False, None

    def describe(self, skills: Skills, attributes: Attributes) -> str:
        found, value = self.lookup(skills, attributes)
        if not found:
            return f"agent lacks {self.name}"
        shown = value if isinstance(value, int | float) and not isinstance(value, bool) else repr(value)
        return f"agent has {self.name}={shown}"


class _Node(ABC):
    """One checked piece of a requirement. ``text`` is the author's own spelling of it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @abstractmethod
    def test(self, skills: Skills, attributes: Attributes) -> bool:
        """Whether this agent meets this piece."""

    @abstractmethod
    def why(self, skills: Skills, attributes: Attributes) -> str:
        """Why :meth:`test` is false for this agent (only called when it is)."""

    def refs(self) -> Iterable[_Ref]:
        return ()


class _Const(_Node):
    __slots__ = ("value",)

    def __init__(self, text: str, value: bool) -> None:
        super().__init__(text)
        self.value = value

    def test(self, skills: Skills, attributes: Attributes) -> bool:
        return self.value

    def why(self, skills: Skills, attributes: Attributes) -> str:
        return f"{self.text}: always false"


class _Has(_Node):
    """A bare name (``spanish``: has the skill, or a truthy attribute) or ``has(name)`` (present)."""

    __slots__ = ("presence_only", "ref")

    def __init__(self, text: str, ref: _Ref, presence_only: bool) -> None:
        super().__init__(text)
        self.ref = ref
        self.presence_only = presence_only

    def test(self, skills: Skills, attributes: Attributes) -> bool:
        ref = self.ref
        if ref.namespace != "attr" and ref.name in skills:
            return True
        if ref.namespace != "skill" and ref.name in attributes:
            return self.presence_only or bool(attributes[ref.name])
        return False

    def why(self, skills: Skills, attributes: Attributes) -> str:
        return f"{self.text}: {self.ref.describe(skills, attributes)}"

    def refs(self) -> Iterable[_Ref]:
        return (self.ref,)


class _Compare(_Node):
    """``a op b [op c ...]`` where each operand is a reference or a literal (a list after ``in``)."""

    __slots__ = ("operands", "ops")

    def __init__(self, text: str, operands: list[_Operand], ops: list[Callable[[Any, Any], bool]]) -> None:
        super().__init__(text)
        self.operands = operands
        self.ops = ops

    def test(self, skills: Skills, attributes: Attributes) -> bool:
        values: list[Any] = []
        for operand in self.operands:
            if isinstance(operand, _Ref):
                found, value = operand.lookup(skills, attributes)
                if not found:
                    return False
                values.append(value)
            else:
                values.append(operand)
        for op, left, right in zip(self.ops, values, values[1:], strict=False):
            try:
                if not op(left, right):
                    return False
            except TypeError:
                return False
        return True

    def why(self, skills: Skills, attributes: Attributes) -> str:
        refs = list(self.refs())
        missing = [r for r in refs if not r.lookup(skills, attributes)[0]]
        shown = missing[:1] if missing else refs
        return f"{self.text}: " + ", ".join(r.describe(skills, attributes) for r in shown)

    def refs(self) -> Iterable[_Ref]:
        return [o for o in self.operands if isinstance(o, _Ref)]


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, text: str, child: _Node) -> None:
        super().__init__(text)
        self.child = child

    def test(self, skills: Skills, attributes: Attributes) -> bool:
        return not self.child.test(skills, attributes)

    def why(self, skills: Skills, attributes: Attributes) -> str:
        present = [r for r in self.child.refs() if r.lookup(skills, attributes)[0]]
        detail = ", ".join(r.describe(skills, attributes) for r in present) or f"{self.child.text} holds"
        return f"{self.text}: {detail}"

    def refs(self) -> Iterable[_Ref]:
        return self.child.refs()


class _And(_Node):
    __slots__ = ("children",)

    def __init__(self, text: str, children: list[_Node]) -> None:
        super().__init__(text)
        self.children = children

    def test(self, skills: Skills, attributes: Attributes) -> bool:
        return all(child.test(skills, attributes) for child in self.children)

    def why(self, skills: Skills, attributes: Attributes) -> str:
        for child in self.children:
            if not child.test(skills, attributes):
                return child.why(skills, attributes)
        return f"{self.text}: holds"  # not reached when called as documented

    def refs(self) -> Iterable[_Ref]:
        return [r for child in self.children for r in child.refs()]


class _Or(_And):
    __slots__ = ()

    def test(self, skills: Skills, attributes: Attributes) -> bool:
        return any(child.test(skills, attributes) for child in self.children)

    def why(self, skills: Skills, attributes: Attributes) -> str:
        return f"none of ({self.text}): " + "; ".join(c.why(skills, attributes) for c in self.children)


@dataclass(frozen=True, eq=False)
class Requirement:
    """A compiled requirement. Equal texts compile to the same object (see :func:`compile_requirements`)."""

    text: str
    _root: _Node | None
    skills: frozenset[str]  # skill names it reads (bare names included): for indexes and proficiency
    attributes: frozenset[str]  # attribute names it reads (bare names included)

    @property
    def is_any(self) -> bool:
        """True for the empty requirement that every agent meets."""
        return self._root is None

    def evaluate(self, skills: Skills, attributes: Attributes) -> bool:
        return self._root is None or self._root.test(skills, attributes)

    def explain(self, skills: Skills, attributes: Attributes) -> str | None:
        """None when the agent qualifies, else the first failing clause and what the agent has."""
        if self._root is None or self._root.test(skills, attributes):
            return None
        return self._root.why(skills, attributes)

    def proficiency(self, skills: Skills) -> int:
        """Sum of the agent's levels in the skills this requirement reads (the proficiency score)."""
        return sum(skills[name] for name in self.skills if name in skills)


ANY = Requirement("", None, frozenset(), frozenset())


def _collect(root: _Node | None) -> tuple[frozenset[str], frozenset[str]]:
    if root is None:
        return frozenset(), frozenset()
    refs = list(root.refs())
    return (
        frozenset(r.name for r in refs if r.namespace != "attr"),
        frozenset(r.name for r in refs if r.namespace != "skill"),
    )


def combine(parts: Iterable[Requirement]) -> Requirement:
    """All of ``parts`` must hold. Empty parts drop out; one part is returned as it is."""
    kept = [p for p in parts if not p.is_any]
    if not kept:
        return ANY
    if len(kept) == 1:
        return kept[0]
    text = " and ".join(f"({p.text})" for p in kept)
    return _combined(text, tuple(kept))


@lru_cache(maxsize=1024)
def _combined(text: str, parts: tuple[Requirement, ...]) -> Requirement:
    root = _And(text, [p._root for p in parts if p._root is not None])
    skills, attributes = _collect(root)
    return Requirement(text, root, skills, attributes)


@lru_cache(maxsize=4096)
def compile_requirements(text: str) -> Requirement:
    """Parse and check ``text``; raises :class:`RequirementError` with the offending column."""
    source = text.strip()
    lead = len(text) - len(text.lstrip())
    if not source:
        return ANY
    if "\n" in source:
        raise RequirementError("a requirement must fit on one line", source.index("\n") + lead)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise RequirementError(f"syntax error: {exc.msg}", max((exc.offset or 1) - 1, 0) + lead) from None
    try:
        root = _Builder(source).build(tree.body)
    except RequirementError as exc:
        raise RequirementError(exc.message, exc.column + lead) from None
    skills, attributes = _collect(root)
    return Requirement(source, root, skills, attributes)


class _Builder:
    """Turns a parsed expression into nodes, refusing anything outside the whitelist."""

    def __init__(self, source: str) -> None:
        self.source = source

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def fail(self, node: ast.AST, message: str) -> RequirementError:
        return RequirementError(message, getattr(node, "col_offset", 0))

    def build(self, node: ast.expr) -> _Node:
        text = self.text(node)
        if isinstance(node, ast.BoolOp):
            children = [self.build(v) for v in node.values]
            return _And(text, children) if isinstance(node.op, ast.And) else _Or(text, children)
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.Not):
                raise self.fail(node, "only 'not' is allowed as a unary operator here")
            return _Not(text, self.build(node.operand))
        if isinstance(node, ast.Compare):
            return self.compare(node, text)
        if isinstance(node, ast.Call):
            return self.has(node, text)
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return _Const(text, node.value)
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _Const(text, _CONSTANTS[node.id])
        if isinstance(node, ast.Name | ast.Attribute):
            return _Has(text, self.ref(node), presence_only=False)
        if isinstance(node, ast.Constant | ast.List | ast.Tuple):
            raise self.fail(
                node, f"{text} is a value, not a condition (compare it with a skill or attribute)"
            )
        default = f"{type(node).__name__} is not allowed in requirements"
        raise self.fail(node, _REFUSED.get(type(node), default))

    def ref(self, node: ast.expr) -> _Ref:
        if isinstance(node, ast.Name):
            self.check_name(node, node.id)
            return _Ref("auto", node.id)
        if isinstance(node, ast.Attribute):
            if not isinstance(node.value, ast.Name) or node.value.id not in _PREFIXES:
                raise self.fail(node, "only skill.<name> and attr.<name> may use a dot")
            self.check_name(node, node.attr)
            return _Ref(_PREFIXES[node.value.id], node.attr)
        raise self.fail(node, f"expected a skill or attribute name, got {self.text(node)}")

    def check_name(self, node: ast.AST, name: str) -> None:
        if name.startswith("_"):
            raise self.fail(node, f"name {name!r} is not allowed (leading underscore)")
        if name in _CONSTANTS:
            raise self.fail(node, f"{name!r} is a constant, not a skill or attribute")

    def literal(self, node: ast.expr) -> Literal_:
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
            return node.value
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, int | float)
            and not isinstance(node.operand.value, bool)
        ):
            return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
        raise self.fail(node, f"expected a number, a string, true or false, got {self.text(node)}")

    def operand(self, node: ast.expr, after_in: bool) -> _Operand:
        if after_in:
            if not isinstance(node, ast.List | ast.Tuple):
                raise self.fail(node, 'the right side of \'in\' must be a list such as ["es", "pt"]')
            return tuple(self.literal(item) for item in node.elts)
        if isinstance(node, ast.List | ast.Tuple):
            raise self.fail(node, "a list may only follow 'in' or 'not in'")
        if type(node) in _REFUSED:
            raise self.fail(node, _REFUSED[type(node)])
        if (isinstance(node, ast.Name) and node.id not in _CONSTANTS) or isinstance(node, ast.Attribute):
            return self.ref(node)
        return self.literal(node)

    def compare(self, node: ast.Compare, text: str) -> _Node:
        operands: list[_Operand] = [self.operand(node.left, False)]
        ops: list[Callable[[Any, Any], bool]] = []
        for op, right in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _CMP:
                what = "'is' (use ==)" if isinstance(op, ast.Is | ast.IsNot) else type(op).__name__
                raise self.fail(right, f"{what} is not allowed in requirements")
            ops.append(_CMP[type(op)][1])
            operands.append(self.operand(right, isinstance(op, ast.In | ast.NotIn)))
        if not any(isinstance(o, _Ref) for o in operands):
            raise self.fail(node, f"{text} compares constants: name a skill or attribute")
        return _Compare(text, operands, ops)

    def has(self, node: ast.Call, text: str) -> _Node:
        if not isinstance(node.func, ast.Name) or node.func.id != "has":
            name = self.text(node.func)
            raise self.fail(node, f"unknown function {name!r} (only has(name) is allowed)")
        if node.keywords or len(node.args) != 1:
            raise self.fail(node, "has() takes exactly one skill or attribute name")
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            ref = _Ref("auto", arg.value)
        else:
            ref = self.ref(arg)
        return _Has(text, ref, presence_only=True)
