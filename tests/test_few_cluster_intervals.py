"""A mean over questions grouped into few images (a breakdown slice of 5-15 images) gets the studentized cluster
bootstrap (`cluster-bootstrap-t-mean`): the expanded percentile bootstrap never leaves the range of the images'
means and covered 0.68-0.91 with 5 images (benchmarks/interval_coverage.py). From 30 images on, the interval and its
method are the ones results were scored with before (`cluster-bootstrap-mean-expanded`)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from harness.aggregate import CI_METHODS, summarize_slice
from harness.judge_api import JudgeOptions, JudgePlugin


class RecallJudge(JudgePlugin):
    """A per-sample recall in [0, 1] (`unit_metrics`) and an answer length in words (any value)."""

    id = "test-recall"
    task_kinds = ("vqa",)
    unit_metrics = ("recall",)

    def score(self, records):
        return [{"metrics": {"recall": r["recall"], "words": r["words"]}} for r in records]


def records_on(images: int, recall: list[float], words: list[float] | None = None) -> list[dict]:
    """Questions in id order, question i on image i % images (the images first appear in order 0, 1, ...)."""
    return [{"id": f"q{i:03d}", "image": f"img{i % images:02d}", "recall": value,
             "words": (words or recall)[i]} for i, value in enumerate(recall)]


def studentized_ends(values: list[float], images: list[str], bounds: tuple[float, float]) -> list[float]:
    """The 95% bootstrap-t interval as CI_METHODS spells it out, computed here without numpy except for the seeded
    draws of the images resampled (numpy default_rng(0), as results.json names it)."""
    import numpy as np

    totals: dict[str, list[float]] = {}  # image -> [sum of values, number of values], in order of first appearance
    for value, image in zip(values, images):
        totals.setdefault(image, [0.0, 0.0])
        totals[image][0] += value
        totals[image][1] += 1
    units = list(totals.values())
    k = len(units)

    def mean_and_se(drawn: list[list[float]]) -> tuple[float, float]:
        n = sum(m for _, m in drawn)
        mean = sum(y for y, _ in drawn) / n
        return mean, math.sqrt(k / (k - 1) * sum((y - mean * m) ** 2 for y, m in drawn)) / n

    mean, se = mean_and_se(units)
    t: list[float] = []
    for row in np.random.default_rng(0).integers(0, k, size=(1000, k), dtype=np.int32).tolist():
        drawn_mean, drawn_se = mean_and_se([units[i] for i in row])
        if drawn_se > 1e-12 * se:
            t.append((drawn_mean - mean) / drawn_se)
        elif abs(drawn_mean - mean) > 1e-12 * se:  # one image drawn k times: no spread of its own
            t.append(math.copysign(math.inf, drawn_mean - mean))
    t.sort()
    t_low, t_high = t[int(0.025 * (len(t) - 1))], t[math.ceil(0.975 * (len(t) - 1))]
    return [max(bounds[0], mean - se * t_high), min(bounds[1], mean - se * t_low)]


def summarized(records: list[dict]) -> dict:
    judge = RecallJudge(JudgeOptions(task_kind="vqa"))
    return summarize_slice(judge, records, judge.score(records), cluster_key="image")


def test_a_mean_over_few_images_is_the_studentized_cluster_bootstrap_within_the_metric_range():
    recall = [0.84, 0.92, 0.95, 0.87, 0.94, 0.9, 0.98, 0.99, 0.99, 0.86, 0.88, 0.97, 0.98, 0.63, 0.93, 0.9, 0.77, 0.72]
    words = [10 * value for value in recall]  # an answer length in words: no range declared
    records = records_on(6, recall, words)
    metrics = summarized(records)
    images = [r["image"] for r in records]
    got = metrics["recall"]
    assert got["ci_method"] == "cluster-bootstrap-t-mean" and got["n"] == 18
    unbounded = studentized_ends(recall, images, (-math.inf, math.inf))
    assert unbounded[1] > 1.0  # mean - SE t_lo: a recall above 1, impossible
    assert got["ci95"] == pytest.approx([unbounded[0], 1.0], abs=1e-12)
    assert 0.0 < got["ci95"][0] < got["value"] < got["ci95"][1] == 1.0
    length = metrics["words"]  # the smallest and largest length bound it
    assert length["ci_method"] == "cluster-bootstrap-t-mean"
    assert length["ci95"] == pytest.approx(studentized_ends(words, images, (min(words), max(words))), abs=1e-12)
    assert min(words) < length["ci95"][0] < length["value"] < length["ci95"][1] == max(words)
    assert "bootstrap-t" in CI_METHODS["cluster-bootstrap-t-mean"] and "default_rng(0)" in \
        CI_METHODS["cluster-bootstrap-t-mean"]
    shuffled = random.Random(5).sample(records, len(records))  # the file's line order moves nothing
    assert summarized(shuffled)["recall"] == got
    alike = summarized(records_on(5, [0.5, 0.4, 0.6, 0.2, 0.3] * 2 + [0.5, 0.6, 0.4, 0.8, 0.7] * 2))["recall"]
    assert alike["ci95"] is None and alike["ci_method"] is None  # each image's recall averages 0.5: no spread


def test_from_30_images_the_interval_is_the_one_scored_before():
    recall = [((7 * i) % 11) / 10 for i in range(75)]
    at_30 = summarized(records_on(30, recall))["recall"]
    assert at_30["ci_method"] == "cluster-bootstrap-mean-expanded"
    assert at_30["ci95"] == pytest.approx([0.40261370645807, 0.6006879747828632], abs=1e-12)  # as before this
    at_29 = summarized(records_on(29, recall))["recall"]
    assert at_29["ci_method"] == "cluster-bootstrap-t-mean"


def test_a_run_on_few_images_records_publishes_and_tables_the_method_spelt_out(tmp_path, shared_data):
    """VQA-RAD's first 40 test questions are on 15 images: the token recall's interval is the studentized cluster
    bootstrap in results.json (spelt out in `ci_methods`), the leaderboard and `harness table`'s footnote."""
    def harness(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc

    out = tmp_path / "run"
    harness("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(shared_data / "vqa-rad"), "--judge",
            "exact:multimedeval", "--limit", "40", "--output", str(out), "--no-progress")
    results = json.loads((out / "results.json").read_text())
    recall = results["judges"][0]["metrics"]["recall"]
    assert recall["ci_method"] == "cluster-bootstrap-t-mean" and 0.0 <= recall["ci95"][0] < recall["ci95"][1] <= 1.0
    assert results["ci_methods"]["cluster-bootstrap-t-mean"] == CI_METHODS["cluster-bootstrap-t-mean"]
    harness("publish", str(out), "-o", str(tmp_path / "board.json"))
    board = json.loads((tmp_path / "board.json").read_text())
    assert board["rows"][0]["metrics"]["recall"]["ci_method"] == "cluster-bootstrap-t-mean"
    table = harness("table", str(tmp_path / "board.json"), "--metric", "recall").stdout
    assert "cluster-bootstrap-t-mean: studentized (bootstrap-t) bootstrap of the mean over fewer than 30" in table
