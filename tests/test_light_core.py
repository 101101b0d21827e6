"""The light core (no torch, transformers or peft installed): what it runs works, what needs an extra says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
# Runs the CLI in a Python where the hf extra's modules cannot be imported (as after `pip install -e .`).
WITHOUT_HF = """
import sys
for name in ("torch", "transformers", "peft", "accelerate"):
    sys.modules[name] = None
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def harness_without_hf(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", WITHOUT_HF, *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path)


def assert_names_the_hf_extra(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    # run outside the checkout (cwd is tmp_path): the hint names the checkout, since `.` would be another folder
    assert lines[-1].startswith("error: this needs 'torch', from the hf extra: pip install torch==2.13.0 && "
                                f"pip install -e '{CHECKOUT}[hf]'"), proc.stderr


def test_model_runs_needing_torch_name_the_extra(tmp_path):
    for model in ("tiny-vlm", "llava-1.5-7b"):
        proc = harness_without_hf(tmp_path, "run", "--model", model, "--task", "phantom-vqa", "--limit", "2",
                                  "--output", str(tmp_path / model), "--no-progress")
        assert_names_the_hf_extra(proc)


def test_finetune_and_convert_name_the_extra(tmp_path):
    proc = harness_without_hf(tmp_path, "finetune", "--model", "tiny-vlm", "--task", "phantom-vqa",
                              "--out", str(tmp_path / "adapter"), "--max-steps", "1")
    assert_names_the_hf_extra(proc)
    (tmp_path / "ckpt.pth").write_bytes(b"not a checkpoint")
    proc = harness_without_hf(tmp_path, "convert", "pefomed-checkpoint", str(tmp_path / "ckpt.pth"),
                              "--out", str(tmp_path / "converted"))
    assert_names_the_hf_extra(proc)


def test_an_llm_judge_without_the_llm_extra_names_it_before_asking_for_a_key(tmp_path):
    script = WITHOUT_HF.replace('("torch", "transformers", "peft", "accelerate")', '("openai", "anthropic")')
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for model in ("gpt-4o", "claude"):
        proc = subprocess.run([sys.executable, "-c", script, "run", "--model", "prior", "--task", "phantom-vqa",
                               "--limit", "2", "--judge", "gpt4", "--judge-model", model, "--output",
                               str(tmp_path / model), "--no-progress"], capture_output=True, text=True,
                              env={**env, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        sdk = "anthropic" if model == "claude" else "openai"
        assert proc.stderr.strip().splitlines()[-1] == (f"error: this needs '{sdk}', from the llm extra: "
                                                        f"pip install -e '{CHECKOUT}[llm]'"), proc.stderr


def test_prior_baseline_and_exact_judge_run_without_torch(tmp_path):
    proc = harness_without_hf(tmp_path, "run", "--model", "prior", "--task", "phantom-vqa", "--limit", "20",
                              "--judge", "exact", "--output", str(tmp_path / "prior"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "prior").rglob("results.json"))


def test_a_missing_submodule_of_an_installed_package_is_not_called_a_missing_extra():
    from harness.extras import missing_extra_message

    pytest.importorskip("torch")
    assert missing_extra_message("torch.nn.no_such_module") is None  # a bug or a version mismatch: traceback
    assert missing_extra_message("numpy") is None  # not an optional extra of ours


def test_the_install_hint_names_the_checkout_unless_run_inside_it(tmp_path, monkeypatch):
    """`pip install -e '.[lexical]'` run in a plugin's folder installs that plugin, not the harness's extra."""
    from harness.extras import install_hint

    monkeypatch.chdir(CHECKOUT)
    assert install_hint("lexical") == "pip install -e '.[lexical]'"
    monkeypatch.chdir(tmp_path)
    assert install_hint("lexical") == f"pip install -e '{CHECKOUT}[lexical]'"
    assert install_hint("vllm").startswith(f"pip install -e '{CHECKOUT}[vllm]' on a GPU machine")

