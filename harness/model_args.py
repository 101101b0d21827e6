"""The `--model-args` keys a model plugin declares it reads (`accepted_args`), checked before anything loads.

Without a declaration a plugin gets every key, as it always did, and a misspelt one (`answr=2`) is silently
ignored while still making another run id and leaderboard label. A plugin that declares `accepted_args` (its
`transport_args` count as read too) has any other key refused in one line with a did-you-mean, by `harness run`
and `harness finetune`, before its data or weights load.
"""

from __future__ import annotations

from typing import Any

from harness.errors import UserError, close_hint
from harness.plugin_outputs import named_plugin, shown_value


def check_model_args(model_id: str, plugin: str, model_cls: Any, args: dict[str, str]) -> None:
    """Refuse a key of `args` (the user's --model-args) that `model_cls` does not declare in `accepted_args`; a
    class without the attribute (or with None) accepts every key."""
    declared = getattr(model_cls, "accepted_args", None)
    if declared is None:
        return
    who = named_plugin("model", model_id, plugin)
    if isinstance(declared, str) or not isinstance(declared, (tuple, list, set, frozenset)) or not all(
            isinstance(name, str) for name in declared):
        raise UserError(f"{who}: accepted_args is {shown_value(declared)}; expected a tuple of the --model-args names "
                        "it reads, e.g. ('answer',) (or None: any key)")
    known = sorted(set(declared) | set(getattr(model_cls, "transport_args", ()) or ()))
    unknown = [key for key in args if key not in known]
    if not unknown:
        return
    names = ", ".join(f"'{key}'" for key in unknown)
    reads = f"it reads {', '.join(known)}" if known else "it reads no --model-args"
    raise UserError(f"--model-args {', '.join(unknown)}: {who} does not read {names}{close_hint(unknown, known)}; "
                    f"{reads}")
