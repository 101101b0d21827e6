"""Coverage and width of 95% intervals over questions grouped by image, by simulation.

Questions are asked about images: each image has its own chance of a right answer (Beta with mean `share` and
intra-image correlation `rho`), 1-6 questions each. For every setting, `--datasets` data sets are drawn and, for
each candidate interval, the share of data sets whose interval holds the true share and its mean width are printed.
First table: a proportion of 0/1 verdicts, the harness's interval (`cluster-wilson-t`, Student's t on images - 1
degrees of freedom) and the same with z = 1.96 (the harness before). Second table: a mean of scores in [0, 1] (each
question's score Beta around its image's chance) over `--images` images, then over `--samples` independent samples
(one question per image, no clusters), shares 0.3 and 0.7 and 0.1 (skewed, near a bound), with the candidates for a
mean over few units: the expanded percentile bootstrap (`*-bootstrap-mean-expanded`, the harness at 30 units or
more), the cluster-robust t interval (mean +- t(k - 1) SE, SE from the unit totals with the factor k / (k - 1),
clipped to [0, 1]), and the studentized bootstrap (`bootstrap_t_mean_interval`, bootstrap-t: the harness's
`cluster-bootstrap-t-mean` with fewer than 30 images) clipped to [0, 1] as for a metric the judge declares in
[0, 1], and to the smallest and largest value as for any other; "ideal" is the width of +-1.96 times the true
standard deviation of the mean (known only here). A good 95% interval covers about 0.95 and is no wider than needed.

    .venv/bin/python benchmarks/interval_coverage.py                 # 35 s on the 2-core CPU machine
    .venv/bin/python benchmarks/interval_coverage.py --datasets 500  # quicker, noisier
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import aggregate  # noqa: E402

Interval = Callable[[list[float], Any], "list[float] | None"]


def verdicts(rng: np.random.Generator, chance: float, size: int) -> list[float]:
    """0/1 verdicts of `size` questions on an image answered right with probability `chance`."""
    return (rng.random(size) < chance).astype(float).tolist()


def scores(rng: np.random.Generator, chance: float, size: int) -> list[float]:
    """Scores in [0, 1] of `size` questions on an image, Beta around its `chance`."""
    return rng.beta(chance * 4 + 1e-3, (1 - chance) * 4 + 1e-3, size=size).tolist()


def with_stand_in(interval: Interval, name: str, stand_in: Callable[..., Any]) -> Interval:
    """`interval` with aggregate's function `name` replaced by `stand_in` (the interval before a change)."""
    def patched(values: list[float], clusters: Any) -> list[float] | None:
        saved = getattr(aggregate, name)
        setattr(aggregate, name, stand_in)
        try:
            return interval(values, clusters)
        finally:
            setattr(aggregate, name, saved)
    return patched


def cluster_robust_t(values: list[float], clusters: Any) -> list[float] | None:
    """mean +- t_0.975(k - 1) SE over k units, SE = sqrt(k / (k - 1) sum_g (y_g - mean m_g)^2) / n from the units'
    totals y_g of m_g values (ratio-estimator linearisation, CR1), clipped to [0, 1]."""
    sums: dict[Any, list[float]] = {}
    for i, value in enumerate(values):
        sums.setdefault(i if clusters is None else clusters[i], [0.0, 0.0])
        sums[i if clusters is None else clusters[i]][0] += value
        sums[i if clusters is None else clusters[i]][1] += 1
    k, n = len(sums), len(values)
    if k < 2:
        return None
    mean = sum(values) / n
    half = aggregate.t975(k - 1) * math.sqrt(k / (k - 1) * sum((y - mean * m) ** 2 for y, m in sums.values())) / n
    return [max(0.0, mean - half), min(1.0, mean + half)]


def coverage(images: int, share: float, rho: float, datasets: int, rng: np.random.Generator,
             draw: Callable[[np.random.Generator, float, int], list[float]],
             intervals: dict[str, Interval], clustered: bool = True) -> dict[str, tuple[float, float]]:
    """For each of `intervals`: the share of `datasets` data sets whose 95% interval holds `share`, and the mean
    width (no interval: not held, width 0); "ideal": (0, 2 x 1.96 x the standard deviation of the mean). Without
    `clustered`, each image has one question and the intervals get no clusters (independent samples)."""
    a, b = share * (1 - rho) / rho, (1 - share) * (1 - rho) / rho
    held = dict.fromkeys(intervals, 0)
    width = dict.fromkeys(intervals, 0.0)
    estimates = []
    for _ in range(datasets):
        sizes = rng.integers(1, 7, size=images) if clustered else np.ones(images, dtype=int)
        chances = rng.beta(a, b, size=images)
        values: list[float] = []
        clusters: list[int] = []
        for image, (size, chance) in enumerate(zip(sizes, chances)):
            values += draw(rng, chance, int(size))
            clusters += [image] * int(size)
        estimates.append(sum(values) / len(values))
        for name, interval in intervals.items():
            if (ends := interval(values, clusters if clustered else None)) is not None:
                held[name] += ends[0] <= share <= ends[1]
                width[name] += ends[1] - ends[0]
    out = {name: (held[name] / datasets, width[name] / datasets) for name in intervals}
    out["ideal"] = (0.0, 2 * aggregate.Z95 * float(np.std(estimates)))
    return out


MEAN_CANDIDATES: dict[str, Interval] = {
    "expanded": aggregate.bootstrap_mean_interval,
    "cluster-robust t": cluster_robust_t,
    "bootstrap-t [0,1]": lambda values, clusters: aggregate.bootstrap_t_mean_interval(values, clusters, (0.0, 1.0)),
    "bootstrap-t [min,max]": lambda values, clusters: aggregate.bootstrap_t_mean_interval(values, clusters),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=2000, help="data sets per setting (default 2000)")
    parser.add_argument("--images", type=int, nargs="+", default=[5, 10, 20, 50, 200])
    parser.add_argument("--samples", type=int, nargs="+", default=[5, 10, 20], help="independent samples (means)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    wilson = {"t (harness)": aggregate.cluster_wilson_interval,
              "z = 1.96": with_stand_in(aggregate.cluster_wilson_interval, "t975", lambda df: aggregate.Z95)}
    print(f"{'images':>6} {'share':>5} {'rho':>4} {'t (harness)':>11} {'z = 1.96':>9}")
    for images in args.images:
        for share in (0.3, 0.7):
            for rho in (0.3, 0.5):
                got = coverage(images, share, rho, args.datasets, rng, verdicts, wilson)
                print(f"{images:>6} {share:>5} {rho:>4} {got['t (harness)'][0]:>11.3f} {got['z = 1.96'][0]:>9.3f}",
                      flush=True)
    print("\nmean of scores in [0, 1]: coverage / mean width\n" + f"{'units':>9} {'share':>5} {'rho':>4} "
          + " ".join(f"{name:>21}" for name in MEAN_CANDIDATES) + f" {'ideal width':>11}")
    settings = [(k, True) for k in args.images if k <= 50] + [(k, False) for k in args.samples]
    for units, clustered in settings:
        for share in (0.3, 0.7, 0.1):
            for rho in (0.3, 0.5):
                got = coverage(units, share, rho, args.datasets // 2, rng, scores, MEAN_CANDIDATES, clustered)
                cells = " ".join(f"{got[name][0]:>13.3f} / {got[name][1]:.3f}" for name in MEAN_CANDIDATES)
                label = f"{units} img" if clustered else f"{units} ind"
                print(f"{label:>9} {share:>5} {rho:>4} {cells} {got['ideal'][1]:>11.3f}", flush=True)


if __name__ == "__main__":
    main()
