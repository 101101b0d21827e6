"""A minimal judge plugin: numeric answers within a tolerance (`--judge-arg tolerance=0.5`, default 0).

`score` returns one row per record, in order: {"metrics": {"within_tolerance": 1.0, 0.0 or None}, "details": ...}.
None means unscored (the reference holds no number, e.g. a yes/no question): it is counted as `unscored` in
results.json and left out of the mean, never counted as wrong. The base class's `aggregate` (the mean of the scored
rows) gives the overall value and every breakdown slice.
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.errors import UserError
from harness.judge_api import JudgeOptions, JudgePlugin

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class NumericToleranceJudge(JudgePlugin):
    id = "numeric"  # informative only: results record the id the JudgeInfo registers
    version = "1"
    task_kinds = ("vqa",)
    accepted_settings = ("tolerance",)  # --judge-arg keys; any other key is refused before anything runs
    proportion_metrics = ("within_tolerance",)  # 0/1 per sample: Wilson's interval instead of a bootstrap

    def __init__(self, options: JudgeOptions) -> None:
        super().__init__(options)
        self.tolerance = self.setup()["tolerance"]  # a bad value fails here, before any generation

    @classmethod
    def resolve_setup(cls, settings: dict[str, Any], convention: str | None) -> dict[str, Any]:
        """The tolerance as a number, 0 when not given: tolerance=0 and no tolerance are one leaderboard row."""
        given = settings.get("tolerance", 0)
        try:
            tolerance = float(given)
        except (TypeError, ValueError):
            tolerance = math.nan
        if not math.isfinite(tolerance) or tolerance < 0:
            raise UserError(f"--judge-arg tolerance={given}: judge 'numeric' expects a number >= 0")
        return {"tolerance": tolerance}

    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._row(str(r.get("answer") or ""), str(r.get("prediction") or "")) for r in records]

    def _row(self, answer: str, prediction: str) -> dict[str, Any]:
        reference, predicted = NUMBER.search(answer), NUMBER.search(prediction)
        if reference is None:
            within = None
        elif predicted is None:
            within = 0.0
        else:
            within = 1.0 if abs(float(predicted.group()) - float(reference.group())) <= self.tolerance else 0.0
        details = {"reference": reference and reference.group(), "predicted": predicted and predicted.group()}
        return {"metrics": {"within_tolerance": within}, "details": details}
