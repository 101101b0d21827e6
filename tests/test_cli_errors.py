"""User mistakes give one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--model", "prio", "--task", "phantom-vqa"], "unknown model 'prio'. Did you mean 'prior'?"),
        (["run", "--model", "prior", "--task", "slak"], "unknown task 'slak'. Did you mean 'slake'?"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exactt"], "Did you mean 'exact'?"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--convention", "nope"],
         "its conventions: pefomed, llava-med, multimedeval"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--prompt", "nope"], "no prompt variant 'nope'"),
        (["run", "--model", "prior", "--task", "slake", "--data-dir", "/nonexistent/slake"], "/nonexistent/slake"),
        (["run", "--model", "prior", "--task", "phantom-vqa", "--model-args", "bogus"], "expected KEY=VALUE"),
        (["score", "/nonexistent/preds.jsonl"], "does not exist"),
    ],
)
def test_user_mistakes_are_one_line(args, expected):
    proc = cli(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_missing_data_dir_files_are_listed(tmp_path):
    (tmp_path / "unrelated.txt").write_text("x")
    proc = cli("run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "VQA_RAD Dataset Public.json" in proc.stderr
    assert "Traceback" not in proc.stderr
