"""A plugin's members other than generate() and score(): the values the harness reads from them, checked, and
close(), whose failure never costs the work it follows.

A third-party model's `canonical_args`, `run_identity` and `identity` enter run ids, run.json and model.json, and
its `default_batch_size` sizes the batches: a value of the wrong kind is one line naming the plugin, its package,
the member and what was expected, instead of a traceback from deep inside the harness. A `close()` that raises
(model or judge) comes after the work it would release: the command finishes (predictions, scores, results) and
says so in one `warning:` line (exit 0; HARNESS_DEBUG=1 prints the traceback too). Built-in plugins' exceptions
are the harness's own bugs and keep their traceback.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from numbers import Integral
from typing import Any

from harness.errors import UserError
from harness.plugin_outputs import is_builtin, named_plugin, raised, shown_value


def checked_json_dict(kind: str, item_id: str, plugin: str, hook: str, value: Any, expected: str) -> dict[str, Any]:
    """`value`, returned by the plugin's `hook`, if it is a dict of string keys that JSON can hold (text, finite
    numbers, bools, None, lists, dicts); else one line naming the plugin, the hook and `expected`."""
    who = f"{named_plugin(kind, item_id, plugin)}: {hook}() returned"
    if not isinstance(value, dict):
        raise UserError(f"{who} {shown_value(value)}; expected {expected}")
    bad = [key for key in value if not isinstance(key, str)]
    if bad:
        raise UserError(f"{who} a dict with the key {shown_value(bad[0])}; expected {expected}, with string keys")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{who} {shown_value(value)}, which is not plain JSON data ({exc}); expected {expected}: "
                        "text, finite numbers, bools, None, lists and dicts") from None
    return value


def checked_batch_size(model_id: str, plugin: str, value: Any) -> int:
    """A model's `default_batch_size` (used when --batch-size is not given), if it is a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        who = named_plugin("model", model_id, plugin)
        raise UserError(f"{who}: default_batch_size is {shown_value(value)}; expected a whole number of at least 1 "
                        "(or give --batch-size)")
    return int(value)


def close_plugin(kind: str, item_id: str, plugin: str, obj: Any, kept: str | None = None) -> None:
    """Call `obj.close()`. A third-party plugin's exception there is one `warning:` line naming the plugin, the
    exception and where it was raised, and `kept` (what the command keeps: "its predictions are kept and scored";
    None while another error stops the command): the work is done, only the plugin's resources may outlive it,
    so the command goes on (and exits 0). A built-in plugin's exception is the harness's bug and propagates with
    its traceback."""
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # noqa: BLE001 - reported as the plugin's, after the work it follows is kept
        if not plugin or is_builtin(plugin):
            raise
        debug = os.environ.get("HARNESS_DEBUG")
        if debug:
            traceback.print_exc(file=sys.stderr)
        what = str(exc).strip() if isinstance(exc, UserError) else ""
        line = (f"{named_plugin(kind, item_id, plugin)}: close() failed: {what}" if what
                else raised(kind, item_id, plugin, "close", exc))
        kept = f"{kept}; " if kept else ""
        print(f"warning: {line} ({kept}what it holds (GPU memory, a server or a process) may not have been released; "
              f"a bug in the plugin{'' if debug else '; HARNESS_DEBUG=1 shows the traceback'})", file=sys.stderr)
