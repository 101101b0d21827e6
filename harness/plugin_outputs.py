"""Checks of what model and judge plugins hand back, at the plugin boundary, before anything is written.

A third-party plugin that breaks the contract (model_api.py, judge_api.py) gets one line naming the plugin, the
sample and what was expected, instead of a file the harness later refuses to read (a number as a prediction), a
silently wrong score (no text counted as a wrong answer) or invalid JSON in results (NaN). Work already written
(earlier batches, other judges) stays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from numbers import Integral, Real
from typing import Any

from harness.errors import UserError
from harness.types import GenerationOutput

NO_TEXT = "the model returned no text (None) and no error"


def named_plugin(kind: str, item_id: str, plugin: str) -> str:
    """"model 'x' (plugin 'p', package p-dist==1.0)": the item, its plugin and, for a third-party one, its package."""
    if not plugin:
        return f"{kind} '{item_id}'"
    from harness import plugin_manager

    package = plugin_manager.distribution(plugin)
    return f"{kind} '{item_id}' (plugin '{plugin}'{f', package {package}' if package else ''})"


def shown_value(value: Any) -> str:
    text = repr(value)
    return f"{text[:40]}... ({type(value).__name__})" if len(text) > 40 else f"{text} ({type(value).__name__})"


def checked_outputs(model_id: str, plugin: str, outputs: Any, sample_ids: list[str]) -> list[GenerationOutput]:
    """The outputs of one generate() call, checked: a list with one GenerationOutput-like object per request
    whose text is a string (None with no error becomes a failed sample, retried by the next run), error a string
    or None, token counts whole numbers or None and cost a finite number or None; as GenerationOutputs."""
    who = named_plugin("model", model_id, plugin)
    if not isinstance(outputs, (list, tuple)):
        raise UserError(f"{who}: generate() returned {type(outputs).__name__}; expected a list of "
                        "GenerationOutput, one per request")
    if len(outputs) != len(sample_ids):
        raise UserError(f"{who}: generate() returned {len(outputs)} outputs for {len(sample_ids)} requests; "
                        "expected one per request, in order")
    checked = []
    for sample_id, out in zip(sample_ids, outputs):
        where = f"{who}: generate() returned, for sample '{sample_id}',"
        if not hasattr(out, "text") or not hasattr(out, "error"):
            raise UserError(f"{where} {shown_value(out)}; expected a harness.types.GenerationOutput")
        error = out.error
        if error is not None and not isinstance(error, str):
            raise UserError(f"{where} error {shown_value(error)}; expected a string or None")
        text = out.text
        if text is None:
            text, error = "", error or NO_TEXT
        elif not isinstance(text, str):
            raise UserError(f"{where} text {shown_value(text)}; expected a string (a failure: text '' and an error)")
        counts = {}
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(out, name, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
                raise UserError(f"{where} {name} {shown_value(value)}; expected a whole number or None")
            counts[name] = None if value is None else int(value)
        cost = getattr(out, "cost_usd", None)
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, Real) or not math.isfinite(cost)):
            raise UserError(f"{where} cost_usd {shown_value(cost)}; expected a finite number or None")
        details = getattr(out, "details", None)
        if details is not None and not (isinstance(details, dict) and all(
                isinstance(k, str) and _plain_value(v) for k, v in details.items())):
            raise UserError(f"{where} details {shown_value(details)}; expected None or a dict of string keys and plain "
                            "values (text, finite numbers, bools, None)")
        checked.append(GenerationOutput(text=text, error=error, cost_usd=None if cost is None else float(cost),
                                        details={k: _plain(v) for k, v in details.items()} if details else None,
                                        **counts))
    return checked


def _plain_value(value: Any) -> bool:
    """Whether a value is text, a finite number, a bool or None (numpy scalars included)."""
    value = _plain(value)
    return value is None or isinstance(value, (str, bool)) or (isinstance(value, Real) and math.isfinite(value))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (np.float64 -> float, np.bool_ -> bool); others unchanged."""
    return value.item() if type(value).__module__ == "numpy" and hasattr(value, "item") else value


def _metric(value: Any) -> tuple[Any, str | None]:
    """(the value as plain Python, what is wrong with it or None)."""
    value = _plain(value)
    if value is None or isinstance(value, bool):
        return value, None
    if not isinstance(value, Real):
        return value, f"{shown_value(value)}; expected a number, a bool, or None for unscored"
    if not math.isfinite(value):
        return value, f"{value}; expected a finite number, or None for unscored"
    return (value if isinstance(value, int) else float(value)), None


