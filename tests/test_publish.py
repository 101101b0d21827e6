"""`harness publish`: a schema-checked leaderboard with provenance; different data versions never mix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


def make_run(runs: Path, *extra: str) -> Path:
    proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "20", "--runs-dir", str(runs),
               "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr
    return runs


def test_publish_rows_per_model_task_judge_convention(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    assert cli("score", str(next(runs.iterdir())), "--judge", "exact:llava-med").returncode == 0
    board_path = tmp_path / "board" / "leaderboard.json"
    proc = cli("publish", str(runs), "-o", str(board_path))
    assert proc.returncode == 0, proc.stderr
    board = json.loads(board_path.read_text())
    assert [(r["model"], r["task"], r["judge"], r["convention"]) for r in board["rows"]] == [
        ("prior", "phantom-vqa", "exact", "llava-med"),
        ("prior", "phantom-vqa", "exact", "pefomed"),
    ]
    row = board["rows"][1]
    assert row["n"] == 20 and row["fingerprint"].startswith("sha256:")
    assert row["provenance"]["run_id"].startswith("phantom-vqa--prior--")
    # publishing again merges instead of duplicating
    assert cli("publish", str(runs), "-o", str(board_path)).returncode == 0
    assert len(json.loads(board_path.read_text())["rows"]) == 2


def test_publish_refuses_mixed_dataset_fingerprints(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    (run_dir,) = list(runs.iterdir())
    other = tmp_path / "other" / "results.json"
    other.parent.mkdir()
    data = json.loads((run_dir / "results.json").read_text())
    data["task"]["fingerprint"] = "sha256:" + "0" * 32
    data["model"]["label"] = "another-model"
    other.write_text(json.dumps(data))
    proc = cli("publish", str(runs), str(other), "-o", str(tmp_path / "lb.json"))
    assert proc.returncode == 2
    assert "two dataset fingerprints" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "lb.json").exists()


def test_publish_rejects_a_file_that_is_not_results(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"schema_version": "1.0"}))
    proc = cli("publish", str(bad), "-o", str(tmp_path / "lb.json"))
    assert proc.returncode == 2 and "not a valid results file" in proc.stderr
