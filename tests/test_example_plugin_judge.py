"""The example package's judge (`numeric`, entry point `example-judge`) and its task on local files
(`example-local-vqa`, format mevf-json, data in examples/harness-plugin-example/data/local-vqa) work through the
CLI exactly as README's "Adding a plugin" says; the package ships its task YAMLs in a wheel.

CI installs examples/harness-plugin-example (see .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli_helpers import error_line

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harness-plugin-example"
DATA = EXAMPLE / "data" / "local-vqa"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)


def expected_within(answer: str, tolerance: float) -> float:
    """Share of numeric references within `tolerance` of the constant answer `answer`, from the data file."""
    references = [float(r["a"]) for r in json.loads((DATA / "questions.json").read_text()) if r["a"].isdigit()]
    return sum(abs(float(answer) - ref) <= tolerance for ref in references) / len(references)


def judge_entry(run: Path, judge_id: str) -> dict:
    entries = [j for j in json.loads((run / "results.json").read_text())["judges"] if j["id"] == judge_id]
    assert len(entries) == 1, entries
    return entries[0]


def test_numeric_judge_runs_on_the_local_task_and_rescores_with_another_tolerance(tmp_path):
    run = tmp_path / "run"
    proc = cli("run", "--model", "constant", "--model-args", "answer=2", "--task", "example-local-vqa",
               "--data-dir", str(DATA), "--judge", "exact", "--judge", "numeric", "--judge-arg", "tolerance=1",
               "--output", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    records = json.loads((DATA / "questions.json").read_text())
    numeric = judge_entry(run, "numeric")
    assert numeric["settings"] == {"tolerance": "1"} and numeric["setup"] == {"tolerance": 1.0}
    within = numeric["metrics"]["within_tolerance"]
    # the yes/no questions have no number in their reference: unscored, not wrong
    assert (within["n"], within["unscored"]) == (3, 3)
    assert within["value"] == expected_within("2", 1.0) == 2 / 3
    assert set(numeric["breakdowns"]) == {"answer_type", "region"}
    assert numeric["breakdowns"]["answer_type"]["CLOSED"]["within_tolerance"]["value"] is None
    exact = judge_entry(run, "exact")["metrics"]["accuracy"]
    assert exact["n"] == len(records) and exact["value"] == sum(r["a"] == "2" for r in records) / len(records)
    rows = {json.loads(line)["id"]: json.loads(line)["judges"]["numeric"]
            for line in (run / "scores.jsonl").read_text().splitlines()}
    assert rows["s1-pres"]["metrics"] == {"within_tolerance": None}
    assert rows["s1-count"]["metrics"] == {"within_tolerance": 0.0}

    assert numeric["distribution"].startswith("harness-plugin-example==")  # which package's code judged

    proc = cli("score", str(run), "--judge", "numeric")  # no tolerance: 0, replacing the judge's entry
    assert proc.returncode == 0, proc.stderr
    assert ("note: results.json replaces numeric's entry by one with another setup (tolerance 1.0 -> 0.0; harness "
            "publish it first to keep both on a leaderboard)") in proc.stderr
    numeric = judge_entry(run, "numeric")
    assert numeric["setup"] == {"tolerance": 0.0}
    assert numeric["metrics"]["within_tolerance"]["value"] == expected_within("2", 0.0) == 1 / 3
    assert judge_entry(run, "exact")["metrics"]["accuracy"] == exact  # the other judge's entry stays


def test_a_bad_or_misspelt_tolerance_is_one_line_before_anything_runs(tmp_path):
    base = ("run", "--model", "constant", "--task", "example-local-vqa", "--data-dir", str(DATA), "--judge",
            "numeric", "--output", str(tmp_path / "run"), "--no-progress")
    assert error_line(cli(*base, "--judge-arg", "tolerance=abc")) == (
        "error: --judge-arg tolerance=abc: judge 'numeric' expects a number >= 0")
    line = error_line(cli(*base, "--judge-arg", "tolerence=1"))
    assert "does not accept 'tolerence'. Did you mean 'tolerance'?" in line
    assert not (tmp_path / "run").exists()


def test_a_misspelt_model_arg_of_the_example_model_is_refused_before_anything_runs(tmp_path):
    """`constant` declares accepted_args: `answr=2` ran as `constant[answr=2]` answering "yes", under a new run id."""
    line = error_line(cli("run", "--model", "constant", "--model-args", "answr=2", "--task", "example-local-vqa",
                          "--data-dir", str(DATA), "--output", str(tmp_path / "run"), "--no-progress"))
    assert line.startswith("error: --model-args answr: model 'constant' (plugin 'example', package "
                           "harness-plugin-example==") and line.endswith(
        ") does not read 'answr' (did you mean 'answer'?); it reads answer")
    assert not (tmp_path / "run").exists()


def test_the_example_wheel_ships_its_task_yamls_and_both_entry_points(tmp_path):
    # an editable install reads the YAMLs from the source tree; only a built wheel shows whether they ship
    pytest.importorskip("setuptools", reason="building the example's wheel offline needs setuptools in this venv")
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "data", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", str(source), "-w", str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    yamls = {f"harness_plugin_example/{p.name}" for p in (EXAMPLE / "harness_plugin_example").glob("*.yaml")}
    assert {"harness_plugin_example/example-mini-vqa.yaml", "harness_plugin_example/example-local-vqa.yaml"} <= yamls
    assert yamls <= names
    assert "example = harness_plugin_example.plugin" in entry_points
    assert "example-judge = harness_plugin_example.judge_plugin" in entry_points
