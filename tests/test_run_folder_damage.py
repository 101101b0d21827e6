"""A run folder edited or damaged by hand: `harness score` and `harness run` give one line naming the file and
field (never a traceback), set aside a results.json that no longer passes its schema, and a command that fails
before any work leaves no folder behind (nor the arguments it refused)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import error_line

RUN = ["--model", "prior", "--task", "phantom-vqa", "--limit", "12", "--judge", "exact", "--no-progress"]


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("good")
    proc = harness("run", *RUN, "--output", str(base / "run"), cwd=base)
    assert proc.returncode == 0, proc.stderr
    return base / "run"


def damaged(good_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(good_run, copy)
    return copy


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_line(path: Path, index: int, change) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[index])
    change(row)
    lines[index] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("command", ["score", "run"])
@pytest.mark.parametrize(("change", "field"), [
    (lambda m: m.pop("task"), "(top level)"),
    (lambda m: m["task"].update(breakdowns=5), "task.breakdowns"),
    (lambda m: m["prompt"].update(hash=5), "prompt.hash"),
    (lambda m: m["prompt"].update(template=m["prompt"]["template"] + " Be brief."), "prompt.template"),
])
def test_a_damaged_run_json_is_one_line_naming_its_field(good_run, tmp_path, command, change, field):
    run = damaged(good_run, tmp_path)
    edit_json(run / "run.json", change)
    args = ["score", str(run), "--judge", "exact"] if command == "score" else ["run", *RUN, "--output", str(run)]
    line = error_line(harness(*args, cwd=tmp_path))
    assert f"run.json: field '{field}'" in line and "written by harness run" in line
    if field == "prompt.template":  # it was recorded in results.json beside the original's hash
        assert "is not the prompt whose hash sha256:" in line and "(edited by hand?)" in line


def test_an_emptied_predictions_file_is_nothing_to_score(good_run, tmp_path):
    run = damaged(good_run, tmp_path)
    (run / "predictions.jsonl").write_text("")
    line = error_line(harness("score", str(run), "--judge", "exact", cwd=tmp_path))
    assert line.endswith("predictions.jsonl holds no predictions yet: nothing to score (harness run generates them)")


@pytest.mark.parametrize("command", ["score", "run"])
def test_a_prediction_line_without_id_is_named_by_file_and_line(good_run, tmp_path, command):
    run = damaged(good_run, tmp_path)
    edit_line(run / "predictions.jsonl", 3, lambda row: row.pop("id"))
    args = ["score", str(run), "--judge", "exact"] if command == "score" else ["run", *RUN, "--output", str(run)]
    line = error_line(harness(*args, cwd=tmp_path))
    assert line.endswith("predictions.jsonl:4: missing field 'id'")


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("prediction", {"x": [1]}, "field 'prediction' must be a string, got dict"),
    ("prediction", 5, "field 'prediction' must be a string, got int"),
    ("answer_type", 7, "field 'answer_type' must be a string, got int"),
    ("images", "a.png", "field 'images' must be a list of file names"),
    ("time_s", "fast", "field 'time_s' must be a number, got str"),
    ("prediction", ..., "field 'prediction' is missing"),  # ...: the field removed (scored as "" before)
    ("answer", ..., "field 'answer' is missing"),
])
def test_a_prediction_line_of_the_wrong_shape_is_named_not_scored(good_run, tmp_path, field, value, expected):
    run = damaged(good_run, tmp_path)
    edit_line(run / "predictions.jsonl", 2,
              lambda row: row.pop(field) if value is ... else row.update({field: value}))
    line = error_line(harness("score", str(run), "--judge", "exact", cwd=tmp_path))
    assert f"predictions.jsonl:3: {expected}" in line and "written by harness run" in line


def test_a_scores_line_with_wrong_judges_is_named_by_file_and_line(good_run, tmp_path):
    run = damaged(good_run, tmp_path)
    edit_line(run / "scores.jsonl", 1, lambda row: row.update(judges=5))
    line = error_line(harness("score", str(run), "--judge", "exact", cwd=tmp_path))
    assert "scores.jsonl:2: field 'judges' must be an object" in line


def test_a_torn_scores_line_says_how_to_recover(good_run, tmp_path):
    """A cut scores.jsonl stopped every run and score of the folder with no way out named."""
    run = damaged(good_run, tmp_path)
    text = (run / "scores.jsonl").read_text()
    (run / "scores.jsonl").write_text(text[: len(text) - 40])
    line = error_line(harness("score", str(run), "--judge", "exact", cwd=tmp_path))
    assert "scores.jsonl:12: not valid JSON" in line
    assert line.endswith(f"delete it and score again: harness score {run})")
    (run / "scores.jsonl").unlink()
    assert harness("score", str(run), "--judge", "exact", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(("name", "line", "command"), [
    ("predictions.jsonl", 3, "score"), ("predictions.jsonl", 3, "run"), ("scores.jsonl", 3, "score"),
    ("run.json", 2, "score"),
])
def test_a_file_saved_in_another_encoding_is_one_line_naming_file_line_and_byte(good_run, tmp_path, name, line,
                                                                                   command):
    """An accent typed into a run's file by an editor that saves Latin-1 was a UnicodeDecodeError traceback."""
    run = damaged(good_run, tmp_path)
    path = run / name
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b'"', b'"\xe9', 1)  # the first string starts with a Latin-1 e-acute
    path.write_bytes(b"\n".join(lines))
    args = ["score", str(run), "--judge", "exact"] if command == "score" else ["run", *RUN, "--output", str(run)]
    error = error_line(harness(*args, cwd=tmp_path))
    assert error == (f"error: {path}:{line}: not UTF-8 text (byte 0xe9 at offset "
                     f"{path.read_bytes().index(0xE9)}); save it as UTF-8")


