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


def test_an_old_row_whose_identity_cannot_be_found_is_replaced_by_a_newer_run_of_its_configuration(tmp_path):
    run(tmp_path / "a")
    board = tmp_path / "board.json"
    publish(board, tmp_path / "a")
    data = json.loads(board.read_text())
    for row in data["rows"]:  # an older version's row: no identity, another run id, its results file elsewhere
        row["model_identity"] = None
        row["provenance"].update(run_id="phantom-vqa--odd-outputs--0123456789ab", results_file="runs/gone.json",
                                 created="2026-01-01T00:00:00+00:00")
    board.write_text(json.dumps(data))
    proc = publish(board, tmp_path / "a")
    rows = json.loads(board.read_text())["rows"]
    assert len(rows) == len(data["rows"]) and all(r["model_identity"] == {"dtype": "float32"} for r in rows)
    assert "differ in" not in proc.stderr and "replaced" in proc.stderr


def test_a_judge_that_adds_to_its_setup_once_built_keeps_it_on_the_leaderboard(tmp_path):
    weights = tmp_path / "judge.bin"
    board = tmp_path / "board.json"
    for content, out in ((b"one", "a"), (b"two", "b")):
        weights.write_bytes(content)
        run(tmp_path / out)
        proc = harness("score", str(tmp_path / out), "--judge", "weights-judge", "--judge-arg", f"weights={weights}")
        assert proc.returncode == 0, proc.stderr
    publish(board, tmp_path / "a", tmp_path / "b")
    rows = [r for r in json.loads(board.read_text())["rows"] if r["judge"] == "weights-judge"]
    assert len({r["judge_setup"]["weights_sha256"] for r in rows}) == 2  # two judge weights, two rows


def test_the_same_predictions_file_under_two_spellings_is_one_row(tmp_path, monkeypatch):
    run(tmp_path / "a")
    preds = tmp_path / "preds.jsonl"
    preds.write_text((tmp_path / "a" / "predictions.jsonl").read_text())
    monkeypatch.chdir(tmp_path)
    board = tmp_path / "board.json"
    for spelling in ("preds.jsonl", str(preds)):
        proc = harness("score", spelling, "--judge", "exact", "--task-type", "vqa", "--output", str(tmp_path / "ext"))
        assert proc.returncode == 0, proc.stderr
        publish(board, tmp_path / "ext")
    assert len(json.loads(board.read_text())["rows"]) == 1


def old_results(source: Path, folder: Path, created: str) -> None:
    """`source`'s results.json as an older version wrote it: no model identity, another run id."""
    results = json.loads((source / "results.json").read_text())
    del results["model"]["identity"]
    results.update(run_id="phantom-vqa--odd-outputs--0123456789ab", created=created)
    for judge in results["judges"]:
        judge["scored_at"] = created
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))


def test_results_without_an_identity_give_the_same_board_in_any_publish_order(tmp_path):
    run(tmp_path / "new")
    old_results(tmp_path / "new", tmp_path / "old", "2026-01-01T00:00:00+00:00")
    new_run = json.loads((tmp_path / "new" / "results.json").read_text())["run_id"]
    together, one_by_one = tmp_path / "together.json", tmp_path / "one-by-one.json"
    publish(together, tmp_path / "old", tmp_path / "new")
    publish(one_by_one, tmp_path / "old")
    publish(one_by_one, tmp_path / "new")
    boards = [json.loads(board.read_text())["rows"] for board in (together, one_by_one)]
    for rows in boards:  # the newer run of the same configuration replaced the older one, in either order
        assert {r["provenance"]["run_id"] for r in rows} == {new_run}
        assert all(r["model_identity"] == {"dtype": "float32"} and "model_identity_inferred" not in r for r in rows)
    assert len(boards[0]) == len(boards[1])


def test_an_unknown_identity_kept_on_the_board_is_marked_inferred_not_recorded(tmp_path):
    run(tmp_path / "new")
    old_results(tmp_path / "new", tmp_path / "old", "2030-01-01T00:00:00+00:00")  # newer: it stays
    board = tmp_path / "board.json"
    publish(board, tmp_path / "old", tmp_path / "new")
    rows = json.loads(board.read_text())["rows"]
    assert {r["provenance"]["run_id"] for r in rows} == {"phantom-vqa--odd-outputs--0123456789ab"}
    assert all("model_identity" not in r and r["model_identity_inferred"] == {"dtype": "float32"} for r in rows)


def test_a_row_whose_results_file_was_rescored_with_another_setup_is_noted(tmp_path):
    out = tmp_path / "a"
    run(out)
    board = tmp_path / "board.json"
    assert harness("score", str(out), "--judge", "tolerance", "--judge-arg", "tol=1").returncode == 0
    publish(board, out)
    assert harness("score", str(out), "--judge", "tolerance", "--judge-arg", "tol=2").returncode == 0
    proc = publish(board, out)
    rows = [r for r in json.loads(board.read_text())["rows"] if r["judge"] == "tolerance"]
    assert sorted(r["judge_setup"]["tol"] for r in rows) == ["1", "2"]
    (note,) = [line for line in proc.stderr.splitlines() if "is no longer in its results file" in line]
    assert "judge tolerance (tol=1)" in note and "keeps it as published" in note


def test_results_of_another_image_decoding_are_a_row_of_their_own(tmp_path):
    """The decoding of >8-bit images is part of the run id but was not part of the row key: results decoded by
    another harness version silently replaced this one's. Rows of this decoding, or from before it was recorded
    on the leaderboard, still share a row."""
    run(tmp_path / "a")
    other = tmp_path / "other"
    other.mkdir()
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    results["task"]["image_decoding"] = "rgb8-v2: an older decoding"
    (other / "results.json").write_text(json.dumps(results))
    board = tmp_path / "board.json"
    proc = publish(board, tmp_path / "a", other)
    assert len(json.loads(board.read_text())["rows"]) == 2 and "replaced" not in proc.stderr
    note = next(line for line in proc.stderr.splitlines() if "rows of odd-outputs" in line)
    assert "image decoding (rgb8-v2: an older decoding vs this harness's)" in note, note
    data = json.loads(board.read_text())
    for row in data["rows"]:  # as written before the leaderboard recorded the decoding
        row["provenance"].pop("image_decoding")
    board.write_text(json.dumps(data))
    assert len(json.loads(publish(board, tmp_path / "a").stdout and board.read_text())["rows"]) == 1
