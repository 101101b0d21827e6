"""Turn per-sample judge rows into metrics overall and per breakdown value, each with n and a 95% CI.

One generic mechanism for every judge and every slice (answer_type, question_type, organ, ...): a slice
is just a subset of rows handed to the judge's own `aggregate`. Confidence intervals: Wilson for 0/1
metrics, a normal approximation for other per-sample means, and a seeded percentile bootstrap for
corpus-level metrics (BLEU, CIDEr) whose judge allows it.
"""

from __future__ import annotations

import math
import random
from typing import Any

from harness.judge_api import JudgePlugin

Z95 = 1.959963984540054
BOOTSTRAP_SAMPLES = 200


def wilson_interval(successes: float, n: int) -> list[float] | None:
    if n == 0:
        return None
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def normal_interval(values: list[float]) -> list[float] | None:
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return [mean - half, mean + half]


def _per_sample_interval(values: list[float]) -> list[float] | None:
    if values and all(v in (0.0, 1.0) for v in values):
        return wilson_interval(sum(values), len(values))
    return normal_interval(values)


def _bootstrap(judge: JudgePlugin, records: list[dict], rows: list[dict], name: str) -> list[float] | None:
    if len(rows) < 2:
        return None
    rng = random.Random(0)
    stats = []
    for _ in range(BOOTSTRAP_SAMPLES):
        idx = [rng.randrange(len(rows)) for _ in rows]
        value = judge.aggregate([records[i] for i in idx], [rows[i] for i in idx]).get(name)
        if value is not None:
            stats.append(float(value))
    if not stats:
        return None
    stats.sort()
    lo = stats[int(0.025 * (len(stats) - 1))]
    hi = stats[int(math.ceil(0.975 * (len(stats) - 1)))]
    return [lo, hi]


def summarize_slice(judge: JudgePlugin, records: list[dict], rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Metrics of one set of rows: {name: {"value", "n", "ci95", "unscored"}}."""
    values = judge.aggregate(records, rows)
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        per_sample = [row["metrics"][name] for row in rows if name in row.get("metrics", {})]
        if per_sample:
            scored = [float(v) for v in per_sample if v is not None]
            unscored = len(per_sample) - len(scored)
            n = len(scored)
            if value is None:
                ci = None
            elif judge.mean_metrics:
                ci = _per_sample_interval(scored)
            elif getattr(judge, "bootstrap_ci", True):
                ci = _bootstrap(judge, records, rows, name)
            else:
                ci = None
        else:  # a corpus-level quantity with no per-sample counterpart (std across repeats, counts, cost)
            n, unscored, ci = len(rows), 0, None
        out[name] = {"value": value, "n": n, "ci95": ci, "unscored": unscored}
    return out


def breakdown_values(record: dict, row: dict, key: str) -> Any:
    value = row.get("groups", {}).get(key, record.get(key))
    if value is None or value == "":
        return None
    return str(value)


def summarize(
    judge: JudgePlugin, records: list[dict], rows: list[dict], breakdown_keys: list[str]
) -> dict[str, Any]:
    """Overall metrics plus the same metrics per value of each breakdown key (and judge-defined groups)."""
    keys = list(dict.fromkeys(list(breakdown_keys) + [k for row in rows for k in row.get("groups", {})]))
    breakdowns: dict[str, dict[str, Any]] = {}
    for key in keys:
        slices: dict[str, list[int]] = {}
        for i, (record, row) in enumerate(zip(records, rows)):
            value = breakdown_values(record, row, key)
            if value is not None:
                slices.setdefault(value, []).append(i)
        if not slices:
            continue
        breakdowns[key] = {
            value: summarize_slice(judge, [records[i] for i in idx], [rows[i] for i in idx])
            for value, idx in sorted(slices.items())
        }
    return {"metrics": summarize_slice(judge, records, rows), "breakdowns": breakdowns}