@pytest.mark.parametrize("value", ["x", [1, 2]])
def test_a_results_json_of_the_wrong_shape_is_set_aside_and_rewritten(good_run, tmp_path, value):
    run = damaged(good_run, tmp_path)
    edit_json(run / "results.json", lambda r: r.update(judges=value))
    proc = harness("score", str(run), "--judge", "exact", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "is not a valid results file (field 'judges" in proc.stderr
    (aside,) = run.glob("results.json.invalid-*")  # the hand-edited file is kept, not overwritten
    assert json.loads(aside.read_text())["judges"] == value and f"set aside as {aside.name}" in proc.stderr
    rewritten = json.loads((run / "results.json").read_text())
    assert [j["id"] for j in rewritten["judges"]] == ["exact"]
    assert rewritten["judges"][0]["metrics"] == json.loads((good_run / "results.json").read_text())[
        "judges"][0]["metrics"]


def test_predictions_of_more_ids_than_the_split_are_refused(good_run, tmp_path):
    run = damaged(good_run, tmp_path)
    edit_json(run / "run.json", lambda m: m["task"].update(n_total=10))  # 12 predictions for a 10-sample split
    line = error_line(harness("score", str(run), "--judge", "exact", cwd=tmp_path))
    assert "predictions.jsonl has 12 sample ids, more than the 10 of the test split" in line


def test_refused_model_args_leave_no_run_folder_and_no_copy_of_them(tmp_path):
    proc = harness("run", "--model", "prior", "--model-args", "token=sk-NOT-A-REAL-KEY", "--task", "phantom-vqa",
                   "--runs-dir", str(tmp_path / "runs"), "--no-progress", cwd=tmp_path)
    error_line(proc)
    leftovers = list((tmp_path / "runs").rglob("*")) if (tmp_path / "runs").exists() else []
    assert leftovers == [], leftovers


def test_a_failed_score_into_a_new_output_folder_leaves_none(tmp_path):
    bad = tmp_path / "preds.jsonl"
    bad.write_text('{"id": "1", "answer": "yes"}\n')  # no prediction
    proc = harness("score", str(bad), "--task-type", "report", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert "missing field(s) prediction" in error_line(proc)
    assert not (tmp_path / "out").exists()


def test_a_judge_that_takes_no_settings_says_so_in_plain_words(good_run, tmp_path):
    line = error_line(harness("score", str(damaged(good_run, tmp_path)), "--judge", "exact", "--judge-arg",
                              "foo=1", cwd=tmp_path))
    assert line.endswith("does not accept 'foo'. It accepts no --judge-arg keys"), line


def test_a_results_path_that_is_a_directory_is_named_not_a_temporary_file(good_run, tmp_path):
    run = damaged(good_run, tmp_path)
    (run / "results.json").unlink()
    (run / "results.json").mkdir()
    line = error_line(harness("score", str(run), "--judge", "exact", cwd=tmp_path))
    assert line == f"error: cannot use {run / 'results.json'}: is a directory, expected a file path"


@pytest.mark.parametrize("command", ["score", "run"])
@pytest.mark.parametrize(("field", "value"), [("answer", "a corrected answer"), ("id", "fake-2"),
                                              ("answer_type", "OPEN"), ("question", "Another question?")])
def test_a_prediction_line_edited_after_generation_is_named_not_scored(good_run, tmp_path, command, field, value):
    """A reference corrected by hand in predictions.jsonl was scored (0.50 where the data gives 0.37) and published
    under the run's data fingerprint; an id replaced by another made a complete-looking run of other samples."""
    run = damaged(good_run, tmp_path)
    edit_line(run / "predictions.jsonl", 2, lambda row: row.update({field: value}))
    args = ["score", str(run), "--judge", "exact"] if command == "score" else ["run", *RUN, "--output", str(run)]
    line = error_line(harness(*args, cwd=tmp_path))
    assert ("predictions.jsonl:3: its id, question, answer or answer_type differs from what harness run wrote (edited "
            "by hand?): scored, it would not be the data the run records") in line


def test_lines_written_before_the_reference_digest_are_still_scored(good_run, tmp_path):
    run = damaged(good_run, tmp_path)
    path = run / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all("reference_digest" in row for row in rows)
    path.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "reference_digest"}) + "\n"
                            for row in rows))
    proc = harness("score", str(run), "--judge", "exact", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
