"""Samples that are not independent are resampled together: IU-Xray scored per image (PeFoMed's way) gives each
study's report twice, and its confidence intervals must be as wide as the per-study ones, not narrower."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from format_writers import cases, write_r2gen


def run(data: Path, runs: Path, source: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "iu-xray",
                           "--source", source, "--data-dir", str(data), "--judge", "lexical", "--output",
                           str(runs / source), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"split 'test': expected {590 if source == 'r2gen' else 1180} samples" in proc.stderr  # a tiny copy
    return json.loads((runs / source / "results.json").read_text())


def test_per_image_samples_are_resampled_by_study(tmp_path):
    write_r2gen(tmp_path / "data", cases(36, seed=11))
    per_study = run(tmp_path / "data", tmp_path / "runs", "r2gen")
    per_image = run(tmp_path / "data", tmp_path / "runs", "r2gen-per-image")
    assert per_image["task"]["cluster_by"] == "study_id" and per_study["task"]["cluster_by"] is None
    assert per_image["task"]["n"] == 2 * per_study["task"]["n"] == 24
    assert "expected 1180 samples" in per_image["task"]["size_note"]
    study, image = per_study["judges"][0]["metrics"], per_image["judges"][0]["metrics"]
    for name in ("Bleu_1", "ROUGE_L", "CIDEr"):
        assert image[name]["ci_method"] == "cluster-bootstrap-corpus-expanded"
        assert study[name]["ci_method"] == "bootstrap-corpus-expanded"
        width = image[name]["ci95"][1] - image[name]["ci95"][0]
        assert width >= 0.8 * (study[name]["ci95"][1] - study[name]["ci95"][0]), name
    entry = per_study["judges"][0]  # what each figure is stays beside it (describe()'s "metrics" was overwritten)
    assert entry["metric_definitions"]["Bleu_1"].startswith("BLEU-1, corpus level")
    assert set(entry["metric_definitions"]) == set(entry["metrics"]), set(entry["metrics"])


def test_questions_on_one_image_are_resampled_together(tmp_path, shared_data):
    """VQA-RAD asks its 451 test questions about 203 images: the interval counts images (the record's `images`):
    Wilson's on the effective sample size, wider than Wilson's on the questions as independent."""
    from harness.aggregate import t975, wilson_interval

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "vqa-rad",
                           "--data-dir", str(shared_data / "vqa-rad"), "--judge", "exact", "--output", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["cluster_by"] == "images"
    metric = results["judges"][0]["metrics"]["accuracy"]
    assert metric["ci_method"] == "cluster-wilson-t"
    records = {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    scores = {r["id"]: r["judges"]["exact/pefomed"]["metrics"]["accuracy"]
              for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    ids = sorted(scores)
    images = [tuple(records[i]["images"]) for i in ids]
    assert len(ids) == 451 and len(set(images)) == 203
    values = [scores[i] for i in ids]
    # the design effect computed here: between-image variance of the proportion over the binomial variance
    n, share = len(values), sum(values) / len(values)
    per_image: dict[tuple, list[float]] = {}
    for value, image in zip(values, images):
        per_image.setdefault(image, []).append(value)
    between = 203 / 202 * sum((sum(v) - share * len(v)) ** 2 for v in per_image.values()) / n**2
    effective = n / (between / (share * (1 - share) / n))
    assert metric["ci95"] == pytest.approx(wilson_interval(share * effective, effective, t975(202)))
    low, high = wilson_interval(sum(values), len(values))
    assert metric["ci95"][1] - metric["ci95"][0] > 1.2 * (high - low)
