"""`harness finetune` stopped by real signals: SIGINT (Ctrl-C) and SIGTERM (Slurm, `docker stop`) during training
checkpoint the step just completed, and SIGKILL while the output is written leaves a folder the same command
finishes. In every case the rerun ends with the adapter an uninterrupted run writes, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import CTRL_C_AS_IN_A_TERMINAL

REPO = Path(__file__).resolve().parents[1]
# 8 steps; --save-every 1000 means no checkpoint but the last one unless the stop writes one
COMMON = ("finetune", "--model", "tiny-vlm", "--model-args", "base=random", "--task", "phantom-vqa", "--limit", "16",
          "--batch-size", "2", "--epochs", "1", "--dropout", "0.1", "--save-every", "1000")
TRAINING = "finetune phantom-vqa"  # the progress bar's description once the training loop runs


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "HARNESS_CACHE_DIR": str(cache)}


def harness(out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *COMMON, "--out", str(out), "--no-progress", *extra],
                          capture_output=True, text=True, cwd=REPO, env=environment(cache), timeout=600)




def start(out: Path, cache: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as err:  # the progress bar goes to stderr: it says when training has started
        return subprocess.Popen([sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, *COMMON, "--out", str(out)],
                                cwd=REPO, env=environment(cache), stdout=subprocess.DEVNULL, stderr=err)


def wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the fine-tune ended before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.005)


def adapter_bytes(folder: Path) -> bytes:
    return (folder / "adapter_model.safetensors").read_bytes()


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_vlm) -> Path:
    return tmp_path_factory.getbasetemp() / "harness-cache"  # where the tiny_vlm fixture built the model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("whole") / "adapter"
    result = harness(out, cache)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_saves_the_steps_done(signum, uninterrupted, cache, tmp_path):
    out, log = tmp_path / "stopped", tmp_path / "stderr.log"
    proc = start(out, cache, log)
    wait_for(proc, lambda: TRAINING in log.read_text(errors="replace"), "the training loop started")
    proc.send_signal(signum)
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert proc.wait(timeout=300) == (143 if signum == signal.SIGTERM else 130)
    printed = log.read_text(errors="replace")
    assert f"{how}: finished work is saved; run the same command again to continue" in printed
    assert not (out / "manifest.json").exists()
    steps = checkpoint_steps(out)
    assert len(steps) == 1 and 0 < steps[0] < 8, steps  # the step in progress was finished and checkpointed

    rerun = harness(out, cache)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed at step(s): {steps[0]}" in rerun.stdout
    assert f"resuming the fine-tune in {out}: from its checkpoint at step {steps[0]} of 8" in rerun.stderr
    whole, resumed = (json.loads((d / "manifest.json").read_text()) for d in (uninterrupted, out))
    assert [c["step"] for c in resumed["loss_curve"]] == list(range(1, 9))
    assert [(c["loss"], c["lr"]) for c in resumed["loss_curve"]] == [(c["loss"], c["lr"]) for c in
                                                                    whole["loss_curve"]]
    assert adapter_bytes(out) == adapter_bytes(uninterrupted)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())


def test_a_kill_while_the_output_is_written_is_finished_by_the_rerun(uninterrupted, cache, tmp_path):
    out, log = tmp_path / "killed", tmp_path / "stderr.log"
    proc = start(out, cache, log)
    wait_for(proc, lambda: any(out.glob(".output.*")), "the output was written")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    rerun = harness(out, cache)
    assert rerun.returncode == 0, rerun.stderr
    assert "is not a fine-tune output folder" not in rerun.stderr
    assert adapter_bytes(out) == adapter_bytes(uninterrupted)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())
    again = harness(out, cache)
    assert again.returncode == 0 and "already trained" in again.stdout


def test_the_same_fine_tune_started_twice_runs_once(cache, tmp_path):
    """Two processes on one --out deleted each other's checkpoints being written (one died, or printed a
    traceback): the second waits for the first, then finds it trained; nothing of the lock is left behind."""
    out = tmp_path / "adapters" / "twice"
    command = [sys.executable, "-m", "harness", *COMMON, "--epochs", "60", "--out", str(out), "--no-progress"]
    log = tmp_path / "first.log"
    with open(log, "wb") as err:
        first = subprocess.Popen([*command[:-1]], cwd=REPO, env=environment(cache), stdout=subprocess.DEVNULL,
                                 stderr=err)  # with its progress bar: it says when training has started
    wait_for(first, lambda: TRAINING in log.read_text(errors="replace"), "training started")
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment(cache), timeout=600)
    assert first.wait(timeout=600) == 0
    assert second.returncode == 0, second.stderr
    assert f"note: another harness process (pid {first.pid}) is using --out {out}; waiting" in second.stderr
    assert "already trained" in second.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["twice"]  # the lock beside --out is gone
