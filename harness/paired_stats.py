"""Statistics of a paired comparison: two runs' values of a metric on the same samples, their difference, a paired
bootstrap interval of the difference and a p-value for "no difference".

A judge's saved aggregator (`JudgePlugin.saved_aggregator`) is built over run A's rows followed by run B's, so that
position i (run A) and position n + i (run B) are the same sample. Every resample keeps that pairing:
- the interval resamples samples (or whole clusters of dependent samples) with replacement, the same draw for both
  runs, and takes the quantiles of B - A (numpy.quantile, linear) at the ends of Hesterberg's expanded percentile
  interval for the number of units resampled (`aggregate.expanded_quantiles`: 2.5% and 97.5% with many, further
  out with few, where the plain percentile interval is too narrow), numpy default_rng(0);
- the p-value swaps A's and B's row of each sample (or cluster) with probability 1/2 (a paired randomization test,
  as Riezler and Maxwell 2005 for BLEU): (1 + draws at least as far from 0 as the observed difference) /
  (1 + draws), numpy default_rng(1);
- for a metric that is a 0/1 verdict per sample and a plain mean (accuracy), with independent samples, McNemar's
  exact test on the samples where exactly one run is right, instead of the randomization.
With about 5 clusters the interval holds the true difference only 0.80-0.92 of the time, 0.89-0.94 with 10
(benchmarks/paired_interval_coverage.py); the studentized bootstrap results.json uses for one run's mean over few
clusters did no better on a difference, so the interval stays, and the p-value is the one to go by there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from harness.aggregate import cluster_groups, expanded_quantiles
from harness.judge_api import Aggregator

RESAMPLES = 1000
METHODS = {
    "paired-bootstrap": "percentile bootstrap of B - A, samples drawn with replacement (the same draw for both runs), "
                        "numpy default_rng(0), numpy.quantile 2.5% and 97.5%",
    "paired-randomization": "paired randomization test: each sample's A and B rows swapped with probability 1/2, "
                            "numpy default_rng(1), p = (1 + draws with |B - A| at least the observed) / (1 + draws)",
    "mcnemar-exact": "McNemar's exact test: two-sided binomial test (p = 1/2) of the samples only A gets right "
                     "against those only B gets right",
}
_CLUSTERS = ", whole clusters of the task source's cluster_by field instead of samples"
METHODS["paired-cluster-bootstrap"] = METHODS["paired-bootstrap"] + _CLUSTERS
METHODS["paired-cluster-randomization"] = METHODS["paired-randomization"] + _CLUSTERS
# what compare records now: the bootstraps above (written by earlier versions) with their ends moved out for the number
# of units resampled, as aggregate's `*-expanded` intervals
for _plain in ("paired-bootstrap", "paired-cluster-bootstrap"):
    METHODS[f"{_plain}-expanded"] = METHODS[_plain].replace(
        "numpy.quantile 2.5% and 97.5%", "numpy.quantile a/2 and 1 - a/2, where the standard normal 1 - a/2 quantile "
        "is sqrt(k / (k - 1)) times Student's t 0.975 quantile on k - 1 degrees of freedom for k units (samples, or "
        "clusters) resampled (Hesterberg's expanded percentile interval)")


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_differences(aggregate: Aggregator, n: int, positions: Sequence[int], clusters: Sequence[Any] | None,
                       names: Sequence[str], resamples: int = RESAMPLES,
                       tick: Callable[[int], Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per metric in `names`: {"a", "b", "difference", "ci95", "p_value"} over the samples at `positions` (run A's
    positions; run B's are n + each); `clusters`: each position's cluster value, or None for independent samples.
    ci95 and p_value are None with fewer than two samples (clusters) or where the metric is undefined. `tick(k)`:
    k more draws done (a progress bar)."""
    import numpy as np

    at = np.asarray(positions, dtype=np.int64)
    a, b = aggregate(at), aggregate(at + n)
    observed = {name: _difference(a.get(name), b.get(name)) for name in names}
    out = {name: {"a": a.get(name), "b": b.get(name), "difference": observed[name], "ci95": None, "p_value": None}
           for name in names}
    members = cluster_groups(len(at), clusters)  # indices into `at`
    groups = [at[m] for m in members]
    wanted = [name for name in names if observed[name] is not None]
    if len(groups) < 2 or not wanted:
        if tick is not None:
            tick(2 * resamples)
        return out
    single = clusters is None
    boot: dict[str, list[float]] = {name: [] for name in wanted}
    rng = np.random.default_rng(0)
    for _ in range(resamples):
        pick = rng.integers(0, len(groups), len(groups))
        idx = at[pick] if single else np.concatenate([groups[g] for g in pick])
        _collect(boot, aggregate(idx), aggregate(idx + n))
        if tick is not None:
            tick(1)
    swapped: dict[str, list[float]] = {name: [] for name in wanted}
    owner = np.zeros(len(at), dtype=np.int64)  # each position's group, in `at` order
    for g, m in enumerate(members):
        owner[m] = g
    rng = np.random.default_rng(1)
    for _ in range(resamples):
        swap = (rng.random(len(groups)) < 0.5)[owner].astype(np.int64) * n
        _collect(swapped, aggregate(at + swap), aggregate(at + n - swap))
        if tick is not None:
            tick(1)
    for name in wanted:
        if len(boot[name]) >= 2:
            low, high = np.quantile(np.asarray(boot[name]), expanded_quantiles(len(groups)))
            out[name]["ci95"] = [float(low), float(high)]
        if swapped[name]:
            far = abs(observed[name]) - 1e-12 * max(1.0, abs(observed[name]))  # observed, up to rounding
            out[name]["p_value"] = (1 + sum(abs(d) >= far for d in swapped[name])) / (1 + len(swapped[name]))
    return out


def _collect(into: dict[str, list[float]], a: dict[str, float | None], b: dict[str, float | None]) -> None:
    for name, values in into.items():
        d = _difference(a.get(name), b.get(name))
        if d is not None:
            values.append(d)


def _difference(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    d = float(b) - float(a)
    return d if math.isfinite(d) else None
