"""Coverage and width of `harness compare`'s 95% interval of B - A over questions grouped by image, by simulation.

Two runs answer the same questions about `images` images (1-6 questions each). Each image has a chance of a right
answer for run A (Beta with mean `share` and intra-image correlation `RHO`, as benchmarks/interval_coverage.py) and
one for run B (Beta with mean `share + delta`, the same `RHO`), the two tied by a Gaussian copula (correlation
`COPULA`: an image hard for A is mostly hard for B), so the true difference B - A is `delta`. On each question the
two runs share their uniform draw with probability `SHARED` (the same question is easy or hard for both): 0/1
verdicts (right when the draw is below the chance) or scores in [0, 1] (the draw's Beta quantile around the chance).
For every setting, `--datasets` pairs of runs are drawn and, per candidate interval, the share of them whose
interval holds `delta` and its mean width are printed:

- harness: what `harness compare` records today for a per-sample mean with `cluster_by` (`paired_stats.
  paired_differences` over `judge_api.mean_aggregator`, the code compare calls: `paired-cluster-bootstrap-expanded`,
  1,000 resamples);
- bootstrap-t [-1,1]: the studentized cluster bootstrap of the mean of the per-question differences b_i - a_i
  (`aggregate.bootstrap_t_mean_interval`, as results.json's `cluster-bootstrap-t-mean`), clipped to [-1, 1];
- bootstrap-t [min,max]: the same clipped to the smallest and largest difference.

"ideal" is the width of +-1.96 times the true standard deviation of the difference (known only here).

    .venv/bin/python benchmarks/paired_interval_coverage.py                 # about 6 min on the 2-core CPU machine
    .venv/bin/python benchmarks/paired_interval_coverage.py --datasets 100  # quicker, noisier
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import aggregate, paired_stats  # noqa: E402
from harness.judge_api import mean_aggregator  # noqa: E402

COPULA, SHARED, RHO = 0.7, 0.5, 0.3
Interval = Callable[[list[float], list[float], list[int]], "list[float] | None"]


def harness_interval(a: list[float], b: list[float], clusters: list[int]) -> list[float] | None:
    """`harness compare`'s interval of B - A for a per-sample mean (rows of A, then B's, as compare builds them)."""
    rows = [{"metrics": {"m": v}} for v in a + b]
    got = paired_stats.paired_differences(mean_aggregator(rows), len(a), range(len(a)), clusters, ["m"])
    return got["m"]["ci95"]


CANDIDATES: dict[str, Interval] = {
    "harness": harness_interval,
    "bootstrap-t [-1,1]": lambda a, b, clusters: aggregate.bootstrap_t_mean_interval(
        [y - x for x, y in zip(a, b)], clusters, (-1.0, 1.0)),
    "bootstrap-t [min,max]": lambda a, b, clusters: aggregate.bootstrap_t_mean_interval(
        [y - x for x, y in zip(a, b)], clusters),
}


def beta_parameters(share: float, rho: float) -> tuple[float, float]:
    return share * (1 - rho) / rho, (1 - share) * (1 - rho) / rho


def paired_runs(rng: np.random.Generator, images: int, share: float, delta: float, rho: float,
                kind: str) -> tuple[list[float], list[float], list[int]]:
    """One pair of runs: A's and B's per-question values and each question's image."""
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, COPULA], [COPULA, 1.0]], size=images)
    chance_a = stats.beta.ppf(stats.norm.cdf(z[:, 0]), *beta_parameters(share, rho))
    chance_b = stats.beta.ppf(stats.norm.cdf(z[:, 1]), *beta_parameters(share + delta, rho))
    sizes = rng.integers(1, 7, size=images)
    clusters = np.repeat(np.arange(images), sizes)
    pa, pb = chance_a[clusters], chance_b[clusters]
    u = rng.random(len(clusters))
    v = np.where(rng.random(len(clusters)) < SHARED, u, rng.random(len(clusters)))
    if kind == "verdicts":
        a, b = (u < pa).astype(float), (v < pb).astype(float)
    else:  # scores: Beta around the chance, as interval_coverage.scores
        a = stats.beta.ppf(u, pa * 4 + 1e-3, (1 - pa) * 4 + 1e-3)
        b = stats.beta.ppf(v, pb * 4 + 1e-3, (1 - pb) * 4 + 1e-3)
    return a.tolist(), b.tolist(), clusters.tolist()


def coverage(images: int, share: float, delta: float, rho: float, kind: str, datasets: int,
             rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Per candidate: (share of `datasets` pairs of runs whose interval holds `delta`, mean width); no interval:
    not held, width 0. "ideal": (0, 2 x 1.96 x the standard deviation of B - A over the pairs)."""
    held = dict.fromkeys(CANDIDATES, 0)
    width = dict.fromkeys(CANDIDATES, 0.0)
    estimates = []
    for _ in range(datasets):
        a, b, clusters = paired_runs(rng, images, share, delta, rho, kind)
        estimates.append((sum(b) - sum(a)) / len(a))
        for name, interval in CANDIDATES.items():
            if (ends := interval(a, b, clusters)) is not None:
                held[name] += ends[0] - 1e-12 <= delta <= ends[1] + 1e-12
                width[name] += ends[1] - ends[0]
    out: dict[str, Any] = {name: (held[name] / datasets, width[name] / datasets) for name in CANDIDATES}
    out["ideal"] = (0.0, 2 * aggregate.Z95 * float(np.std(estimates)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=400, help="pairs of runs per setting (default 400)")
    parser.add_argument("--images", type=int, nargs="+", default=[5, 10, 20, 50])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("B - A: coverage / mean width\n" + f"{'kind':>8} {'images':>6} {'share A':>7} {'delta':>5} {'rho':>4} "
          + " ".join(f"{name:>21}" for name in CANDIDATES) + f" {'ideal width':>11}")
    for kind in ("verdicts", "scores"):
        for images in args.images:
            for share, delta in ((0.3, 0.0), (0.3, 0.1), (0.7, 0.1), (0.1, 0.1)):
                got = coverage(images, share, delta, RHO, kind, args.datasets, rng)
                cells = " ".join(f"{got[name][0]:>13.3f} / {got[name][1]:.3f}" for name in CANDIDATES)
                print(f"{kind:>8} {images:>6} {share:>7} {delta:>5} {RHO:>4} {cells} {got['ideal'][1]:>11.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
