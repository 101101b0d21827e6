"""A leaderboard says what its rows rest on: a run on a copy of the data smaller than its task expects is marked
as such (row, notice, table footnote), a results file that lost its split size or a board row of the first layout
cannot slip data of another size or fingerprint in, and the board's row order never depends on the publish order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from format_writers import cases, write_vqa_rad_official

RUNNER = Path(__file__).with_name("run_harness.py")  # the harness with the tests' plugins (odd-outputs)


def cli(*args: str) -> subprocess.CompletedProcess:
    progress = ["--no-progress"] if args[0] in ("run", "score") else []
    return subprocess.run([sys.executable, "-m", "harness", *args, *progress], capture_output=True, text=True,
                          timeout=300)


def run_prior(out: Path, *extra: str) -> None:
    proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--output", str(out), *extra)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def small_vqa_rad(tmp_path_factory) -> Path:
    """A VQA-RAD copy in the official layout with far fewer test questions than the 451 the task expects."""
    root = tmp_path_factory.mktemp("vqa-rad")
    write_vqa_rad_official(root, cases(6, seed=5))
    return root


def test_a_run_on_a_smaller_copy_of_the_data_is_marked_on_the_board_and_in_the_table(tmp_path, small_vqa_rad):
    """It was published as a complete row (n = n_total of the copy) with no note: a number on 20 questions read
    as the VQA-RAD test score."""
    out = tmp_path / "run"
    proc = cli("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(small_vqa_rad), "--judge", "exact",
               "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    note = json.loads((out / "results.json").read_text())["task"]["size_note"]
    assert "expected 451 samples" in note
    board = tmp_path / "board.json"
    proc = cli("publish", str(out), "--output", str(board))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(board.read_text())["rows"]
    assert row["size_note"] == note and row["partial"] is False
    assert f"note: row on a split not of the size its task expects ({note}): prior on vqa-rad" in proc.stderr
    table = cli("table", str(board))
    assert table.returncode == 0, table.stderr
    assert "| prior§ |" in table.stdout and "§ the split is not the size its task expects" in table.stdout
    assert note in table.stdout
    csv_lines = cli("table", str(board), "--format", "csv").stdout.splitlines()
    assert csv_lines[0].split(",")[:5] == ["model", "partial", "errors", "unscored", "size_note"]
    assert note in csv_lines[1]


def test_a_limit_run_whose_split_size_was_deleted_cannot_replace_the_full_row(tmp_path):
    """Without task.n_total (and selection) a 20-sample run passed as complete and replaced the full row."""
    run_prior(tmp_path / "full")
    run_prior(tmp_path / "part", "--limit", "20")
    board = tmp_path / "board.json"
    assert cli("publish", str(tmp_path / "full"), "--output", str(board)).returncode == 0
    results_file = tmp_path / "part" / "results.json"
    results = json.loads(results_file.read_text())
    del results["selection"], results["task"]["n_total"]
    results_file.write_text(json.dumps(results))
    proc = cli("publish", str(tmp_path / "part"), "--output", str(board))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {results_file}: not a valid results file at 'task': 'n_total' is a "
                                  "required property"), proc.stderr
    # edited to look complete in both places: the full run of the same data counts another size
    results["task"]["n_total"] = results["task"]["n"]
    results_file.write_text(json.dumps(results))
    proc = cli("publish", str(tmp_path / "part"), "--output", str(board))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "the same data counts 361 samples in" in proc.stderr and "one of them was edited" in proc.stderr
    (row,) = json.loads(board.read_text())["rows"]
    assert row["n"] == 361


def test_a_first_layout_row_without_a_source_is_checked_against_new_fingerprints(tmp_path):
    """Rows of the first leaderboard layout have no `source`: a new row of another fingerprint sat beside one as
    another row instead of being refused as other data."""
    run_prior(tmp_path / "run", "--limit", "20")
    board = tmp_path / "board.json"
    assert cli("publish", str(tmp_path / "run"), "--output", str(board)).returncode == 0
    data = json.loads(board.read_text())
    (row,) = data["rows"]
    del row["source"]
    row["fingerprint"] = "sha256:" + "0" * 32  # a v1 fingerprint, as that layout wrote
    row["provenance"]["results_file"] = "old/results.json"
    board.write_text(json.dumps(data))
    proc = cli("publish", str(tmp_path / "run"), "--output", str(board))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "has two dataset fingerprints" in proc.stderr and "fingerprint v1" in proc.stderr
    assert len(json.loads(board.read_text())["rows"]) == 1


def test_a_nan_in_a_results_file_names_that_file(tmp_path):
    run_prior(tmp_path / "run", "--limit", "20")
    results_file = tmp_path / "run" / "results.json"
    text = results_file.read_text()
    data = json.loads(text)
    data["judges"][0]["metrics"]["accuracy"]["value"] = float("nan")
    results_file.write_text(json.dumps(data))
    proc = cli("publish", str(tmp_path / "run"), "--output", str(tmp_path / "board.json"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: {results_file}: the value at 'judges.0.metrics.accuracy.value' is nan, not a "
                           "number a leaderboard can hold (expected a finite number or null); rewrite the file with "
                           "harness score on its run folder\n")
    # a NaN where no row reads it (timings of an older version): published
    data["judges"][0]["metrics"]["accuracy"]["value"] = 0.5
    data.setdefault("timings", {})["generation_s"] = float("nan")
    results_file.write_text(json.dumps(data))
    proc = cli("publish", str(tmp_path / "run"), "--output", str(tmp_path / "board.json"))
    assert proc.returncode == 0, proc.stderr


def test_the_row_order_does_not_depend_on_the_publish_order(tmp_path):
    """Rows alike but in their generation settings or dtype kept the order they were given in."""
    runs = [tmp_path / name for name in ("a", "b", "c")]
    for out, extra in zip(runs, ((), ("--max-new-tokens", "3"), ("--dtype", "bfloat16"))):
        proc = subprocess.run([sys.executable, str(RUNNER), "run", "--model", "odd-outputs", "--model-args",
                               "kind=none", "--task", "phantom-vqa", "--limit", "8", "--output", str(out), "--judge",
                               "exact", "--no-progress", *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    boards = []
    for order, name in ((runs, "one.json"), (runs[::-1], "two.json")):
        for run in order:
            assert cli("publish", str(run), "--output", str(tmp_path / name)).returncode == 0
        boards.append([r["provenance"]["run_id"] for r in json.loads((tmp_path / name).read_text())["rows"]])
    assert len(set(boards[0])) == 3 and boards[0] == boards[1]


def test_the_prior_with_its_default_typed_out_is_the_same_run(tmp_path):
    """`--model-args by=answer_type` (the default on VQA) was another run folder and another leaderboard row."""
    runs = tmp_path / "runs"
    for extra in ((), ("--model-args", "by=answer_type")):
        proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--limit", "10",
                   "--runs-dir", str(runs), *extra)
        assert proc.returncode == 0, proc.stderr
    assert len(list(runs.iterdir())) == 1


def test_per_question_and_per_image_intervals_side_by_side_are_noted(tmp_path, small_vqa_rad):
    """VQA-RAD's intervals resample images now; a results file written before (Wilson over questions) published
    beside a new one made the older row's narrower interval look the surer, without a word."""
    runs = []
    for name, args in (("new", []), ("old", ["--model-args", "by=none"])):
        out = tmp_path / name
        proc = cli("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(small_vqa_rad), "--judge",
                   "exact", "--output", str(out), *args)
        assert proc.returncode == 0, proc.stderr
        runs.append(out)
    old = json.loads((runs[1] / "results.json").read_text())  # as an earlier harness wrote it
    assert old["task"]["cluster_by"] == "images"
    old["task"]["cluster_by"] = None
    accuracy = old["judges"][0]["metrics"]["accuracy"]
    accuracy["ci_method"] = "wilson"
    old["ci_methods"] = {"wilson": "Wilson score interval of a proportion (every per-sample value 0 or 1)",
                         **old["ci_methods"]}
    (runs[1] / "results.json").write_text(json.dumps(old))
    proc = cli("publish", *map(str, runs), "--output", str(tmp_path / "board.json"))
    assert proc.returncode == 0, proc.stderr
    assert ("note: rows of one task and judge whose 'accuracy' intervals are per sample in some rows and per cluster "
            "(cluster_by) in others; score the per-sample ones again with this harness (harness score DIR; a hub-copy "
            "run whose predictions.jsonl lines have no image_content, written before such copies were grouped by image "
            "bytes, needs harness run into a new folder) and publish them again: prior[by=none] on vqa-rad") \
        in proc.stderr
    proc = cli("score", str(runs[1]))  # scored again: per image like the other
    assert proc.returncode == 0, proc.stderr
    proc = cli("publish", *map(str, runs), "--output", str(tmp_path / "board2.json"))
    assert proc.returncode == 0 and "per cluster" not in proc.stderr, proc.stderr
