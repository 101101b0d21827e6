"""`harness run` streams predictions and resumes after a kill with nothing lost and nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUNNER = Path(__file__).with_name("run_harness.py")


def harness(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), **kw)


def prediction_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def test_kill_and_rerun_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "slow-echo", "--model-args", "delay=0.15", "--task", "phantom-vqa",
            "--judge", "exact", "--limit", "40", "--output", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    preds = out / "predictions.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if preds.exists() and len(preds.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = prediction_ids(preds)
    assert 6 <= len(partial) < 40, "the kill should land mid-run"
    # A kill in the middle of a write leaves a torn last line: simulate the worst case.
    with open(preds, "a") as fh:
        fh.write('{"id": "torn-line", "predic')

    done = harness(*args)
    assert done.returncode == 0, done.stderr
    ids = prediction_ids(preds)
    assert len(ids) == 40 and len(set(ids)) == 40
    assert ids[: len(partial)] == partial, "finished predictions are kept, not redone"
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["n"] == 40
    assert results["judges"][0]["n_scored"] == 40


def test_sigterm_stops_like_ctrl_c_and_the_rerun_continues(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "slow-echo", "--model-args", "delay=0.15", "--task", "phantom-vqa",
            "--judge", "exact", "--limit", "30", "--output", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    preds = out / "predictions.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (preds.exists() and len(preds.read_text().splitlines()) >= 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # Slurm's time limit, docker stop
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == ("terminated: finished work is saved; run the same command again to "
                                            "continue")
    partial = prediction_ids(preds)
    assert 4 <= len(partial) < 30
    done = harness(*args)
    assert done.returncode == 0, done.stderr
    ids = prediction_ids(preds)
    assert len(ids) == len(set(ids)) == 30 and ids[: len(partial)] == partial


def test_rerun_of_a_finished_run_generates_nothing(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "slow-echo", "--model-args", "delay=0", "--task", "phantom-vqa", "--limit", "6",
            "--output", str(out), "--no-progress"]
    assert harness(*args).returncode == 0
    before = (out / "predictions.jsonl").read_text()
    again = harness(*[("delay=5" if a == "delay=0" else a) for a in args])  # another model arg: another run
    assert again.returncode == 2 and "holds run" in again.stderr
    start = time.time()
    assert harness(*args).returncode == 0
    assert time.time() - start < 30
    assert (out / "predictions.jsonl").read_text() == before


def test_default_output_is_runs_dir_named_by_run_id(tmp_path):
    proc = harness("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "5", "--runs-dir",
                   str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("phantom-vqa--prior--")
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["run_id"] == run_dir.name
    other = harness("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "5", "--model-args", "by=none",
                    "--runs-dir", str(tmp_path / "runs"), "--no-progress")
    assert other.returncode == 0, other.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2, "another configuration is another run"


def test_a_resume_from_the_same_data_moved_elsewhere_records_where_it_is_now(tmp_path):
    """The data folder moved (same bytes, same fingerprint, same run): run.json and results.json went on naming the
    first folder, which no longer exists."""
    import shutil

    from format_writers import cases, write_mevf

    first, moved = tmp_path / "first", tmp_path / "moved"
    write_mevf(first, cases(4, seed=7))
    run = ["run", "--model", "prior", "--task", "vqa-rad", "--source", "mevf", "--judge", "exact", "--output",
           str(tmp_path / "run"), "--no-progress"]
    assert harness(*run, "--data-dir", str(first)).returncode == 0
    shutil.move(first, moved)
    proc = harness(*run, "--data-dir", str(moved))
    assert proc.returncode == 0, proc.stderr
    for name in ("run.json", "results.json"):
        assert json.loads((tmp_path / "run" / name).read_text())["task"]["source"]["path"] == str(moved), name
