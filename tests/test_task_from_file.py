"""`--task path/to/my-task.yaml`: a task of one's own runs without a plugin to register it (a researcher's first
try was a file path, answered with "unknown task"); a file that reuses a registered task's id, or a path that is no
file, is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

TASKS_DIR = Path(str(resources.files("harness.tasks")))


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _own_copy(folder: Path, new_id: str) -> Path:
    text = (TASKS_DIR / "phantom-vqa.yaml").read_text(encoding="utf-8")
    lines = [f"id: {new_id}" if line.startswith("id: ") else line for line in text.splitlines()
             if not line.startswith("aliases:")]
    path = folder / "my-task.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_task_yaml_given_by_path_runs_and_is_recorded_under_its_own_id(tmp_path):
    _own_copy(tmp_path, "my-phantom")
    proc = harness("run", "--model", "prior", "--task", "my-task.yaml", "--judge", "exact", "--limit", "12",
                   "--output", "run", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"]["id"] == "my-phantom" and results["judges"][0]["metrics"]["accuracy"]["n"] == 12
    assert results["task"]["file"] == str((tmp_path / "my-task.yaml").resolve())
    proc = harness("score", "run", "--no-progress", cwd=tmp_path)  # no registry entry: the file's default judges
    assert proc.returncode == 0, proc.stderr
    assert [j["id"] for j in json.loads((tmp_path / "run" / "results.json").read_text())["judges"]] == ["exact"]
    (tmp_path / "my-task.yaml").rename(tmp_path / "moved.yaml")
    proc = harness("score", "run", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and f"note: task 'my-phantom' was read from {(tmp_path / 'my-task.yaml').resolve()}, " \
        "which is gone" in proc.stderr
    proc = harness("score", "run", "--judge", "exact:llava-med", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the run resumed from the file where it is now records it there; a file broken since still lets --judge score
    proc = harness("run", "--model", "prior", "--task", "moved.yaml", "--judge", "exact", "--limit", "12",
                   "--output", "run", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["task"]["file"] == str((tmp_path / "moved.yaml").resolve())
    (tmp_path / "moved.yaml").write_text("id: [unclosed\n")
    proc = harness("score", "run", "--judge", "exact", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0 and "which cannot be read now" in proc.stderr, proc.stderr


def test_a_task_file_reusing_a_registered_id_or_missing_is_one_line(tmp_path):
    (tmp_path / "copy.yaml").write_text((TASKS_DIR / "phantom-vqa.yaml").read_text(encoding="utf-8"))
    proc = harness("run", "--model", "prior", "--task", "copy.yaml", "--limit", "2", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: copy.yaml: its id or alias 'phantom-vqa' is a registered task's (")
    assert "give the file an id of its own" in proc.stderr
    proc = harness("run", "--model", "prior", "--task", "nope.yaml", "--limit", "2", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == (
        "error: --task nope.yaml: no such file (expected a task id, see harness list tasks, or a task YAML file)\n")
    bad = _own_copy(tmp_path, "my-phantom")
    bad.write_text(bad.read_text().replace("kind: vqa", "kind: vqq"))
    proc = harness("run", "--model", "prior", "--task", str(bad), "--limit", "2", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad}:") and "kind" in proc.stderr, proc.stderr
