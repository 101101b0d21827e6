"""Coverage of the harness's 95% intervals over questions grouped by image, by simulation.

Questions are asked about images: each image has its own chance of a right answer (Beta with mean `share` and
intra-image correlation `rho`), 1-6 questions each. For every setting, `--datasets` data sets are drawn and the
share of intervals that hold the true share is printed. First table: a proportion of 0/1 verdicts, the harness's
interval (`cluster-wilson-t`, Student's t on images - 1 degrees of freedom) and the same with z = 1.96 (the harness
before). Second table: a mean of scores in [0, 1] (each question's score Beta around its image's chance), the
harness's cluster bootstrap (`cluster-bootstrap-mean-expanded`) and the plain percentile one (before), on half as
many data sets. A good 95% interval covers about 0.95.

    .venv/bin/python benchmarks/interval_coverage.py                 # about a minute on one CPU core
    .venv/bin/python benchmarks/interval_coverage.py --datasets 500  # quicker, noisier
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import aggregate  # noqa: E402


def coverage(images: int, share: float, rho: float, datasets: int, rng: np.random.Generator) -> tuple[float, float]:
    a, b = share * (1 - rho) / rho, (1 - share) * (1 - rho) / rho
    with_t = with_z = 0
    for _ in range(datasets):
        sizes = rng.integers(1, 7, size=images)
        chances = rng.beta(a, b, size=images)
        values: list[float] = []
        clusters: list[int] = []
        for image, (size, chance) in enumerate(zip(sizes, chances)):
            values += (rng.random(size) < chance).astype(float).tolist()
            clusters += [image] * int(size)
        low, high = aggregate.cluster_wilson_interval(values, clusters)
        with_t += low <= share <= high
        saved = aggregate.t975
        aggregate.t975 = lambda df: aggregate.Z95  # the same interval with z = 1.96
        try:
            low, high = aggregate.cluster_wilson_interval(values, clusters)
        finally:
            aggregate.t975 = saved
        with_z += low <= share <= high
    return with_t / datasets, with_z / datasets


def mean_coverage(images: int, share: float, rho: float, datasets: int,
                  rng: np.random.Generator) -> tuple[float, float]:
    a, b = share * (1 - rho) / rho, (1 - share) * (1 - rho) / rho
    expanded = plain = 0
    for _ in range(datasets):
        sizes = rng.integers(1, 7, size=images)
        chances = rng.beta(a, b, size=images)
        values: list[float] = []
        clusters: list[int] = []
        for image, (size, chance) in enumerate(zip(sizes, chances)):
            values += rng.beta(chance * 4 + 1e-3, (1 - chance) * 4 + 1e-3, size=size).tolist()
            clusters += [image] * int(size)
        low, high = aggregate.bootstrap_mean_interval(values, clusters)
        expanded += low <= share <= high
        saved = aggregate.expanded_quantiles
        aggregate.expanded_quantiles = lambda units: (0.025, 0.975)  # the plain percentile interval
        try:
            low, high = aggregate.bootstrap_mean_interval(values, clusters)
        finally:
            aggregate.expanded_quantiles = saved
        plain += low <= share <= high
    return expanded / datasets, plain / datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=2000, help="data sets per setting (default 2000)")
    parser.add_argument("--images", type=int, nargs="+", default=[5, 10, 20, 50, 200])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'images':>6} {'share':>5} {'rho':>4} {'t (harness)':>11} {'z = 1.96':>9}")
    for images in args.images:
        for share in (0.3, 0.7):
            for rho in (0.3, 0.5):
                t, z = coverage(images, share, rho, args.datasets, rng)
                print(f"{images:>6} {share:>5} {rho:>4} {t:>11.3f} {z:>9.3f}", flush=True)
    print(f"\nmean of scores in [0, 1]\n{'images':>6} {'share':>5} {'rho':>4} {'expanded (harness)':>18} "
          f"{'plain percentile':>16}")
    for images in args.images:
        for share in (0.3, 0.7):
            for rho in (0.3, 0.5):
                expanded, plain = mean_coverage(images, share, rho, args.datasets // 2, rng)
                print(f"{images:>6} {share:>5} {rho:>4} {expanded:>18.3f} {plain:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
