"""Samples that are not independent are resampled together: IU-Xray scored per image (PeFoMed's way) gives each
study's report twice, and its confidence intervals must be as wide as the per-study ones, not narrower."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        assert image[name]["ci_method"] == "cluster-bootstrap-corpus"
        assert study[name]["ci_method"] == "bootstrap-corpus"
        width = image[name]["ci95"][1] - image[name]["ci95"][0]
        assert width >= 0.8 * (study[name]["ci95"][1] - study[name]["ci95"][0]), name
    entry = per_study["judges"][0]  # what each figure is stays beside it (describe()'s "metrics" was overwritten)
    assert entry["metric_definitions"]["Bleu_1"].startswith("BLEU-1, corpus level")
    assert set(entry["metric_definitions"]) == set(entry["metrics"]), set(entry["metrics"])
