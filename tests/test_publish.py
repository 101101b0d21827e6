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
    assert row["n"] == 20 and row["fingerprint"].startswith("v2-sha256:")
    assert row["provenance"]["run_id"].startswith("phantom-vqa--prior--")
    # publishing again merges instead of duplicating, and says nothing of the rows it already has
    again = cli("publish", str(runs), "-o", str(board_path))
    assert again.returncode == 0 and "skipped" not in again.stderr, again.stderr
    assert len(json.loads(board_path.read_text())["rows"]) == 2
    # the same folder by another path (absolute, or relative from elsewhere) is the same run
    other = tmp_path / "other.json"
    by_rel = subprocess.run([sys.executable, "-m", "harness", "publish", "runs", "-o", str(other)],
                            capture_output=True, text=True, cwd=tmp_path)
    by_abs = cli("publish", str(runs), "-o", str(other))
    assert by_rel.returncode == by_abs.returncode == 0 and "skipped" not in by_abs.stderr, by_abs.stderr
    assert len(json.loads(board_path.read_text())["rows"]) == 2


def test_publish_refuses_mixed_dataset_fingerprints(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    (run_dir,) = list(runs.iterdir())
    other = tmp_path / "other" / "results.json"
    other.parent.mkdir()
    data = json.loads((run_dir / "results.json").read_text())
    data["task"]["fingerprint"] = "v2-sha256:" + "0" * 32
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


def test_publish_names_a_results_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_bytes(b'{\n  "schema_version": "1.0",\n  "note": "caf\xe9"\n}\n')
    proc = cli("publish", str(bad), "-o", str(tmp_path / "lb.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    offset = bad.read_bytes().index(0xE9)
    assert proc.stderr == f"error: {bad}:3: not UTF-8 text (byte 0xe9 at offset {offset}); save it as UTF-8\n"
    assert not (tmp_path / "lb.json").exists()


def _variant(run_dir: Path, dest: Path, **changes) -> Path:
    """A copy of a run's results.json with some task fields, the creation time or the error count changed."""
    data = json.loads((run_dir / "results.json").read_text())
    for key, value in changes.items():
        if key == "created":  # written then: each judge scored then too (its row's age on a leaderboard)
            data["created"] = value
            for judge in data["judges"]:
                judge["scored_at"] = value
        elif key == "errors":
            data["errors"] = {"count": value, "samples": [{"id": f"x{i}", "error": "HTTP 500"} for i in range(value)]}
        elif key == "source":
            data["task"]["source"]["name"] = value
        else:
            data["task"][key] = value
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(data))
    return dest


def test_sources_get_their_own_rows_and_open_closed_breakdowns(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    (run_dir,) = list(runs.iterdir())
    per_image = _variant(run_dir, tmp_path / "per-image" / "results.json", source="embedded-per-image",
                         fingerprint="v2-sha256:" + "1" * 32)
    board_path = tmp_path / "lb.json"
    proc = cli("publish", str(runs), str(per_image), "-o", str(board_path))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(board_path.read_text())["rows"]
    assert sorted(r["source"] for r in rows) == ["embedded", "embedded-per-image"]
    closed = rows[0]["breakdowns"]["answer_type"]["CLOSED"]["accuracy"]
    assert 0 < closed["n"] < rows[0]["n"] and closed["ci95"] is not None


def test_a_newer_run_on_other_data_does_not_silently_replace_the_row(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    (run_dir,) = list(runs.iterdir())
    newer = _variant(run_dir, tmp_path / "newer" / "results.json", fingerprint="v2-sha256:" + "2" * 32,
                     created="2999-01-01T00:00:00+00:00")
    proc = cli("publish", str(runs), str(newer), "-o", str(tmp_path / "lb.json"))
    assert proc.returncode == 2 and "two dataset fingerprints" in proc.stderr
    assert not (tmp_path / "lb.json").exists()


def test_a_row_with_failed_samples_is_flagged(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    (run_dir,) = list(runs.iterdir())
    failing = _variant(run_dir, tmp_path / "failing" / "results.json", errors=3, created="2999-01-01T00:00:00+00:00")
    board_path = tmp_path / "lb.json"
    proc = cli("publish", str(runs), str(failing), "-o", str(board_path))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(board_path.read_text())["rows"]
    assert row["errors"] == 3 and row["provenance"]["results_file"] == str(failing)  # the newest wins
    assert "row with 3 failed sample(s), not in its metrics (re-run to retry them)" in proc.stderr


def test_rows_from_an_older_fingerprint_version_are_explained(tmp_path):
    runs = make_run(tmp_path / "runs", "--judge", "exact")
    (run_dir,) = list(runs.iterdir())
    old = _variant(run_dir, tmp_path / "old" / "results.json", fingerprint="sha256:" + "3" * 32)
    proc = cli("publish", str(runs), str(old), "-o", str(tmp_path / "lb.json"))
    assert proc.returncode == 2 and "two dataset fingerprints" in proc.stderr
    assert "older harness (fingerprint v1; v2 also hashes the labels)" in proc.stderr
