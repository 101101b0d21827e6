"""True/false settings (`--model-args`, `--judge-arg`, LLM settings) read the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping

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


def flag_setting(settings: Mapping[str, object], key: str, default: bool, option: str) -> bool:
    """`settings[key]` as a bool, `default` when absent or empty; `option` names where it came from in the
    error ("--model-args", "--judge-arg")."""
    value = settings.get(key)
    if value is None or value == "":
        return default
    return parse_flag(value, f"{option} {key}={value}")
