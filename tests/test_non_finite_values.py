"""NaN and infinity never reach a file the harness writes, and never crash work already done: a NaN in a dataset
field is no value, a corpus metric undefined on one bootstrap resample is left out of its interval, a judge row
holding one is refused before it is saved, and a NaN that an older version wrote into a leaderboard is one line
naming the file and where the value is."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from format_writers import cases, write_mevf

from harness.aggregate import summarize
from harness.errors import UserError
from harness.judge_api import JudgeOptions, JudgePlugin
from harness.plugin_outputs import checked_rows


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


def strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_in_a_dataset_field_is_no_value_and_the_run_completes(tmp_path):
    data = tmp_path / "data"
    written = write_mevf(data, cases(4, seed=5))
    records = written.records["test"]
    records[0]["image_organ"] = float("nan")  # as pandas writes an empty cell
    (data / "testset.json").write_text(json.dumps(records), encoding="utf-8")
    proc = harness("run", "--model", "prior", "--task", "vqa-rad", "--source", "mevf", "--data-dir", str(data),
                   "--judge", "exact", "--runs-dir", str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (run,) = (tmp_path / "runs").iterdir()
    rows = [strict(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["organ"] for r in rows if r["id"] == str(records[0]["qid"])] == [None]
    results = strict((run / "results.json").read_text())
    assert "nan" not in {key.lower() for key in results["judges"][0]["breakdowns"].get("organ", {})}


class Precision(JudgePlugin):
    """A corpus metric that is undefined (NaN) on a resample without any positive prediction."""

    id = "test-precision"
    mean_metrics = False

    def score(self, records):
        return [{"metrics": {"precision": 1.0}, "details": {"tp": r["tp"], "pp": r["pp"]}} for r in records]

    def aggregate(self, records, rows):
        tp = sum(row["details"]["tp"] for row in rows)
        pp = sum(row["details"]["pp"] for row in rows)
        return {"precision": tp / pp if pp else math.nan}


def test_a_corpus_metric_undefined_on_some_resamples_keeps_a_finite_interval():
    records = [{"id": str(i), "tp": int(i == 0), "pp": int(i < 2)} for i in range(12)]  # 2 positives in 12
    judge = Precision(JudgeOptions())
    metric = summarize(judge, records, judge.score(records), [])["metrics"]["precision"]
    low, high = metric["ci95"]
    assert metric["value"] == 0.5 and 0.0 <= low <= high <= 1.0  # resamples with no positive are left out
    json.dumps(metric, allow_nan=False)


def test_a_judge_row_with_a_nan_anywhere_is_refused_before_it_is_saved():
    for row, expected in (({"metrics": {"m": 1.0}, "groups": {"g": math.nan}}, "group 'g' = nan (float)"),
                          ({"metrics": {"m": 1.0}, "details": {"score": math.inf}}, "cannot be saved as JSON")):
        with pytest.raises(UserError, match="judge 'j'") as caught:
            checked_rows("j", "", [row], ["s1"])
        assert expected in str(caught.value) and "sample 's1'" in str(caught.value)
    numpy = pytest.importorskip("numpy")
    row = {"metrics": {"m": numpy.float64(0.5), "ok": numpy.bool_(True)}, "groups": {"g": numpy.int64(2)}}
    (kept,) = checked_rows("j", "", [row], ["s1"])
    assert kept is row and row["metrics"] == {"m": 0.5, "ok": True} and type(row["metrics"]["ok"]) is bool
    assert type(row["groups"]["g"]) is int


def test_a_nan_an_older_version_wrote_into_a_leaderboard_is_one_line(tmp_path):
    runs = tmp_path / "runs"
    assert harness("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "12", "--judge", "exact",
                   "--runs-dir", str(runs), "--no-progress").returncode == 0
    board = tmp_path / "board.json"
    assert harness("publish", str(runs), "--output", str(board)).returncode == 0
    data = json.loads(board.read_text())
    data["rows"][0]["metrics"]["accuracy"]["value"] = math.nan  # what json.dumps wrote before allow_nan=False
    board.write_text(json.dumps(data))
    before = board.read_text()
    other = tmp_path / "other"  # another row: the first one stays on the leaderboard
    assert harness("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "12", "--judge", "exact",
                   "--model-args", "by=none", "--output", str(other), "--no-progress").returncode == 0
    proc = harness("publish", str(other), "--output", str(board))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {board}: not written: the value at 'rows.0.metrics.accuracy.value' is nan")
    assert board.read_text() == before  # the leaderboard is left as it was


def test_results_are_strict_json(tmp_path):
    out = tmp_path / "run"
    assert harness("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "6", "--judge", "exact",
                   "--output", str(out), "--no-progress").returncode == 0
    for name in ("results.json", "run.json", "model.json"):
        strict((out / name).read_text())
    assert Path(out / "scores.jsonl").read_text().count("NaN") == 0


def test_a_nan_reference_is_a_blank_one_skipped_not_the_text_nan(tmp_path):
    data = tmp_path / "data"
    written = write_mevf(data, cases(4, seed=5))
    records = written.records["test"]
    records[0]["answer"] = float("nan")
    (data / "testset.json").write_text(json.dumps(records), encoding="utf-8")
    proc = harness("run", "--model", "prior", "--task", "vqa-rad", "--source", "mevf", "--data-dir", str(data),
                   "--judge", "exact", "--runs-dir", str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "1 sample with a blank reference skipped" in proc.stderr
    (run,) = (tmp_path / "runs").iterdir()
    ids = [strict(line)["id"] for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert str(records[0]["qid"]) not in ids and len(ids) == len(records) - 1
