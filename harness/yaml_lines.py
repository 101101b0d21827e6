"""Load YAML while remembering the line of every field, so errors can say `file:line`.

A key repeated in one mapping is an error at the line of its second occurrence (PyYAML would keep the last
value without a word, and a later check would blame some other field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError

Location = tuple[str | int, ...]


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Location, int]]:
    """Return (data, {field path: 1-based line}). Malformed YAML raises UserError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: malformed YAML ({problem})") from None
    lines: dict[Location, int] = {}
    if node is None:
        return None, lines
    _walk(node, (), lines, path)
    data = yaml.safe_load(text)
    return data, lines


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
