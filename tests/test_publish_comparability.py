"""A leaderboard never merges or silently replaces rows whose numbers come from other settings that its visible
columns do not show (generation settings, the model's dtype), says what differs between rows that look alike,
flags samples a judge left unscored, and refuses a results file whose selection was edited to look complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("run_harness.py")


def harness(*args: str) -> subprocess.CompletedProcess:
    progress = ["--no-progress"] if args[0] in ("run", "score") else []
    return subprocess.run([sys.executable, str(RUNNER), *args, *progress], capture_output=True, text=True,
                          timeout=300)


def run(out: Path, *extra: str) -> None:
    proc = harness("run", "--model", "odd-outputs", "--model-args", "kind=none", "--task", "phantom-vqa", "--limit",
                   "8", "--output", str(out), "--judge", "exact", *extra)
    assert proc.returncode == 0, proc.stderr


def publish(board: Path, *runs: Path) -> subprocess.CompletedProcess:
    proc = harness("publish", *map(str, runs), "--output", str(board))
    assert proc.returncode == 0, proc.stderr
    return proc


def test_other_generation_settings_or_dtype_are_rows_of_their_own_with_a_note(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b", "--max-new-tokens", "3")
    run(tmp_path / "c", "--dtype", "bfloat16")
    board = tmp_path / "board.json"
    proc = publish(board, tmp_path / "a", tmp_path / "b", tmp_path / "c")
    rows = json.loads(board.read_text())["rows"]
    assert len(rows) == 3 and {r["model"] for r in rows} == {"odd-outputs[kind=none]"}  # none replaced another
    note = next(line for line in proc.stderr.splitlines() if "rows of odd-outputs" in line)
    assert note.startswith("note: 3 rows of ") and "max_new_tokens: 16 vs 3" in note and \
        "model identity (dtype: bfloat16 vs float32)" in note, note
    assert "skipped" not in proc.stderr and "replaced" not in proc.stderr


def test_rows_written_before_identities_were_recorded_merge_with_their_run(tmp_path):
    run(tmp_path / "a")
    board = tmp_path / "board.json"
    publish(board, tmp_path / "a")
    data = json.loads(board.read_text())
    for row in data["rows"]:
        del row["model_identity"], row["unscored"]  # as an older version wrote the leaderboard
    board.write_text(json.dumps(data))
    (tmp_path / "a").rename(tmp_path / "moved")  # its recorded results file is gone: the run id tells
    publish(board, tmp_path / "moved")
    (row,) = json.loads(board.read_text())["rows"]
    assert row["model_identity"] == {"dtype": "float32"}


def test_samples_a_judge_left_unscored_are_counted_and_noted(tmp_path):
    out = tmp_path / "a"
    run(out)
    assert harness("score", str(out), "--judge", "tolerance", "--judge-arg", "bad=none").returncode == 0
    proc = publish(tmp_path / "board.json", out)
    (row,) = [r for r in json.loads((tmp_path / "board.json").read_text())["rows"] if r["judge"] == "tolerance"]
    assert row["unscored"] == 1 and row["metrics"]["match"]["n"] == row["n"] - row["errors"] - 1
    assert any(line.startswith("note: row with 1 sample(s) its judge left unscored") and "judge tolerance" in line
               for line in proc.stderr.splitlines()), proc.stderr


def test_a_results_file_edited_to_look_complete_is_refused(tmp_path):
    out = tmp_path / "a"
    run(out)
    results = json.loads((out / "results.json").read_text())
    assert results["selection"]["partial"] is True
    results["selection"].update(partial=False, n_total=results["selection"]["n"])
    (out / "results.json").write_text(json.dumps(results))
    proc = harness("publish", str(out), "--output", str(tmp_path / "board.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "selection (n=8, n_total=8, partial=False) disagrees with task (n=8, n_total=361)" in proc.stderr
