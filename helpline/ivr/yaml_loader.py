"""YAML loading that remembers where every value came from.

Schema and semantic errors must name ``file:line:column``. PyYAML's composed node tree carries start
marks; :class:`MarkedLoader` builds plain Python data from it and, on the way, records the mark of every
mapping key and value by its path (``("nodes", 3, "next", "ok")``), which is what pydantic error
locations and the validator speak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in a source file."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: yaml.Mark) -> Position:
        return cls(mark.line + 1, mark.column + 1)


@dataclass(slots=True)
class MarkedDocument:
    """Plain data plus the position of each value (``values``) and mapping key (``keys``) by path."""

    data: Any
    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)
    scalar_styles: dict[Path_, str | None] = field(default_factory=dict)
    duplicate_keys: list[tuple[Path_, Position]] = field(default_factory=list)

    def resolve(self, path: Path_) -> Path_:
        """The longest recorded prefix of ``path``, skipping list indexes that the source did not
        have (a single value that the schema wrapped into a list)."""
        actual: list[str | int] = []
        for part in path:
            if (*actual, part) in self.values:
                actual.append(part)
            elif not isinstance(part, int):
                break
        return tuple(actual)

    def position(self, path: Path_, *, key: bool = False) -> Position:
        """The closest known position for ``path``: itself, else its nearest recorded ancestor."""
        probe = self.resolve(path)
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return Position(1, 1)
            probe = probe[:-1]


class MarkedLoader(yaml.SafeLoader):
    """A SafeLoader that constructs data from the node tree while recording each node's start mark."""

    def load_marked(self) -> MarkedDocument:
        """Load the single document in the stream (an empty stream loads as ``None``)."""
        try:
            root = self.get_single_node()
        finally:
            self.dispose()
        doc = MarkedDocument(data=None)
        if root is not None:
            doc.data = self._build(root, (), doc)
        return doc

    def _build(self, node: yaml.Node, path: Path_, doc: MarkedDocument) -> Any:
        doc.values[path] = Position.of(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    key = str(key)
                child = (*path, key if isinstance(key, str | int) else str(key))
                if key in out:
                    doc.duplicate_keys.append((child, Position.of(key_node.start_mark)))
                doc.keys[child] = Position.of(key_node.start_mark)
                out[key] = self._build(value_node, child, doc)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, (*path, i), doc) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):
            doc.scalar_styles[path] = node.style
        return self.construct_object(node, deep=True)


def load_marked(text: str, name: str = "<string>") -> MarkedDocument:
    """Parse YAML ``text``; raises :class:`yaml.YAMLError` (with ``problem_mark``) on syntax errors."""
    loader = MarkedLoader(text)
    loader.name = name
    return loader.load_marked()
