"""Turn per-sample judge rows into metrics overall and per breakdown value, each with n and a 95% CI.

One generic mechanism for every judge and every slice (answer_type, question_type, organ, ...): a slice
is just a subset of rows handed to the judge's own `aggregate`. Confidence intervals (each metric records its
`ci_method`): Wilson for the metrics a judge declares 0/1 verdicts (`proportion_metrics`: a per-sample mean of
0/1 values, or a corpus metric whose value is the share of its rows' 0/1 values, such as an LLM judge asked once
per sample); a seeded percentile bootstrap of the mean for other per-sample means (it never leaves the range of
the values, unlike a normal approximation); a seeded percentile bootstrap of the judge's own aggregate for corpus-level
metrics (BLEU, CIDEr) whose judge allows it. Both bootstraps are expanded for the number of units resampled
(Hesterberg's expanded percentile interval, `*-expanded`): a plain percentile bootstrap is too narrow with few of
them (0.80-0.93 coverage with 5-20 images, 0.87-0.95 expanded). When samples are not independent (one sample per
image of a two-view study, the questions on one image), `cluster_key` names the record field that groups them:
bootstraps resample whole groups, and Wilson's interval takes the effective sample size n / design effect and
Student's t on groups - 1 degrees of freedom for z (`cluster-wilson-t`; a cluster bootstrap of 0 correct of 58
would be [0, 0]). A per-sample mean over fewer than FEW_UNITS (30) groups gets a studentized cluster bootstrap
instead (`cluster-bootstrap-t-mean`, clipped to [0, 1] for a metric declared in [0, 1], else to the range of the
values): a percentile one never leaves the range of the groups' means and covered 0.68-0.91 with 5 images, the
bootstrap-t 0.94-0.97 (benchmarks/interval_coverage.py). A bootstrap whose resamples all give one value (rows all
alike) gives no interval (`no_spread`), not [v, v], except for the metrics a judge declares in [0, 1]
(`unit_metrics`), which get Wilson's at 0 or 1.
"""

from __future__ import annotations

import math
import random
from typing import Any

from harness.judge_api import JudgePlugin
from harness.plugin_outputs import checked_aggregate

Z95 = 1.959963984540054
BOOTSTRAP_SAMPLES = 200  # resamples of a corpus metric (each recomputes the judge's aggregate)
FEW_UNITS, FEW_UNITS_BOOTSTRAP_SAMPLES = 30, 1000  # more where the expanded ends lie far out and resamples are cheap
MEAN_BOOTSTRAP_SAMPLES = 1000  # resamples of a mean (vectorised, drawn in bounded chunks)
_CLUSTERS = (", resampling whole groups of the task source's cluster_by field (e.g. the two views of a study, the "
             "questions on one image)")
# each `ci_method` a metric may record, as results.json's `ci_methods` spells it out
CI_METHODS = {
    "wilson": "Wilson score interval of a proportion (every per-sample value 0 or 1)",
    "bootstrap-mean": f"percentile bootstrap of the mean, {MEAN_BOOTSTRAP_SAMPLES} resamples, numpy "
                      "default_rng(0), numpy.quantile 2.5% and 97.5%",
    "bootstrap-corpus": f"percentile bootstrap of the judge's corpus aggregate, {BOOTSTRAP_SAMPLES} resamples, "
                        "random.Random(0); ends: sorted resample values at floor(0.025 (k - 1)) and "
                        "ceil(0.975 (k - 1)) of k finite ones",
}
CI_METHODS["cluster-wilson-t"] = (
    "Wilson score interval of a proportion with the effective sample size n / design effect: the variance of the "
    "proportion between the task source's cluster_by groups (e.g. the questions on one image) over its binomial "
    "variance, at least 1 (1 where it cannot be estimated: a proportion of 0 or 1, or one group), and Student's t "
    "0.975 quantile on groups - 1 degrees of freedom for z (plain z for a proportion of 0 or 1, or one group)")
