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
    broken.write_bytes(b"not an image")
    proc = run(tmp_path / "data", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    failed, n = results["errors"]["count"], results["task"]["n"]
    assert 0 < failed < n
    assert f"{failed} of {n} sample(s) failed and are not in the metrics (first: " in proc.stdout
    assert broken.name in proc.stdout and "run the same command again to retry them" in proc.stdout


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
