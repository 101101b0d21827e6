"""Failed samples are never hidden: the summary says how many and why, and a run in which every sample failed
ends with an error line and a non-zero exit (its results are still saved, and a rerun retries them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from format_writers import cases, write_vqa_rad_official

IMAGES = "VQA_RAD Image Folder"


def run(data_dir: Path, runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "vqa-rad",
                           "--data-dir", str(data_dir), "--judge", "exact", "--runs-dir", str(runs), "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def test_some_failed_samples_are_counted_and_named(tmp_path):
    write_vqa_rad_official(tmp_path / "data", cases(4, seed=7))
    broken = sorted((tmp_path / "data" / IMAGES).iterdir())[0]
    good = broken.read_bytes()
    broken.write_bytes(b"not an image")
    proc = run(tmp_path / "data", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    first = next((tmp_path / "runs").glob("*/results.json"))
    results = json.loads(first.read_text())
    failed, n = results["errors"]["count"], results["task"]["n"]
    assert 0 < failed < n
    assert f"{failed} of {n} sample(s) failed and are not in the metrics (first: " in proc.stdout
    # an image that failed is part of the data's fingerprint: the advice says that repairing it starts a new run
    assert broken.name in proc.stdout and "run the same command again: the data (and its fingerprint)" in proc.stdout
    broken.write_bytes(good)
    again = run(tmp_path / "data", tmp_path / "runs")
    assert again.returncode == 0 and "sample(s) failed" not in again.stdout, again.stdout
    assert sorted((tmp_path / "runs").glob("*/results.json")) == sorted([first, Path(again.stdout.split(
        "results: ")[1].strip())]), "the repaired data ran in a run folder of its own, as the advice said"


def test_a_run_in_which_every_sample_failed_exits_non_zero(tmp_path):
    write_vqa_rad_official(tmp_path / "data", cases(4, seed=7))
    for image in (tmp_path / "data" / IMAGES).iterdir():
        image.write_bytes(b"not an image")
    proc = run(tmp_path / "data", tmp_path / "runs")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: all ") and "samples failed, so there is nothing to score" in line
    assert "not an image file Pillow can read" in line and "BytesIO" not in line
    assert "results.json" in proc.stdout  # what was recorded is kept
    rescored = subprocess.run([sys.executable, "-m", "harness", "score", str(next((tmp_path / "runs").iterdir())),
                               "--judge", "exact"], capture_output=True, text=True, timeout=300)
    assert rescored.returncode == 2 and "samples failed, so there is nothing to score" in rescored.stderr