# recorded by results scored before the t quantile (too narrow with few groups: 0.86-0.92 coverage at 5-10 groups)
CI_METHODS["cluster-wilson"] = (
    "Wilson score interval of a proportion with the effective sample size n / design effect (as cluster-wilson-t, "
    "but z = 1.96 whatever the number of groups)")
CI_METHODS["cluster-bootstrap-mean"] = CI_METHODS["bootstrap-mean"] + _CLUSTERS
CI_METHODS["cluster-bootstrap-corpus"] = CI_METHODS["bootstrap-corpus"] + _CLUSTERS
# what this harness records: the four above (recorded by results scored before; too narrow with few samples or
# groups: 0.80-0.93 coverage with 5-20 images) with their ends moved out for the number of units resampled
_EXPANDED = ("; expanded for the number k of units resampled (samples, or groups when clustered; Hesterberg's expanded "
             "percentile interval): the quantiles at a/2 and 1 - a/2, where the standard normal 1 - a/2 quantile is "
             "sqrt(k / (k - 1)) times Student's t 0.975 quantile on k - 1 degrees of freedom")
for _plain in ("bootstrap-mean", "bootstrap-corpus", "cluster-bootstrap-mean", "cluster-bootstrap-corpus"):
    CI_METHODS[f"{_plain}-expanded"] = CI_METHODS[_plain].replace("2.5% and 97.5%", "a/2 and 1 - a/2").replace(
        "0.025 (k - 1)) and ceil(0.975 (k - 1)) of k finite ones", "a/2 (m - 1)) and ceil((1 - a/2) (m - 1)) of m "
        "finite ones") + _EXPANDED
CI_METHODS["cluster-bootstrap-t-mean"] = (
    f"studentized (bootstrap-t) bootstrap of the mean over fewer than {FEW_UNITS} of the task source's cluster_by "
    f"groups (e.g. the questions on one image), {MEAN_BOOTSTRAP_SAMPLES} resamples of whole groups, numpy "
    "default_rng(0): SE = sqrt(k / (k - 1) sum_g (y_g - mean m_g)^2) / n from the k groups' totals y_g of m_g values "
    "(cluster-robust, ratio-estimator linearisation) and t = (resample mean - mean) / resample SE (+-inf where that "
    "SE is 0, left out where the resample mean is the mean too); ends mean - SE t_hi and mean - SE t_lo, t_lo and "
    "t_hi the sorted t at floor(0.025 (r - 1)) and ceil(0.975 (r - 1)) of r, clipped to [0, 1] for a metric the "
    "judge declares in [0, 1] (unit_metrics, proportion_metrics), else to the smallest and largest value")
for _plain in ("bootstrap-corpus-expanded", "cluster-bootstrap-corpus-expanded"):
    CI_METHODS[_plain] = CI_METHODS[_plain].replace(
        f"{BOOTSTRAP_SAMPLES} resamples", f"{BOOTSTRAP_SAMPLES} resamples ({FEW_UNITS_BOOTSTRAP_SAMPLES} with fewer "
        f"than {FEW_UNITS} units)")


#: Student's t 0.975 quantiles on 1..30 degrees of freedom (scipy.stats.t.ppf, 6 decimals)
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
        2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
        2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)


