"""The names results and leaderboards give a model and a judge setup, derived the same way for new and old files.

A model's label is `id[key=value,...]+adapter:<hash8>`: its id, the `--model-args` that change its outputs (not
its `transport_args`, which the run id leaves out too) and its adapter. Files written before transport args were
left out of labels are relabelled when published, so one configuration keeps one leaderboard row. A judge's setup
is what its `resolve_setup` makes of the recorded settings; for a judge that keeps the default `resolve_setup`
(the settings as given) it is always derived again, since older versions recorded `{}` for it.
"""

from __future__ import annotations

from functools import cache

LABEL_ADAPTER = "+adapter:"


def model_label(model_id: str, args: dict[str, str], adapter_hash: str | None,
                transport: tuple[str, ...] | set[str] | frozenset[str] = ()) -> str:
    """The model's name on leaderboard rows: its id, the args that change its outputs (not the `transport`
    ones) and the adapter's hash."""
    label = model_id
    kept = {k: v for k, v in args.items() if k not in transport}
    if kept:
        label += "[" + ",".join(f"{k}={v}" for k, v in sorted(kept.items())) + "]"
    if adapter_hash:
        label += f"{LABEL_ADAPTER}{adapter_hash.split(':')[-1][:8]}"
    return label


@cache
def installed_transport_args(model_id: str) -> frozenset[str]:
    """The `transport_args` of the installed model plugin `model_id` (none when it is not installed)."""
    from harness import plugin_manager

    try:
        cls = plugin_manager.models().get(model_id).load()
    except Exception:  # noqa: BLE001 - a model that is gone keeps the labels its files recorded
        return frozenset()
    return frozenset(getattr(cls, "transport_args", ()) or ())


def current_label(label: str) -> str:
    """A recorded label without the args that are transport args of the installed model today."""
    head, sep, adapter = label.partition(LABEL_ADAPTER)
    model_id, bracket, rest = head.partition("[")
    if not bracket or not rest.endswith("]"):
        return label
    transport = installed_transport_args(model_id)
    if not transport:
        return label
    pairs = [pair.partition("=") for pair in rest[:-1].split(",")]
    if any(not eq for _, eq, _ in pairs):  # not a label this module wrote (a value with a comma): as recorded
        return label
    kept = {key: value for key, _, value in pairs if key not in transport}
    args = "[" + ",".join(f"{k}={v}" for k, v in kept.items()) + "]" if kept else ""
    return model_id + args + (sep + adapter if sep else "")


def keeps_default_setup(judge_id: str) -> bool:
    """Whether the installed judge `judge_id` keeps JudgePlugin's default resolve_setup and setup (its settings as
    given, nothing added once built): only then is its setup derived again from the recorded settings."""
    from harness.judge_api import JudgePlugin
    from harness.scoring import installed_judge_class

    cls = installed_judge_class(judge_id)
    resolve = getattr(cls, "resolve_setup", None)
    return (getattr(resolve, "__func__", None) is JudgePlugin.resolve_setup.__func__
            and getattr(cls, "setup", None) is JudgePlugin.setup)

