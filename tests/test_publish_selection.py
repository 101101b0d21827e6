"""`harness publish` keys rows by split and prompt variant too; a partial run never replaces a complete one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.results import validate

RUNNER = Path(__file__).with_name("run_harness.py")
REPO_ROOT = Path(__file__).resolve().parents[1]


def harness(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True,
                          env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    return proc


def run_prior(out: Path, *extra: str) -> Path:
    harness("run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--output", str(out),
            "--no-progress", *extra)
    return out / "results.json"


def rows(board: Path) -> list[tuple]:
    return [(r["split"], r["prompt_variant"], r["n"], r["n_total"], r["partial"])
            for r in json.loads(board.read_text())["rows"]]


def test_partial_runs_never_replace_complete_ones(tmp_path):
    board = tmp_path / "leaderboard.json"
    smoke_first = run_prior(tmp_path / "smoke-first", "--limit", "5")
    full = run_prior(tmp_path / "full")
    smoke = run_prior(tmp_path / "smoke", "--limit", "5")  # same run id, newest, partial
    smoke_other = run_prior(tmp_path / "smoke-other", "--limit", "5", "--model-args", "by=none")
    train = run_prior(tmp_path / "train", "--split", "train", "--limit", "20")

    # A partial row alone is published, with a notice.
    proc = harness("publish", str(smoke_first), "-o", str(board))
    assert rows(board) == [("test", "default", 5, 361, True)]
    assert "partial row kept (no complete run of its configuration yet)" in proc.stderr and "n=5 of 361" in proc.stderr

    # The complete run replaces it; the newer partial run of the same key is skipped, with a notice.
    proc = harness("publish", str(full), str(smoke), "-o", str(board))
    assert rows(board) == [("test", "default", 361, 361, False)]
    (row,) = json.loads(board.read_text())["rows"]
    assert row["provenance"]["results_file"] == str(full)
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("note: skipped")]
    assert len(skipped) == 1 and "n=5 of 361" in skipped[0]
    assert skipped[0].endswith(f"keeps the complete results of {full}")

    # The same two runs given the other way round (partial first) into a new board: the same notice.
    proc = harness("publish", str(smoke), str(full), "-o", str(tmp_path / "other.json"))
    assert rows(tmp_path / "other.json") == [("test", "default", 361, 361, False)]
    assert [line for line in proc.stderr.splitlines() if line.startswith("note: skipped")] == skipped

    # Another configuration and another split are rows of their own, not replacements.
    proc = harness("publish", str(smoke_other), str(train), "-o", str(board))
    assert sorted(rows(board)) == [("test", "default", 5, 361, True), ("test", "default", 361, 361, False),
                                   ("train", "default", 20, rows(board)[-1][3], True)]
    assert rows(board)[-1][3] > 20
    assert proc.stderr.count("partial row kept") == 2

    # Among equally complete rows the newest wins, whatever the order given (runs seconds apart).
    newer = run_prior(tmp_path / "full-again")
    assert json.loads(newer.read_text())["created"] > json.loads(full.read_text())["created"]
    harness("publish", str(newer), str(full), "-o", str(board))
    test_rows = [r for r in json.loads(board.read_text())["rows"] if r["model"] == "prior" and r["split"] == "test"]
    assert [r["provenance"]["results_file"] for r in test_rows] == [str(newer)]
    validate(json.loads(board.read_text()), "leaderboard")

    # Every skipped row names the results kept in the end; a file reached twice is read once and is no news.
    run_id = json.loads(newer.read_text())["run_id"]  # the same run id: --limit and the time are not part of it
    partial = (f"prior on phantom-vqa (test, source embedded, prompt default) judge exact:pefomed, n=5 of 361, "
               f"run {run_id}")
    complete = partial.replace("n=5 of 361", "n=361 of 361")
    proc = harness("publish", str(smoke), str(full), str(newer), str(newer.parent), "-o", str(tmp_path / "3.json"))
    skipped = sorted(line for line in proc.stderr.splitlines() if line.startswith("note: skipped"))
    assert skipped == sorted([f"note: skipped {line}" for line in (
        f"{partial} ({smoke}): partial; the leaderboard keeps the complete results of {newer}",
        f"{complete} ({full}): older than the kept {newer}")]), proc.stderr


def test_committed_leaderboard_is_valid():
    validate(json.loads((REPO_ROOT / "leaderboard" / "leaderboard.json").read_text()), "leaderboard")


def test_a_rescore_with_another_judge_does_not_make_the_first_judges_rows_newer(tmp_path):
    """results.json's `created` changes whenever a judge is added: publishing took it as the age of every judge's
    row, so an older run re-scored with llava-med beat a newer run's pefomed row with its old numbers."""
    import time

    older = run_prior(tmp_path / "older")
    time.sleep(1.1)
    newer = run_prior(tmp_path / "newer")
    time.sleep(1.1)
    harness("score", str(older.parent), "--judge", "exact:llava-med")
    board = tmp_path / "board.json"
    harness("publish", str(older), str(newer), "-o", str(board))
    kept = {r["convention"]: r["provenance"]["results_file"] for r in json.loads(board.read_text())["rows"]}
    assert kept == {"pefomed": str(newer), "llava-med": str(older)}


def test_of_two_partial_rows_the_larger_is_kept_and_ties_never_go_by_input_order(tmp_path):
    """A newer --limit 5 run replaced a --limit 20 one (150 samples fewer behind the published number); rows scored
    in the same second were kept by the order the files were given."""
    from harness.publish import prefer

    def row(n: int, created: str, path: str) -> dict:
        return {"partial": True, "n": n, "provenance": {"created": created, "results_file": path}}

    large, small = row(20, "2026-11-24T10:00:00+00:00", "a"), row(5, "2026-11-24T11:00:00+00:00", "b")
    assert not prefer(small, large) and prefer(large, small)
    first, second = row(20, "2026-11-24T10:00:00+00:00", "x"), row(20, "2026-11-24T10:00:00+00:00", "y")
    assert prefer(second, first) and not prefer(first, second)  # the same winner in either order
    twenty = run_prior(tmp_path / "twenty", "--limit", "20")
    five = run_prior(tmp_path / "five", "--limit", "5")
    board = tmp_path / "board.json"
    proc = harness("publish", str(twenty), str(five), "-o", str(board))
    assert [r["n"] for r in json.loads(board.read_text())["rows"]] == [20]
    assert "partial on fewer samples (5) than the kept" in proc.stderr