def t975(df: int) -> float:
    """Student's t 0.975 quantile on `df` >= 1 degrees of freedom: the table to 30, then the Cornish-Fisher
    expansion around z (within 3e-8 of the exact value beyond 30)."""
    if df <= len(T975):
        return T975[df - 1]
    z = Z95
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
             (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(term / df ** (i + 1) for i, term in enumerate(terms))


def expanded_quantiles(units: int) -> tuple[float, float]:
    """The quantiles a 95% percentile bootstrap over `units` >= 2 resampled units (samples, or clusters) takes its
    ends at, moved out for small numbers of units (Hesterberg 2015, "What teachers should know about the bootstrap":
    the expanded percentile interval): a/2 and 1 - a/2 with Phi^-1(1 - a/2) = sqrt(k / (k - 1)) t_0.975(k - 1).
    Coverage (benchmarks/interval_coverage.py, a mean over 5, 10, 20 images at shares 0.3 and 0.7): 0.87-0.91,
    0.90-0.93, 0.93-0.95 where the plain 2.5% and 97.5% quantiles gave 0.80-0.83, 0.87-0.90, 0.92-0.93 (0.68-0.89
    at a share of 0.1: a mean over fewer than 30 groups gets `bootstrap_t_mean_interval` instead)."""
    quantile = math.sqrt(units / (units - 1)) * t975(units - 1)
    tail = 0.5 * math.erfc(quantile / math.sqrt(2))  # 1 - Phi(quantile)
    return tail, 1.0 - tail


def wilson_interval(successes: float, n: float, z: float = Z95) -> list[float] | None:
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends, not 6.9e-18
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return [low, high]


def cluster_wilson_interval(values: list[float], clusters: list[Any]) -> list[float] | None:
    """Wilson's interval of the share of 1s among 0/1 `values`, with the sample size shrunk by the design effect of
    their clusters and z widened to Student's t on clusters - 1 degrees of freedom (a percentile cluster bootstrap
    of 0 of 58 gives [0, 0]; this is never narrower than Wilson's). Coverage of its 95% intervals in simulation
    (benchmarks/interval_coverage.py: 2,000 data sets each, 1-6 questions per image, intra-image correlation 0.3 and
    0.5, share 0.3 and 0.7): 0.933-0.964 with 5 images, 0.946-0.956 with 10, 0.940-0.956 with 20 to 200 (with
    z = 1.96: 0.858-0.898, 0.910-0.921, 0.929-0.955)."""
    n = len(values)
    if n == 0:
        return None
    share = sum(values) / n
    sums: dict[Any, list[float]] = {}
    for value, cluster in zip(values, clusters):
        sums.setdefault(cluster, [0.0, 0.0])
        sums[cluster][0] += value
        sums[cluster][1] += 1
    design_effect, z = 1.0, Z95  # not estimable without spread (all 0 or all 1, one group): plain Wilson, which
    # the estimate continues from (taking each group's answers as alike there made 0 of 645 wider than 1 of 645)
    if len(sums) > 1 and 0 < share < 1:
        between = len(sums) / (len(sums) - 1) * sum((y - share * m) ** 2 for y, m in sums.values()) / n**2
        design_effect = max(1.0, between / (share * (1 - share) / n))
        z = t975(len(sums) - 1)
    effective = n / design_effect
    return wilson_interval(share * effective, effective, z)


def cluster_values(records: list[dict[str, Any]], key: str | None) -> list[Any] | None:
    """Each record's cluster (the value of the task source's `cluster_by` field), None without clusters. A list
    value (`images`, the names of a sample's images: questions on one image) is one cluster per distinct list.
    Records of which one lacks the field (predictions written before the task clustered by `image_content`) are
    not clustered: each its own, as they were scored then, rather than all of them one cluster."""
    if not key:
        return None
    values = [tuple(v) if isinstance(v := r.get(key), list) else v for r in records]
    return None if any(v is None for v in values) else values


def cluster_groups(n: int, clusters: list[Any] | None) -> list[list[int]]:
    """Row indices grouped for resampling: one group per cluster value, or one per row."""
    if clusters is None:
        return [[i] for i in range(n)]
    by_value: dict[Any, list[int]] = {}
    for i, value in enumerate(clusters):
        by_value.setdefault(value, []).append(i)
    return list(by_value.values())


def _unit_totals(values: list[float], clusters: list[Any] | None) -> tuple[Any, Any]:
    """Each resampled unit's sum of values and number of values: per sample, or per cluster in order of first
    appearance (so the seeded draws depend on the sample-id order only)."""
    import numpy as np

    if clusters is None:
        return np.asarray(values, dtype=float), np.ones(len(values))
    order: dict[Any, int] = {}  # cluster -> its index, in order of first appearance
    group = np.fromiter((order.setdefault(c, len(order)) for c in clusters), dtype=np.int64, count=len(clusters))
    return np.bincount(group, weights=np.asarray(values, dtype=float)), np.bincount(group).astype(float)


def _resampled_units(units: int) -> Any:
    """The MEAN_BOOTSTRAP_SAMPLES resamples of `units` units, numpy default_rng(0), drawn in bounded chunks: index
    arrays of shape (resamples in the chunk, units)."""
    import numpy as np

    rng = np.random.default_rng(0)
    chunk = max(1, min(MEAN_BOOTSTRAP_SAMPLES, 2_000_000 // units))  # resamples per step: bounded memory
    for start in range(0, MEAN_BOOTSTRAP_SAMPLES, chunk):
        yield rng.integers(0, units, size=(min(start + chunk, MEAN_BOOTSTRAP_SAMPLES) - start, units), dtype=np.int32)


def bootstrap_mean_interval(values: list[float], clusters: list[Any] | None = None) -> list[float] | None:
    """Seeded percentile bootstrap of the mean of `values`, resampling whole clusters when given."""
    import numpy as np

    sums, counts = _unit_totals(values, clusters)
    n = len(sums)
    if n < 2:
        return None
    means = np.concatenate([sums[idx].sum(axis=1) / counts[idx].sum(axis=1) for idx in _resampled_units(n)])
    if no_spread(float(means.min()), float(means.max())):
        return None
    low, high = np.quantile(means, expanded_quantiles(n))
    return [float(low), float(high)]


def bootstrap_t_mean_interval(values: list[float], clusters: list[Any] | None,
                              bounds: tuple[float, float] | None = None) -> list[float] | None:
    """Studentized (bootstrap-t) interval of the mean of `values` over its units (clusters when given): the
    cluster-robust standard error SE = sqrt(k / (k - 1) sum_g (y_g - mean m_g)^2) / n from the k units' totals y_g
    of m_g values (ratio-estimator linearisation), and t = (mean* - mean) / SE* of each resample (the draws of
    `bootstrap_mean_interval`; +-inf where SE* is 0, left out where mean* is the mean too); ends mean - SE t_hi and
    mean - SE t_lo, t_lo and t_hi the sorted t at floor(0.025 (r - 1)) and ceil(0.975 (r - 1)) of r, clipped to
    `bounds` (the smallest and largest value when None). A percentile bootstrap over 5 images never leaves the range
    of their means and covered 0.68-0.91; this one 0.94-0.98 with 5-20 images (benchmarks/interval_coverage.py)."""
    import numpy as np

    sums, counts = _unit_totals(values, clusters)
    k, n = len(sums), float(counts.sum())
    if k < 2:
        return None
    mean = float(sums.sum()) / n
    se = math.sqrt(k / (k - 1) * float(((sums - mean * counts) ** 2).sum())) / n
    if no_spread(mean - se, mean + se):  # every unit's mean the same: so is every resample's
        return None
    stats = []
    for idx in _resampled_units(k):
        y, m = sums[idx], counts[idx]
        total = m.sum(axis=1)
        means = y.sum(axis=1) / total
        ses = np.sqrt(k / (k - 1) * ((y - means[:, None] * m) ** 2).sum(axis=1)) / total
        moved = means - mean
        flat = ses <= 1e-12 * se  # a resample of one unit drawn k times: no spread of its own
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(flat, np.copysign(np.inf, moved), moved / np.where(flat, 1.0, ses))
        stats.append(t[~(flat & (np.abs(moved) <= 1e-12 * se))])
    t_sorted = np.sort(np.concatenate(stats))
    r = len(t_sorted)
    t_lo, t_hi = float(t_sorted[int(0.025 * (r - 1))]), float(t_sorted[int(math.ceil(0.975 * (r - 1)))])
    low, high = bounds if bounds is not None else (min(values), max(values))
    return [max(low, mean - se * t_hi), min(high, mean - se * t_lo)]


def no_spread(low: float, high: float) -> bool:
    """Whether every bootstrap resample gave the same value (up to rounding): the resamples then say nothing of the
    uncertainty (the rows are all alike: a BLEU of 0 on each of 3 reports), and [v, v] would claim there is none, so
    no interval is given."""
    return high - low <= 1e-12 * max(1.0, abs(low), abs(high))


def _per_sample_interval(values: list[float], clusters: list[Any] | None, proportion: bool,
                         unit: bool = False) -> tuple[list[float] | None, str]:
    """Wilson's interval for a metric the judge declares a 0/1 verdict (`proportion_metrics`), else a bootstrap of
    the mean: values that merely happen to be 0 or 1 here (a one-word answer length, a token recall) are no
    proportion, and Wilson would cap the interval at 1. But a metric in [0, 1] (`unit_metrics`: a token recall)
    that is 0 in every sample (or 1 in every sample) gets Wilson's interval: a bootstrap of no spread is [0, 0]."""
    alike_at_a_bound = unit and bool(values) and (all(v == 0.0 for v in values) or all(v == 1.0 for v in values))
    if (proportion or alike_at_a_bound) and values and all(v in (0.0, 1.0) for v in values):
        if clusters is not None:
            return cluster_wilson_interval(values, clusters), "cluster-wilson-t"
        return wilson_interval(sum(values), len(values)), "wilson"
    if clusters is not None and len(set(clusters)) < FEW_UNITS:  # a percentile bootstrap is too narrow there
        bounds = (0.0, 1.0) if proportion or unit else None
        return bootstrap_t_mean_interval(values, clusters, bounds), "cluster-bootstrap-t-mean"
    method = "cluster-bootstrap-mean-expanded" if clusters is not None else "bootstrap-mean-expanded"
    return bootstrap_mean_interval(values, clusters), method


def _bootstrap(judge: JudgePlugin, records: list[dict], rows: list[dict], names: list[str],
               clusters: list[Any] | None = None) -> dict[str, list[float] | None]:
    """Seeded percentile bootstrap of the judge's own aggregate, for each metric in `names`: the resamples are
    drawn once and each is aggregated once, every metric read from that one result."""
    groups = cluster_groups(len(rows), clusters)
    if len(groups) < 2 or not names:
        return dict.fromkeys(names)
    rng = random.Random(0)
    stats: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(BOOTSTRAP_SAMPLES if len(groups) >= FEW_UNITS else FEW_UNITS_BOOTSTRAP_SAMPLES):
        idx = [i for _ in groups for i in groups[rng.randrange(len(groups))]]
        values = judge.aggregate([records[i] for i in idx], [rows[i] for i in idx])
        for name in names:
            value = values.get(name)
            if value is not None and math.isfinite(float(value)):  # undefined on this resample: left out, as None
                stats[name].append(float(value))
    return {name: _percentile_interval(stats[name], expanded_quantiles(len(groups))) for name in names}


def _percentile_interval(stats: list[float], quantiles: tuple[float, float]) -> list[float] | None:
    if not stats:
        return None
    stats.sort()
    if no_spread(stats[0], stats[-1]):
        return None
    lo = stats[int(quantiles[0] * (len(stats) - 1))]
    hi = stats[int(math.ceil(quantiles[1] * (len(stats) - 1)))]
    return [lo, hi]


def summarize_slice(judge: JudgePlugin, records: list[dict], rows: list[dict],
                    cluster_key: str | None = None) -> dict[str, dict[str, Any]]:
    """Metrics of one set of rows: {name: {"value", "n", "ci95", "ci_method", "unscored"}}. The rows are taken in
    sample-id order, so that the seeded bootstrap gives the same interval whatever order a file lists them in."""
    order = sorted(range(len(rows)), key=lambda i: str(records[i].get("id", i)))
    records, rows = [records[i] for i in order], [rows[i] for i in order]
    values = checked_aggregate(judge, judge.aggregate(records, rows))
    present = {name: [i for i, row in enumerate(rows) if name in row.get("metrics", {})] for name in values}
    clusters = cluster_values(records, cluster_key)
    proportions = set() if judge.mean_metrics else {
        name for name, value in values.items() if name in getattr(judge, "proportion_metrics", ())
        and present[name] and _is_proportion(value, rows, present[name], name)}
    corpus = [name for name, value in values.items() if present[name] and value is not None and name not in proportions
              and not judge.mean_metrics and getattr(judge, "bootstrap_ci", True)]
    corpus_ci = _bootstrap(judge, records, rows, corpus, clusters) if corpus else {}
    corpus_method = "cluster-bootstrap-corpus-expanded" if clusters is not None else "bootstrap-corpus-expanded"
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if present[name]:
            scored_at = [i for i in present[name] if rows[i]["metrics"][name] is not None]
            scored = [float(rows[i]["metrics"][name]) for i in scored_at]
            unscored = len(present[name]) - len(scored)
            n = len(scored)
            ci, method = None, None
            if value is None:
                pass
            elif name in proportions:  # e.g. an LLM judge asked once per sample: a share of 0/1 verdicts
                ci, method = ((cluster_wilson_interval(scored, [clusters[i] for i in scored_at]), "cluster-wilson-t")
                              if clusters else (wilson_interval(sum(scored), n), "wilson"))
            elif judge.mean_metrics:
                ci, method = _per_sample_interval(scored, [clusters[i] for i in scored_at] if clusters else None,
                                                  name in getattr(judge, "proportion_metrics", ()),
                                                  name in getattr(judge, "unit_metrics", ()))
            elif name in corpus_ci:
                ci, method = corpus_ci[name], corpus_method
        else:  # a corpus-level quantity with no per-sample counterpart (std across repeats, counts, cost)
            n, unscored, ci, method = len(rows), 0, None, None
        out[name] = {"value": value, "n": n, "ci95": ci, "ci_method": method if ci else None, "unscored": unscored}
    return out


def _is_proportion(value: Any, rows: list[dict], at: list[int], name: str) -> bool:
    """Whether a metric the judge names in `proportion_metrics` is, on these rows, the share of their 0/1 values (an
    LLM judge asked once per sample): it then gets Wilson's interval, as per-sample 0/1 metrics do (a percentile
    bootstrap of 5 of 5 would give [1, 1]). A 0-4 rating that happens to be 0 or 1 everywhere is no proportion."""
    scored = [rows[i]["metrics"][name] for i in at if rows[i]["metrics"][name] is not None]
    return (value is not None and bool(scored) and all(v in (0, 1) for v in scored)
            and abs(float(value) - sum(map(float, scored)) / len(scored)) < 1e-12)


def breakdown_values(record: dict, row: dict, key: str) -> Any:
    value = row.get("groups", {}).get(key, record.get(key))
    if value is None or value == "":
        return None
    return str(value)


def summarize(
    judge: JudgePlugin, records: list[dict], rows: list[dict], breakdown_keys: list[str],
    cluster_key: str | None = None,
) -> dict[str, Any]:
    """Overall metrics plus the same metrics per value of each breakdown key (and judge-defined groups); `missing`:
    per breakdown key, the samples without a value for it (in no group of it, so its groups add up to fewer)."""
    keys = list(dict.fromkeys(list(breakdown_keys) + [k for row in rows for k in row.get("groups", {})]))
    breakdowns: dict[str, dict[str, Any]] = {}
    missing: dict[str, int] = {}
    for key in keys:
        slices: dict[str, list[int]] = {}
        for i, (record, row) in enumerate(zip(records, rows)):
            value = breakdown_values(record, row, key)
            if value is not None:
                slices.setdefault(value, []).append(i)
        if not slices:
            continue
        if sum(map(len, slices.values())) < len(rows):
            missing[key] = len(rows) - sum(map(len, slices.values()))
        breakdowns[key] = {
            value: summarize_slice(judge, [records[i] for i in idx], [rows[i] for i in idx], cluster_key)
            for value, idx in sorted(slices.items())
        }
    return {"metrics": summarize_slice(judge, records, rows, cluster_key), "breakdowns": breakdowns,
            "missing": missing}
