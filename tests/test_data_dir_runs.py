"""`harness run --data-dir` on a user's copy of a data set: which source it is read as, what results.json says
about where the samples came from, and reruns after images went missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from format_writers import cases, write_hf_parquet, write_slake


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


def predictions(run: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return {row["id"]: row for row in rows}  # the newer line of an id wins, as the harness reads them


@pytest.fixture(scope="module")
def phantom():
    return cases(6, seed=3)


def test_a_rerun_does_not_retry_samples_whose_images_are_still_missing(tmp_path, phantom):
    """The first run fails only the samples of a missing image; the same command again says they still lack it
    (it said that none of their images existed, exit 2) and keeps the rest. (A restored image changes the data
    fingerprint, so it makes another run.)"""
    data = tmp_path / "slake"
    write_slake(data, phantom)
    records = json.loads((data / "test.json").read_text())
    image = data / "imgs" / records[0]["img_name"]
    image.unlink()
    run = ["run", "--model", "prior", "--task", "slake", "--data-dir", str(data), "--judge", "exact",
           "--no-progress", "--output", str(tmp_path / "run")]
    first = cli(*run)
    assert first.returncode == 0, first.stderr
    failed = {i for i, row in predictions(tmp_path / "run").items() if row["error"]}
    assert failed and len(failed) < len(predictions(tmp_path / "run"))

    again = cli(*run)
    assert again.returncode == 0, again.stderr
    assert f"note: {len(failed)} sample(s) that failed last time still lack an image file" in again.stderr
    assert "none of the" not in again.stderr
    assert {i for i, row in predictions(tmp_path / "run").items() if row["error"]} == failed



def test_a_copy_without_its_test_split_is_recognised_by_its_other_splits(tmp_path, phantom):
    data = tmp_path / "slake"
    write_slake(data, phantom)
    (data / "test.json").unlink()
    proc = cli("run", "--model", "prior", "--task", "slake", "--data-dir", str(data), "--split", "validation",
               "--judge", "exact", "--no-progress", "--output", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["task"]["split"] == "validation"


def test_a_local_hub_copy_records_its_folder_and_no_revision(tmp_path, phantom):
    """results.json names the folder read, keeps the hub id as `copy_of`, and claims no hub revision for it."""
    data = tmp_path / "path-vqa"
    write_hf_parquet(data, phantom, kind="vqa")
    proc = cli("run", "--model", "prior", "--task", "pathvqa", "--data-dir", str(data), "--judge", "exact",
               "--no-progress", "--output", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    task = json.loads((tmp_path / "run" / "results.json").read_text())["task"]
    assert task["source"]["path"] == str(data) and task["source"]["copy_of"] == "flaviagiammarino/path-vqa"
    assert task["source"]["revision"] is None and task["revision"] is None


def test_a_parent_folder_of_a_hub_copy_is_not_taken_for_one(tmp_path, phantom):
    """Parquet files two levels down (a folder holding several copies) are not a hub copy at --data-dir."""
    write_hf_parquet(tmp_path / "datasets" / "path-vqa", phantom, kind="vqa")
    proc = cli("run", "--model", "prior", "--task", "pathvqa", "--data-dir", str(tmp_path / "datasets"),
               "--no-progress", "--output", str(tmp_path / "run"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"--data-dir {tmp_path / 'datasets'} matches no local format of task 'pathvqa'" in lines[0]


def test_a_data_dir_that_does_not_exist_names_the_files_expected_there(tmp_path):
    """It said only "is not a directory", while an empty folder listed the files each source needs."""
    missing = tmp_path / "data" / "vqa-rad"
    proc = cli("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(missing), "--judge", "exact",
               "--no-progress", "--output", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: --data-dir {missing} does not exist (expected the folder of your copy "
                                   "of 'vqa-rad', with files official: VQA_RAD Dataset Public.json; mevf: "
                                   "testset.json)")
    (tmp_path / "notes.txt").write_text("x")
    proc = cli("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(tmp_path / "notes.txt"),
               "--no-progress", "--output", str(tmp_path / "run"))
    assert proc.stderr.startswith(f"error: --data-dir {tmp_path / 'notes.txt'} is not a directory (expected the")
    assert not (tmp_path / "run").exists()


def test_other_training_data_is_another_prior_run(tmp_path, phantom):
    """The prior learns its answers from the train split: a copy with other training answers and the same test
    split resumed the first copy's run (same run id) and printed its numbers."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_slake(first, phantom)
    write_slake(second, phantom)
    records = json.loads((second / "train.json").read_text())
    for record in records:
        record["answer"] = "maybe"
    (second / "train.json").write_text(json.dumps(records))
    for data in (first, second):
        proc = cli("run", "--model", "prior", "--task", "slake", "--data-dir", str(data), "--judge", "exact",
                   "--no-progress", "--runs-dir", str(tmp_path / "runs"))
        assert proc.returncode == 0, proc.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    answers = [{row["prediction"] for row in predictions(run).values()} for run in runs]
    assert {"maybe"} in answers and any(a != {"maybe"} for a in answers)


def test_a_wrong_source_names_the_split_being_evaluated(tmp_path, shared_data, capsys):
    """The prior reads the train split for its run id; that read came first, so a wrong --source said
    'lacks trainset.json' to a user evaluating the test split."""
    from harness.cli import main

    code = main(["run", "--model", "prior", "--task", "vqa-rad", "--source", "mevf", "--data-dir",
                 str(shared_data / "vqa-rad"), "--judge", "exact", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "lacks testset.json" in err and "trainset" not in err, err
