"""True/false and number settings (`--model-args`, `--judge-arg`, LLM settings, numeric options) read the same way
everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.errors import UserError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
SEED_MAX = 2**63 - 1  # seeds go to torch, numpy and the APIs as 64-bit integers
MAX_CONCURRENCY = 65535  # concurrent calls to one server: each holds a connection (a local port) of its own


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


def _shown(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def expected_number(kind: type, minimum: float | None = None, maximum: float | None = None) -> str:
    """What `parse_number` expects, in words: "an integer >= 1", "a finite number from 0 to 2"."""
    what = "an integer" if kind is int else "a finite number"
    if minimum is not None and maximum is not None:
        return f"{what} from {_shown(minimum)} to {_shown(maximum)}"
    if minimum is not None:
        return f"{what} >= {_shown(minimum)}"
    if maximum is not None:
        return f"{what} <= {_shown(maximum)}"
    return what


def parse_number(value: Any, where: str, kind: type = float, minimum: float | None = None,
                 maximum: float | None = None) -> Any:
    """`value` (text as typed, or a number from argparse or YAML) as an int (`kind=int`) or a finite float within
    [minimum, maximum]. NaN and infinity are refused: they pass `<`/`>` checks and break a run late (a timeout of
    NaN fails every call, an infinite learning rate trains and then cannot be written to JSON). `where` starts the
    one-line error and names the setting as the user wrote it, e.g. "--model-args timeout=nan"."""
    number: int | float | None = None
    if not isinstance(value, bool):
        try:
            if kind is int:
                number = value if isinstance(value, int) else int(str(value).strip())
            else:
                number = float(value if isinstance(value, (int, float)) else str(value).strip())
        except (TypeError, ValueError, OverflowError):
            number = None
    if (number is None or not math.isfinite(number) or (minimum is not None and number < minimum)
            or (maximum is not None and number > maximum)):
        raise UserError(f"{where}: expected {expected_number(kind, minimum, maximum)}")
    return number


def check_finite(value: Any, where: str, minimum: float | None = None, maximum: float | None = None) -> None:
    """Refuse a number option (argparse `type=float`) that is NaN, infinite or out of range; None passes."""
    if value is not None:
        parse_number(value, where, float, minimum, maximum)
