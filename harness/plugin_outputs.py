"""Checks of what model and judge plugins hand back, at the plugin boundary, before anything is written.

A third-party plugin that breaks the contract (model_api.py, judge_api.py) gets one line naming the plugin, the
sample and what was expected, instead of a file the harness later refuses to read (a number as a prediction), a
silently wrong score (no text counted as a wrong answer) or invalid JSON in results (NaN). Work already written
(earlier batches, other judges) stays.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from harness.errors import UserError
from harness.types import GenerationOutput

NO_TEXT = "the model returned no text (None) and no error"


def _who(kind: str, item_id: str, plugin: str) -> str:
    return f"{kind} '{item_id}'" + (f" (plugin '{plugin}')" if plugin else "")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:40]}... ({type(value).__name__})" if len(text) > 40 else f"{text} ({type(value).__name__})"


def checked_outputs(model_id: str, plugin: str, outputs: Any, sample_ids: list[str]) -> list[GenerationOutput]:
    """The outputs of one generate() call, checked: a list with one GenerationOutput-like object per request
    whose text is a string (None with no error becomes a failed sample, retried by the next run), error a string
    or None, token counts whole numbers or None and cost a finite number or None; as GenerationOutputs."""
    who = _who("model", model_id, plugin)
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
            raise UserError(f"{where} {_shown(out)}; expected a harness.types.GenerationOutput")
        error = out.error
        if error is not None and not isinstance(error, str):
            raise UserError(f"{where} error {_shown(error)}; expected a string or None")
        text = out.text
        if text is None:
            text, error = "", error or NO_TEXT
        elif not isinstance(text, str):
            raise UserError(f"{where} text {_shown(text)}; expected a string (a failure: text '' and an error)")
        counts = {}
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(out, name, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
                raise UserError(f"{where} {name} {_shown(value)}; expected a whole number or None")
            counts[name] = None if value is None else int(value)
        cost = getattr(out, "cost_usd", None)
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, Real) or not math.isfinite(cost)):
            raise UserError(f"{where} cost_usd {_shown(cost)}; expected a finite number or None")
        checked.append(GenerationOutput(text=text, error=error, cost_usd=None if cost is None else float(cost),
                                        **counts))
    return checked


def _metric_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, Real):
        return f"{_shown(value)}; expected a number, a bool, or None for unscored"
    if not math.isfinite(value):
        return f"{value}; expected a finite number, or None for unscored"
    return None


def checked_rows(judge_id: str, plugin: str, rows: Any, sample_ids: list[str]) -> list[dict[str, Any]]:
    """A judge's per-sample rows, checked before they are saved: one dict per record with a `metrics` dict of
    finite numbers, bools or None (numpy numbers become Python ones) and, optionally, `groups` of plain values."""
    who = _who("judge", judge_id, plugin)
    if not isinstance(rows, (list, tuple)):
        raise UserError(f"{who}: score() returned {type(rows).__name__}; expected a list of rows, one per record")
    if len(rows) != len(sample_ids):
        raise UserError(f"{who}: score() returned {len(rows)} rows for {len(sample_ids)} records; expected one "
                        "per record, in order")
    checked = []
    for sample_id, row in zip(sample_ids, rows):
        where = f"{who}: score() returned, for sample '{sample_id}',"
        metrics = row.get("metrics") if isinstance(row, dict) else None
        if not isinstance(metrics, dict):
            raise UserError(f"{where} {_shown(row)}; expected a dict with a 'metrics' dict, e.g. "
                            "{'metrics': {'accuracy': 1.0}}")
        clean = {}
        for name, value in metrics.items():
            problem = _metric_problem(value)
            if not isinstance(name, str):
                problem = f"a metric named {_shown(name)}; expected string names"
            if problem is not None:
                raise UserError(f"{where} metric '{name}' = {problem}")
            clean[name] = value if value is None or isinstance(value, (bool, int)) else float(value)
        groups = row.get("groups", {})
        if not isinstance(groups, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, (str, int, float))) for k, v in groups.items()):
            raise UserError(f"{where} groups {_shown(groups)}; expected a dict of breakdown names to plain values")
        checked.append({**row, "metrics": clean})
    return checked


def checked_aggregate(judge: Any, values: Any) -> dict[str, float | None]:
    """A judge's aggregate() result: metric names to finite numbers or None."""
    who = _who("judge", getattr(judge, "id", "?"), getattr(judge, "plugin", ""))
    if not isinstance(values, dict):
        raise UserError(f"{who}: aggregate() returned {_shown(values)}; expected a dict of metric values")
    for name, value in values.items():
        problem = _metric_problem(value)
        if problem is not None:
            raise UserError(f"{who}: aggregate() returned metric '{name}' = {problem}")
    return {name: value if value is None or isinstance(value, (bool, int)) else float(value)
            for name, value in values.items()}
