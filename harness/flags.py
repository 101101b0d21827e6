"""True/false settings (`--model-args`, `--judge-arg`, LLM settings) read the same way everywhere."""

from __future__ import annotations

from harness.errors import UserError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_flag(value: object, where: str) -> bool:
    """`value` as a bool (a bool passes through). `where` starts the one-line error and names the setting as the
    user wrote it, e.g. "--model-args merge=maybe"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise UserError(f"{where}: expected true or false")
