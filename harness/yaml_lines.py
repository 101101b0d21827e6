"""Load YAML while remembering the line of every field, so errors can say `file:line`.

A key repeated in one mapping is an error at the line of its second occurrence (PyYAML would keep the last
value without a word, and a later check would blame some other field). Every problem with the file is one
UserError naming file and line, never a traceback, so that a plugin's broken task YAML skips only that file:
text that is not UTF-8, a tag PyYAML's safe loader does not construct (`!!python/object/apply:...`), a value
its tag cannot hold (`!!int abc`, a date 2020-13-45), and a file whose aliases would expand to more than
MAX_VALUES values (a "billion laughs" file: nine levels of nine `*alias`es, which would hang whatever walks the
data: validation, hashing, error messages), an alias inside its own anchor, or values nested deeper than
MAX_DEPTH. Aliases within those limits keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.io import read_user_text

Location = tuple[str | int, ...]
MAX_VALUES = 10_000  # values (scalars, lists, mappings) once aliases are expanded; shipped task files have < 200
MAX_DEPTH = 50  # nesting levels; shipped task files have < 6


class _Refused(yaml.MarkedYAMLError):
    """A YAML file refused for its size or shape (not its syntax): the message is the problem itself."""


class _TaskLoader(yaml.SafeLoader):
    """The safe loader, counting the values a document expands to while it is composed (an alias counts as
    everything under its anchor), and naming the line of a value its tag cannot hold."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.expanded: dict[int, int] = {}  # id(node) -> values under it once aliases are expanded
        self.values = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.expanded.get(id(node))
            if size is None:  # its anchor is still being composed
                raise _Refused(problem=f"alias *{event.anchor} is used inside its own anchor &{event.anchor} (a "
                               "value that contains itself); write the value out", problem_mark=event.start_mark)
            return self._counted(node, size, event)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(problem=f"values nested more than {MAX_DEPTH} levels deep; a task file needs a few levels",
                           problem_mark=event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        children = ([] if isinstance(node, yaml.ScalarNode) else node.value if isinstance(node, yaml.SequenceNode)
                    else [child for pair in node.value for child in pair])
        self.expanded[id(node)] = 1 + sum(self.expanded[id(child)] for child in children)
        return self._counted(node, 1, event)

    def _counted(self, node: yaml.Node, size: int, event: yaml.Event) -> yaml.Node:
        self.values += size
        if self.values > MAX_VALUES:
            what = f"alias *{event.anchor}" if isinstance(event, yaml.AliasEvent) else "this value"
            raise _Refused(problem=f"the file holds more than {MAX_VALUES} values once aliases are expanded (at "
                           f"{what}); a task file needs a few hundred: write the values out instead of nesting "
                           "aliases", problem_mark=event.start_mark)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # `!!int abc`, `2020-13-45`
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            value = f"value {node.value!r}" if isinstance(node, yaml.ScalarNode) else "value"
            raise _Refused(problem=f"{value} is not a valid {tag} ({exc})", problem_mark=node.start_mark) from None

    def construct_undefined(self, node: yaml.Node) -> Any:  # `!!python/object/apply:os.system`, `!Ref x`
        raise _Refused(problem=f"tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed in a task file "
                       "(plain YAML values only: text, numbers, true/false, lists, mappings)",
                       problem_mark=node.start_mark)


_TaskLoader.add_constructor(None, _TaskLoader.construct_undefined)


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Location, int]]:
    """Return (data, {field path: 1-based line}). Malformed YAML raises UserError naming file and line."""
    try:
        text = read_user_text(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines: dict[Location, int] = {}
    loader = _TaskLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _walk(node, (), lines, path)
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: {problem}" if isinstance(exc, _Refused) else
                        f"{where}: malformed YAML ({problem})") from None
    finally:
        loader.dispose()


def _walk(node: yaml.Node, loc: Location, lines: dict[Location, int], path: Path,
          seen_nodes: set[int] | None = None) -> None:
    seen_nodes = set() if seen_nodes is None else seen_nodes
    lines[loc] = node.start_mark.line + 1
    if id(node) in seen_nodes:  # an alias (*name) of a node already walked: its keys were checked there
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key_node.tag != "tag:yaml.org,2002:merge":
                identity = (key_node.tag, key)
                if identity in first_line:
                    raise UserError(
                        f"{path}:{line}: duplicate key '{_dotted(loc + (key,))}' (first given at line "
                        f"{first_line[identity]}); each key may appear once in a mapping: keep one"
                    )
                first_line[identity] = line
            lines[loc + (key,)] = line
            _walk(value_node, loc + (key,), lines, path, seen_nodes)
            lines[loc + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, loc + (i,), lines, path, seen_nodes)


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc)


def line_of(lines: dict[Location, int], loc: Location) -> int:
    """The line of the deepest known prefix of `loc` (a missing field points at its parent)."""
    loc = tuple(loc)
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)