def checked_rows(judge_id: str, plugin: str, rows: Any, sample_ids: list[str],
                 proportions: Collection[str] = ()) -> list[dict[str, Any]]:
    """A judge's per-sample rows, checked before they are saved: one dict per record with a `metrics` dict of
    finite numbers, bools or None and, optionally, `groups` of plain values; the whole row must be JSON without
    NaN. A metric the judge declares a 0/1 verdict (`proportions`, its proportion_metrics) must lie in [0, 1]: 0, 1,
    or a share of repeated verdicts (the gpt4 judge's mean over --judge-repeats). The judge's own row objects are
    kept (numpy numbers are made Python ones in place): a judge may find its rows again by identity when it
    aggregates."""
    import json

    who = named_plugin("judge", judge_id, plugin)
    if not isinstance(rows, (list, tuple)):
        raise UserError(f"{who}: score() returned {type(rows).__name__}; expected a list of rows, one per record")
    if len(rows) != len(sample_ids):
        raise UserError(f"{who}: score() returned {len(rows)} rows for {len(sample_ids)} records; expected one "
                        "per record, in order")
    for sample_id, row in zip(sample_ids, rows):
        where = f"{who}: score() returned, for sample '{sample_id}',"
        metrics = row.get("metrics") if isinstance(row, dict) else None
        if not isinstance(metrics, dict):
            raise UserError(f"{where} {shown_value(row)}; expected a dict with a 'metrics' dict, e.g. "
                            "{'metrics': {'accuracy': 1.0}}")
        for name, value in list(metrics.items()):
            plain, problem = _metric(value)
            if not isinstance(name, str):
                problem = f"a metric named {shown_value(name)}; expected string names"
            elif problem is None and name in proportions and plain is not None and not 0 <= plain <= 1:
                problem = (f"{plain}, outside [0, 1]; the judge declares '{name}' a 0/1 verdict (proportion_metrics): "
                           "expected 0 or 1 (or a share of repeated verdicts between them), or None for unscored")
            if problem is not None:
                raise UserError(f"{where} metric '{name}' = {problem}")
            if plain is not value:
                metrics[name] = plain
        groups = row.get("groups", {})
        if not isinstance(groups, dict):
            raise UserError(f"{where} groups {shown_value(groups)}; expected a dict of breakdown names to plain values")
        for key, value in list(groups.items()):
            plain = _plain(value)
            if not isinstance(key, str) or not (plain is None or isinstance(plain, (str, int))
                                                or (isinstance(plain, float) and math.isfinite(plain))):
                raise UserError(f"{where} group {key!r} = {shown_value(value)}; expected a string, a whole number or "
                                "a finite number")
            if plain is not value:
                groups[key] = plain
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where} a row that cannot be saved as JSON ({exc}); expected strings, numbers, "
                            "lists and dicts, no NaN") from None
    return list(rows)


def checked_aggregate(judge: Any, values: Any) -> dict[str, float | None]:
    """A judge's aggregate() result: metric names to finite numbers or None."""
    who = named_plugin("judge", getattr(judge, "id", "?"), getattr(judge, "registered_plugin", ""))
    if not isinstance(values, dict):
        raise UserError(f"{who}: aggregate() returned {shown_value(values)}; expected a dict of metric values")
    out = {}
    for name, value in values.items():
        plain, problem = _metric(value)
        if problem is not None:
            raise UserError(f"{who}: aggregate() returned metric '{name}' = {problem}")
        out[name] = plain
    return out


@contextmanager
def third_party_code(kind: str, item_id: str, plugin: str, hook: str) -> Iterator[None]:
    """Run a third-party plugin's code, its `hook` (constructing a model or judge, generating, scoring, ...): an
    exception it raises becomes one line naming the plugin, its package, the hook, the exception and where it was
    raised, instead of a traceback through the harness (HARNESS_DEBUG=1 keeps the traceback). Built-in plugins'
    exceptions are the harness's own bugs and keep their traceback; work already written stays."""
    try:
        yield
    except (UserError, ModuleNotFoundError):  # a missing optional dependency is named by the CLI (its extra)
        raise
    except Exception as exc:  # noqa: BLE001 - any exception of the plugin's code, reported as the plugin's
        if not plugin or is_builtin(plugin) or os.environ.get("HARNESS_DEBUG"):
            raise
        raise UserError(f"{raised(kind, item_id, plugin, hook, exc)} (a bug in the plugin; work written so far "
                        "is kept; HARNESS_DEBUG=1 shows the traceback)") from exc


def is_builtin(plugin: str) -> bool:
    """Whether `plugin` is one of the harness's own plugins (whose exceptions are the harness's bugs)."""
    from harness import plugin_manager

    return plugin in plugin_manager.BUILTIN_PLUGINS


def raised(kind: str, item_id: str, plugin: str, hook: str, exc: BaseException) -> str:
    """"model 'x' (plugin 'p', package p==1): close() raised RuntimeError: why at /path/impl.py:12"."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    message = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"{named_plugin(kind, item_id, plugin)}: {hook}() raised {type(exc).__name__}"
            f"{': ' + message if message else ''}{where}")
