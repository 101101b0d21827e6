"""Two harness processes on the same run folder or leaderboard take turns instead of losing or duplicating work,
and the files the harness writes keep a normal mode (readable by others under the usual umask)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from harness.io import atomic_write_json

RUNNER = Path(__file__).with_name("run_harness.py")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, err


def test_the_same_run_started_twice_generates_each_sample_once(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "slow-echo", "--model-args", "delay=0.4", "--task", "phantom-vqa", "--judge", "exact",
            "--limit", "30", "--output", str(out), "--no-progress"]
    first = start(*args)
    deadline = time.time() + 60
    while not (out / "predictions.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = start(*args)  # e.g. a retried job, or the same command in another terminal
    finish(first)
    _, err = finish(second)
    assert f"note: another harness process (pid {first.pid}) is using {out}; waiting for it to finish" in err
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 30


def test_a_holder_stopped_before_writing_anything_leaves_the_waiters_taking_turns(tmp_path):
    """The first process, stopped while its model loads, removes the run folder it made, lock file included: the
    one waiting for it and one started afterwards both went on, generating the same samples at once."""
    import signal

    out = tmp_path / "runs" / "run"
    args = ["run", "--model", "slow-echo", "--model-args", "delay=0.05,load_delay=3", "--task", "phantom-vqa",
            "--judge", "exact", "--limit", "30", "--output", str(out), "--no-progress"]

    def started(name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with open(log, "w") as fh:
            return subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=subprocess.DEVNULL, stderr=fh,
                                    text=True), log

    def wait_for(check, what: str) -> None:
        deadline = time.time() + 120
        while not check():
            assert time.time() < deadline, what
            time.sleep(0.02)

    first, _ = started("first")
    wait_for(lambda: (out / ".harness.lock").exists() and (out / ".harness.lock").read_text() == str(first.pid),
             "the first process takes the lock")
    second, second_log = started("second")
    wait_for(lambda: "waiting for it to finish" in second_log.read_text(), "the second one waits")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143
    third, third_log = started("third")
    assert second.wait(timeout=300) == 0, second_log.read_text()
    assert third.wait(timeout=300) == 0, third_log.read_text()
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 30


def test_two_judges_scoring_one_run_at_once_both_stay(tmp_path):
    out = tmp_path / "run"
    finish(start("run", "--model", "slow-echo", "--model-args", "delay=0", "--task", "phantom-vqa", "--judge",
                 "exact", "--limit", "20", "--output", str(out), "--no-progress"))
    scorers = [start("score", str(out), "--judge", f"exact:{c}") for c in ("llava-med", "multimedeval", "pefomed")]
    for proc in scorers:
        finish(proc)
    results = json.loads((out / "results.json").read_text())
    assert sorted(j["convention"] for j in results["judges"]) == ["llava-med", "multimedeval", "pefomed"]
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert all(len(row["judges"]) == 3 for row in rows)


def test_publishes_into_one_leaderboard_at_once_keep_every_row(tmp_path):
    runs = []
    for model_answer in ("yes", "no", "left"):
        out = tmp_path / f"run-{model_answer}"
        finish(start("run", "--model", "slow-echo", "--model-args", f"delay=0,label={model_answer}", "--task",
                     "phantom-vqa", "--judge", "exact", "--limit", "10", "--output", str(out), "--no-progress"))
        runs.append(out)
    board = tmp_path / "lb" / "leaderboard.json"
    publishers = [start("publish", str(run), "-o", str(board)) for run in runs]
    for proc in publishers:
        finish(proc)
    rows = json.loads(board.read_text())["rows"]
    assert len({r["provenance"]["run_id"] for r in rows}) == 3


def test_a_leaderboard_reached_through_a_link_is_written_where_it_is(tmp_path):
    """The link was replaced by a plain file (the real board missed the row) and locked beside the link, so a
    publish through it and one to the real path did not take turns."""
    out = tmp_path / "run"
    finish(start("run", "--model", "slow-echo", "--model-args", "delay=0", "--task", "phantom-vqa", "--judge",
                 "exact", "--limit", "4", "--output", str(out), "--no-progress"))
    real = tmp_path / "boards" / "lb.json"
    real.parent.mkdir()
    link = tmp_path / "lb.json"
    link.symlink_to(real)
    finish(start("publish", str(out), "-o", str(link)))
    assert link.is_symlink() and len(json.loads(real.read_text())["rows"]) == 1
    assert (real.parent / ".lb.json.lock").exists() and not (tmp_path / ".lb.json.lock").exists()


def test_atomic_writes_keep_the_file_mode(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"a": 1})
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    path.chmod(0o640)
    atomic_write_json(path, {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and json.loads(path.read_text()) == {"a": 2}


def test_temporary_files_of_a_killed_write_are_removed_by_the_next_command(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", "slow-echo", "--model-args", "delay=0", "--task", "phantom-vqa", "--judge", "exact",
            "--limit", "6", "--output", str(out), "--no-progress"]
    finish(start(*args))
    stray = out / ".results.json.k3j4h5.tmp"  # what SIGKILL during an atomic write leaves
    stray.write_text('{"half": ')
    board = tmp_path / "lb" / "leaderboard.json"
    other = tmp_path / "lb" / ".notes.txt.tmp"  # not ours: a leaderboard folder may hold other files
    other.parent.mkdir()
    other.write_text("keep")
    (tmp_path / "lb" / ".leaderboard.json.x1y2.tmp").write_text("{")
    finish(start(*args))
    finish(start("publish", str(out), "-o", str(board)))
    assert not stray.exists() and not (tmp_path / "lb" / ".leaderboard.json.x1y2.tmp").exists()
    assert other.read_text() == "keep"
