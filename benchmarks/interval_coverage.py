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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import aggregate  # noqa: E402


def verdicts(rng: np.random.Generator, chance: float, size: int) -> list[float]:
    """0/1 verdicts of `size` questions on an image answered right with probability `chance`."""
    return (rng.random(size) < chance).astype(float).tolist()


def scores(rng: np.random.Generator, chance: float, size: int) -> list[float]:
    """Scores in [0, 1] of `size` questions on an image, Beta around its `chance`."""
    return rng.beta(chance * 4 + 1e-3, (1 - chance) * 4 + 1e-3, size=size).tolist()


def coverage(images: int, share: float, rho: float, datasets: int, rng: np.random.Generator,
             draw: Callable[[np.random.Generator, float, int], list[float]],
             interval: Callable[[list[float], list[int]], list[float] | None],
             before: tuple[str, Callable[..., Any]]) -> tuple[float, float]:
    """The share of `datasets` data sets whose 95% `interval` holds `share`: the harness's, and the same with
    aggregate's function `before[0]` replaced by `before[1]` (the interval before)."""
    a, b = share * (1 - rho) / rho, (1 - share) * (1 - rho) / rho
    now = then = 0
    for _ in range(datasets):
        sizes = rng.integers(1, 7, size=images)
        chances = rng.beta(a, b, size=images)
        values: list[float] = []
        clusters: list[int] = []
        for image, (size, chance) in enumerate(zip(sizes, chances)):
            values += draw(rng, chance, int(size))
            clusters += [image] * int(size)
        low, high = interval(values, clusters)
        now += low <= share <= high
        name, stand_in = before
        saved = getattr(aggregate, name)
        setattr(aggregate, name, stand_in)
        try:
            low, high = interval(values, clusters)
        finally:
            setattr(aggregate, name, saved)
        then += low <= share <= high
    return now / datasets, then / datasets


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
                t, z = coverage(images, share, rho, args.datasets, rng, verdicts, aggregate.cluster_wilson_interval,
                                ("t975", lambda df: aggregate.Z95))  # before: z = 1.96
                print(f"{images:>6} {share:>5} {rho:>4} {t:>11.3f} {z:>9.3f}", flush=True)
    print(f"\nmean of scores in [0, 1]\n{'images':>6} {'share':>5} {'rho':>4} {'expanded (harness)':>18} "
          f"{'plain percentile':>16}")
    for images in args.images:
        for share in (0.3, 0.7):
            for rho in (0.3, 0.5):
                expanded, plain = coverage(images, share, rho, args.datasets // 2, rng, scores,
                                           aggregate.bootstrap_mean_interval,
                                           ("expanded_quantiles", lambda units: (0.025, 0.975)))  # before: plain
                print(f"{images:>6} {share:>5} {rho:>4} {expanded:>18.3f} {plain:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
