"""What a third-party plugin hands back is checked before it is written: a model's text that is not a string is one
line naming the model and sample (the predictions file stays readable), no text is a failed sample retried by the
next run, a judge's NaN or wrongly shaped rows never reach scores.jsonl or results.json, a judge is recorded under
the id it is registered with, and a judge's settings split leaderboard rows by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("run_harness.py")


def harness(*args: str) -> subprocess.CompletedProcess:
    progress = ["--no-progress"] if args[0] in ("run", "score") else []
    return subprocess.run([sys.executable, str(RUNNER), *args, *progress], capture_output=True, text=True,
                          timeout=300)


def run_args(out: Path, kind: str, *judge: str) -> list[str]:
    return ["run", "--model", "odd-outputs", "--model-args", f"kind={kind}", "--task", "phantom-vqa", "--limit", "8",
            "--output", str(out), *judge]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_text_that_is_not_a_string_is_one_line_and_the_folder_stays_usable(tmp_path):
    proc = harness(*run_args(tmp_path / "run", "int", "--judge", "exact"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model 'odd-outputs' (plugin 'tests.contract_plugin'): generate() returned, for "
                           "sample '") and "text 3 (int); expected a string" in line, line
    predictions = tmp_path / "run" / "predictions.jsonl"
    assert not predictions.exists() or all(isinstance(r["prediction"], str) for r in lines(predictions))
    again = harness("run", "--model", "slow-echo", "--model-args", "delay=0", "--task", "phantom-vqa", "--limit", "8",
                    "--output", str(tmp_path / "run2"), "--judge", "exact")
    assert again.returncode == 0, again.stderr


def test_no_text_is_a_failed_sample_not_a_wrong_answer(tmp_path):
    proc = harness(*run_args(tmp_path / "run", "none", "--judge", "exact"))
    assert proc.returncode == 0, proc.stderr
    rows = lines(tmp_path / "run" / "predictions.jsonl")
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 2 and all(r["error"].startswith("the model returned no text") for r in failed)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["errors"]["count"] == 2 and results["judges"][0]["n_scored"] == 6


def test_a_models_details_reach_each_predictions_line_and_bad_ones_are_one_line(tmp_path):
    proc = harness(*run_args(tmp_path / "run", "details", "--judge", "exact"))
    assert proc.returncode == 0, proc.stderr
    rows = lines(tmp_path / "run" / "predictions.jsonl")
    assert all(r["generation_details"] == {"seen": r["id"], "score": 0.5} for r in rows)
    proc = harness(*run_args(tmp_path / "bad", "bad-details", "--judge", "exact"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "details {'seen':" in proc.stderr
    assert "expected None or a dict of string keys and plain values" in proc.stderr


def test_an_exception_in_a_plugins_code_is_one_line_naming_the_plugin_and_keeps_the_work_done(tmp_path):
    out = tmp_path / "run"
    proc = harness(*run_args(out, "raise", "--judge", "exact"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model 'odd-outputs' (plugin 'tests.contract_plugin'): generate() raised "
                           "ValueError: cannot reshape array of size 3 at ") and "contract_plugin.py:" in line, line
    assert len(lines(out / "predictions.jsonl")) == 4  # the first batch is kept; a rerun goes on from there
    proc = harness(*run_args(out, "raise", "--judge", "exact"))  # the rest is one call: no second one to fail
    assert proc.returncode == 0, proc.stderr
    assert len({r["id"] for r in lines(out / "predictions.jsonl")}) == 8

    assert harness(*run_args(out := tmp_path / "run2", "none", "--judge", "exact")).returncode == 0
    proc = harness("score", str(out), "--judge", "tolerance", "--judge-arg", "bad=raise")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: judge 'tolerance' (plugin 'tests.contract_plugin'): score() raised KeyError: 'answer_norm' at ")
    debug = subprocess.run([sys.executable, str(RUNNER), "score", str(out), "--judge", "tolerance", "--judge-arg",
                            "bad=raise", "--no-progress"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HARNESS_DEBUG": "1"})
    assert "Traceback" in debug.stderr and "KeyError: 'answer_norm'" in debug.stderr

    # its aggregate() and its setup() are its code too (they were tracebacks through the harness)
    proc = harness("score", str(out), "--judge", "tolerance", "--judge-arg", "bad=aggregate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: judge 'tolerance' (plugin 'tests.contract_plugin'): aggregate() raised ZeroDivisionError: float "
        "division by zero at ")
    proc = harness("score", str(out), "--judge", "weights-judge", "--judge-arg", f"weights={tmp_path / 'none.bin'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: judge 'weights-judge' (plugin 'tests.contract_plugin'): setup() raised FileNotFoundError: ")


def test_a_judges_nan_or_text_metric_is_refused_before_anything_is_saved(tmp_path):
    out = tmp_path / "run"
    assert harness(*run_args(out, "none", "--judge", "exact")).returncode == 0
    before = (out / "scores.jsonl").read_text()
    for bad, expected in (("nan", "metric 'match' = nan; expected a finite number, or None for unscored"),
                          ("text", "metric 'match' = 'correct' (str); expected a number, a bool, or None")):
        proc = harness("score", str(out), "--judge", "tolerance", "--judge-arg", f"bad={bad}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("error: judge 'tolerance' (plugin 'tests.contract_plugin'): score() returned, for "
                               "sample '") and expected in line, line
        assert (out / "scores.jsonl").read_text() == before  # nothing of the bad judge was merged
    results = (out / "results.json").read_text()
    assert "NaN" not in results and "tolerance" not in results


def test_a_judge_is_recorded_under_its_registered_id_with_its_settings_as_setup(tmp_path):
    out = tmp_path / "run"
    assert harness(*run_args(out, "none", "--judge", "exact")).returncode == 0
    board = tmp_path / "board.json"
    for tol in ("0.5", "2"):
        proc = harness("score", str(out), "--judge", "tolerance", "--judge-arg", f"tol={tol}")
        assert proc.returncode == 0, proc.stderr
        entry = next(j for j in json.loads((out / "results.json").read_text())["judges"] if j["id"] == "tolerance")
        assert entry["setup"] == {"tol": tol}
        assert harness("publish", str(out), "--output", str(board)).returncode == 0
    rows = [r for r in json.loads(board.read_text())["rows"] if r["judge"] == "tolerance"]
    assert sorted(r["judge_setup"]["tol"] for r in rows) == ["0.5", "2"]  # two settings, two rows
    assert all(json.loads(line)["judges"].get("tolerance") for line in (out / "scores.jsonl").open())


def test_transport_args_stay_out_of_the_run_id_and_the_leaderboard_label(tmp_path):
    runs = tmp_path / "runs"
    for pace in ("1", "2"):
        proc = harness("run", "--model", "odd-outputs", "--model-args", f"kind=none,pace={pace}", "--task",
                       "phantom-vqa", "--limit", "4", "--runs-dir", str(runs), "--judge", "exact")
        assert proc.returncode == 0, proc.stderr
    (folder,) = runs.iterdir()  # one run: the second command continued it
    assert harness("publish", str(folder), "--output", str(tmp_path / "board.json")).returncode == 0
    labels = {row["model"] for row in json.loads((tmp_path / "board.json").read_text())["rows"]}
    assert labels == {"odd-outputs[kind=none]"}


def test_rows_an_older_version_published_merge_with_new_ones(tmp_path):
    """Older versions labelled rows with transport args and recorded `{}` as the setup of a judge keeping the
    default resolve_setup: re-publishing the same configuration replaces those rows instead of adding rows."""
    out = tmp_path / "run"
    assert harness("run", "--model", "odd-outputs", "--model-args", "kind=none,pace=1", "--task", "phantom-vqa",
                   "--limit", "4", "--output", str(out), "--judge", "tolerance", "--judge-arg", "tol=1").returncode == 0
    board = tmp_path / "board.json"
    assert harness("publish", str(out), "--output", str(board)).returncode == 0
    data = json.loads(board.read_text())
    (row,) = data["rows"]
    row["model"], row["judge_setup"] = "odd-outputs[kind=none,pace=1]", {}  # as the older version wrote it
    board.write_text(json.dumps(data))
    assert harness("publish", str(out), "--output", str(board)).returncode == 0
    (row,) = json.loads(board.read_text())["rows"]
    assert row["model"] == "odd-outputs[kind=none]" and row["judge_setup"] == {"tol": "1"}
